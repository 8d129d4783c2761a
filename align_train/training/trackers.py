"""Experiment trackers a run reports to besides ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

``report_to: [tensorboard, wandb, mlflow]`` in the training config picks them; each is an optional
dependency (``pip install 'polyalign[tracking]'``), imported only when asked for, and a missing one stops
the run at start-up naming what to install. Rank 0 reports; every record of ``metrics.jsonl`` becomes one
step of scalars (nested counts flattened: ``langs/de``, ``collator/truncated``).

Where each writes, and how a resumed run continues its own record:

- TensorBoard: ``OUT/tensorboard``; on resume the events after the checkpoint's step are purged.
- Weights & Biases: the project ``tracking_project`` (``WANDB_PROJECT`` wins), run name = ``OUT``'s
  folder name; the run id is kept in ``OUT/tracking.json`` and resumed. ``WANDB_MODE=offline`` writes
  under ``OUT/wandb`` without a network (``wandb sync`` uploads it later).
- MLflow: ``MLFLOW_TRACKING_URI`` when set (a server, or ``sqlite:///...`` with full ``mlflow``), else a
  file store in ``OUT/mlruns`` (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it, set then); experiment
  ``tracking_project``, the run id kept in ``OUT/tracking.json`` and resumed. The config is logged as
  parameters; nested names use ``.`` (``langs.de``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from schemas import import_optional

TRACKING_FILE = "tracking.json"


class Tracker(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record, nested mappings flattened to ``outer/inner`` names."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= scalars(value, prefix=f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


class TensorBoardTracker:
    def __init__(self, out: Path, *, start_step: int) -> None:
        # torch.utils.tensorboard ships with torch but needs the tensorboard package to import.
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run purges what the interrupted one wrote after the checkpoint.
        self.writer = SummaryWriter(
            str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, out: Path, *, project: str, settings: Mapping[str, Any]) -> None:
        wandb = _require("wandb", "wandb")
        run_id = _run_ids(out).get("wandb") or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", project),
            name=out.name,
            id=run_id,
            resume="allow",
            dir=str(out),
            config=dict(settings),
        )
        _save_run_id(out, "wandb", self.run.id)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, out: Path, *, project: str, settings: Mapping[str, Any]) -> None:
        mlflow = _require("mlflow", "mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store only on request; a run folder is where this one belongs.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        run_id = _run_ids(out).get("mlflow")
        if run_id is None:
            experiment = self.client.get_experiment_by_name(project)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
            run_id = self.client.create_run(experiment_id, run_name=out.name).info.run_id
            params = _flat_params(settings)
            self.client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
            _save_run_id(out, "mlflow", run_id)
        self.run_id = run_id
        self.entities = mlflow.entities

    def log(self, scalars: dict[str, float], step: int) -> None:
        # '/' would make a file store's ``nll`` both a metric file and the folder of ``nll/de``.
        now = int(time.time() * 1000)
        metrics = [
            self.entities.Metric(name.replace("/", "."), value, now, step) for name, value in scalars.items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_trackers(
    names: Sequence[str], *, out: Path, project: str, settings: Mapping[str, Any], start_step: int
) -> list[Tracker]:
    """The trackers ``names`` (``report_to``) of the run in ``out``, opened (on rank 0 only: the caller
    decides). ``project`` is ``tracking_project``; ``settings``, the run's config, are what W&B and MLflow
    record with it; a run resumed at ``start_step`` continues its own record."""
    opening: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(out, start_step=start_step),
        "wandb": lambda: WandbTracker(out, project=project, settings=settings),
        "mlflow": lambda: MlflowTracker(out, project=project, settings=settings),
    }
    return [opening[name]() for name in names]


def _require(module: str, name: str) -> Any:
    return import_optional(
        module,
        feature=f"report_to={name}",
        install=f"pip install 'polyalign[tracking]' (or {module}), or remove {name} from report_to",
    )


def _run_ids(out: Path) -> dict[str, str]:
    path = out / TRACKING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _save_run_id(out: Path, tracker: str, run_id: str) -> None:
    ids = _run_ids(out) | {tracker: run_id}
    (out / TRACKING_FILE).write_text(json.dumps(ids, indent=2), encoding="utf-8")


def _flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Config values as MLflow parameters: nested sections as ``section.key``, values as text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= _flat_params(value, prefix=f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out
