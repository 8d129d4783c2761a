"""Where things are in a training run's folder: lookups only, for training, evaluation and export alike.

Layout of ``OUT`` (written by :mod:`align_train.training.train` and :mod:`align_train.training.checkpoint`)::

    config.yaml             the run's settings (RUN_CONFIG)
    checkpoints/
        step-000100/        a checkpoint: model or adapter folder + trainer_state.pt (STATE_FILE)
        latest              text file naming the newest complete checkpoint

Reading a run needs none of the training code: evaluation and ``align-train export`` find a run's model
here without importing torch's checkpointing or the loop.
"""

from __future__ import annotations

from pathlib import Path

from schemas import ConfigError, DataError

RUN_CONFIG = "config.yaml"
STATE_FILE = "trainer_state.pt"


def checkpoint_root(out: Path) -> Path:
    return out / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint ``latest`` points to, or None when the run has none yet."""
    pointer = checkpoint_root(out) / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    if not (path / STATE_FILE).is_file():
        msg = f"{pointer} names {path}, which is not a complete checkpoint; point it at one that is"
        raise ConfigError(msg)
    return path


def resolve_model(model: Path | None) -> Path | None:
    """A training run folder stands for its latest checkpoint; any other folder for itself."""
    if model is not None and (checkpoint_root(model) / "latest").is_file():
        return latest_checkpoint(model)
    return model


def training_run(model: Path | None) -> Path | None:
    """The training run folder ``model`` is, or is a checkpoint of (it holds ``config.yaml``), if any."""
    if model is None:
        return None
    candidates = [model, model.parent.parent] if model.parent.name == "checkpoints" else [model]
    return next((run for run in candidates if (run / RUN_CONFIG).is_file()), None)


def damaged(checkpoint: Path, problem: str) -> DataError:
    """The error for a checkpoint that cannot be loaded: which one, and how to resume from the one before."""
    pointer = checkpoint.parent / "latest"
    earlier = sorted(
        p.name
        for p in checkpoint.parent.glob("step-*")
        if p.name < checkpoint.name and (p / STATE_FILE).is_file()
    )
    remedy = (
        f"to resume from the one before it, write its name into {pointer} (echo {earlier[-1]} > {pointer})"
        if earlier
        else "there is no earlier checkpoint: start over with another out"
    )
    return DataError(f"checkpoint {checkpoint} is damaged, {problem}: {remedy}")
