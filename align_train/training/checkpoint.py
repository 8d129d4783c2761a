"""Step checkpoints that give an exact resume and double as Hugging Face model or peft adapter folders.

Layout under ``OUT/checkpoints``::

    step-000100/            full fine-tune: model weights (safetensors) + config, AutoModelForCausalLM loads it;
                            LoRA: the peft adapter (adapter_model.safetensors + adapter_config.json naming
                            the base model), PeftModel.from_pretrained(base, folder) loads it
        tokenizer files
        README.md           model card (align_train.model_card)
        trainer_state.pt    step, corpus identity, optimizer (by the model's parameter names), scheduler,
                            and per rank: RNG states + data cursor + tokens trained on
        SHA256SUMS          sha256 of every file above but the card (``sha256sum -c`` format), checked
                            at resume
    latest                  text file naming the newest complete checkpoint

A LoRA checkpoint holds what training changed, never the frozen base (a few MB instead of the whole model
per save); :func:`align_train.modeling.model.export_merged` writes a merged model folder once, on request.

A checkpoint is written to a hidden temp folder and renamed when complete, then ``latest`` is replaced
atomically, so a run killed mid-save leaves the previous checkpoint intact. ``trainer_state.pt`` holds only
tensors, dicts, lists, tuples and scalars, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from transformers import PreTrainedTokenizerBase

from align_train.config import TrainConfig
from align_train.distributed import all_finite, barrier, gather
from align_train.model_card import ModelFacts, write_model_card
from align_train.modeling.head import LabelledLM
from align_train.run_folder import RUN_CONFIG, STATE_FILE, checkpoint_root, damaged, latest_checkpoint
from schemas import MANIFEST_FILE, ConfigError, sha256_file
from schemas.hub_card import CARD_FILE

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_TRAINABLE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
LABELLED_PREFIX = "lm."
"""What :class:`~align_train.modeling.head.LabelledLM` adds before the names of the model's parameters."""


def resume_point(out: Path, *, resume: bool, settings: dict[str, Any]) -> Path | None:
    """The checkpoint the run in ``out`` continues from (None for a fresh run), refusing settings that cannot
    continue it: ``resume`` false, or ``settings`` (the run's, as ``config.yaml`` holds them) that differ from
    the ones it trained with where they decide the data order or the optimisation."""
    latest = latest_checkpoint(out)
    if latest is not None and not resume:
        msg = f"out {out} already holds checkpoint {latest.name}: set resume=true to continue it or pick a new out"
        raise ConfigError(msg)
    if latest is not None:
        check_resumable(out, settings)
    return latest


def check_resumable(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a run with settings that decide its data order or its optimisation changed (all but
    :attr:`TrainConfig.RESUMABLE`), naming each: the checkpoint would continue another run than this one.

    The saved settings are the run's ``config.yaml``; a run without one predates it and trained on every
    group (``holdout`` 0). The corpus itself is compared by content when the trainer state is read
    (:func:`load_trainer_state`), so a moved corpus still resumes.
    """
    saved_file = out / RUN_CONFIG
    saved = (yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}) if saved_file.is_file() else {}
    saved.setdefault("holdout", 0.0)
    now = _flat(settings)
    changed = []
    for key, before in _flat(saved).items():
        if key.split(".")[0] in TrainConfig.RESUMABLE | {"shards"} or key not in now or before == now[key]:
            continue
        if (
            key == "model"
            and None not in (before, now[key])
            and Path(before).resolve() == Path(now[key]).resolve()
        ):
            continue  # the same folder, named from another working directory
        changed.append(f"{key}={before!r} (now {now[key]!r})")
    if changed:
        msg = (
            f"out {out} holds a run trained with other settings: {', '.join(changed)}; they decide its data "
            "order or its optimisation, so its checkpoint cannot continue this run: restore them, or pick a new out"
        )
        raise ConfigError(msg)


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: ``{"lora": {"r": 8}}`` → ``{"lora.r": 8}``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def corpus_identity(shards: Path) -> str:
    """What a run trains on, by content: the sha256 of the corpus's ``manifest.json``, which holds the
    sha256 of every shard (a corpus moved elsewhere keeps it; a rebuilt or another one does not)."""
    return sha256_file(shards / MANIFEST_FILE)


def save_checkpoint(
    out: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tokenizer: PreTrainedTokenizerBase,
    data_state: dict[str, Any],
    tokens: int,
    card: ModelFacts,
    corpus: str,
) -> Path:
    """Write the checkpoint of ``step``; collective under torch.distributed (every rank calls it, rank 0 writes).

    ``model`` is the wrapped training model (DDP, FSDP2 or plain); ``data_state`` is this rank's data cursor
    and ``tokens`` the tokens it trained on so far; ``card`` the run's model card, written for this step;
    ``corpus`` the :func:`corpus_identity` of what the run trains on. The folder's last file is
    ``SHA256SUMS`` (``sha256sum -c`` reads it), checked before a resume reads anything else.
    """
    # Full (unsharded) state dicts are gathered by every rank; only rank 0 keeps a copy on CPU. A LoRA
    # checkpoint needs the adapters only: the frozen base is never gathered.
    model_state = get_model_state_dict(model, options=_TRAINABLE if _is_peft(unwrap(model)) else _FULL)
    optimizer_state = _renamed(
        get_optimizer_state_dict(model, optimizer, options=_FULL), lambda n: n.removeprefix(LABELLED_PREFIX)
    )
    rank_state = {"rng": rng_state(), "data": data_state, "tokens": tokens}
    ranks = gather(rank_state)
    world_size = len(ranks)
    final = checkpoint_root(out) / f"step-{step:06d}"
    if not dist.is_initialized() or dist.get_rank() == 0:
        for stale in checkpoint_root(out).glob(".step-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale)
        tmp = final.with_name(f".{final.name}.tmp")
        tmp.mkdir(parents=True)
        _save_weights(unwrap(model), _unwrapped_names(model, model_state), tmp)
        tokenizer.save_pretrained(tmp)
        state = {
            "step": step,
            "world_size": world_size,
            "corpus": corpus,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "ranks": ranks,
        }
        torch.save(state, tmp / STATE_FILE)
        write_model_card(tmp, card.at(step=step, tokens=sum(r["tokens"] for r in ranks)))
        _write_checksums(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = checkpoint_root(out) / "latest"
        pointer.with_suffix(".tmp").write_text(final.name, encoding="utf-8")
        os.replace(pointer.with_suffix(".tmp"), pointer)
    barrier()
    return final


def load_trainer_state(path: Path, *, world_size: int, shards: Path | None = None) -> dict[str, Any]:
    """Read ``trainer_state.pt`` of a checkpoint once every file of it matches ``SHA256SUMS``, refusing one
    that is damaged, holds optimizer state that is not finite, was written by a different number of ranks,
    or (given ``shards``) trained on another corpus."""
    verify_checkpoint(path)
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise damaged(path, f"{STATE_FILE} cannot be read ({' '.join(str(e).split())[:200]})") from e
    if (
        not isinstance(state, dict)
        or not {"step", "world_size", "optimizer", "scheduler", "ranks"} <= state.keys()
    ):
        raise damaged(path, f"{STATE_FILE} does not hold a trainer state")
    if not all_finite(_tensors(state["optimizer"])):
        raise damaged(
            path, f"the optimizer state in {STATE_FILE} holds NaN or infinity (a run that diverged)"
        )
    if state["world_size"] != world_size:
        msg = (
            f"checkpoint {path} was written by {state['world_size']} ranks, this run has {world_size}: "
            "the data cursor is per rank, so resume with the same number of processes"
        )
        raise ConfigError(msg)
    if shards is not None and "corpus" in state and state["corpus"] != corpus_identity(shards):
        msg = (
            f"checkpoint {path} trained on another corpus than shards={shards} (its manifest.json differs): "
            "its data cursor means nothing there; resume with the corpus it trained on, or pick a new out"
        )
        raise ConfigError(msg)
    return state


CHECKSUMS = "SHA256SUMS"


def _write_checksums(folder: Path) -> None:
    """``SHA256SUMS`` of every file of a checkpoint folder, in ``sha256sum`` format. The model card is left
    out: ``align-train eval`` adds its results to the card of the checkpoint it scored, and the card is
    never read back at resume."""
    lines = [
        f"{sha256_file(f)}  {f.name}\n"
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name not in {CHECKSUMS, CARD_FILE}
    ]
    (folder / CHECKSUMS).write_text("".join(lines), encoding="utf-8")


def verify_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose files do not match its ``SHA256SUMS``. A checkpoint saved before there were
    checksums gets the zip CRCs of its ``trainer_state.pt`` checked instead (``torch.load`` does not)."""
    sums = path / CHECKSUMS
    if not sums.is_file():
        try:
            with zipfile.ZipFile(path / STATE_FILE) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as e:
            raise damaged(path, f"{STATE_FILE} is not a readable archive ({e})") from e
        if bad is not None:
            raise damaged(path, f"{STATE_FILE} fails its CRC check at {bad}")
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        expected, _, name = line.partition("  ")
        file = path / name
        if not file.is_file():
            raise damaged(path, f"{name}, listed in {CHECKSUMS}, is missing")
        if sha256_file(file) != expected:
            raise damaged(path, f"{name} does not match its sha256 in {CHECKSUMS}")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def restore(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    rank: int,
) -> dict[str, Any]:
    """Load optimizer, scheduler and this rank's RNG states; returns this rank's data cursor.

    Model weights are not here: they are loaded with the model (see
    ``align_train.modeling.model.load_policy``).
    """
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    saved = state["optimizer"]
    if isinstance(inner, LabelledLM):
        saved = _renamed(saved, lambda name: LABELLED_PREFIX + name)
    set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    # The schedule is this run's (max_steps may have grown since the save): the next step's rate follows it.
    for group, base_lr, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    mine = state["ranks"][rank]
    set_rng_state(mine["rng"])
    return mine["data"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face (or peft) model inside the training model: a DDP wrapper (FSDP2 shards in place) and
    the :class:`~align_train.modeling.head.LabelledLM` around it come off."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return inner.lm if isinstance(inner, LabelledLM) else inner


def _renamed(optimizer_state: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """A full optimizer state dict with its parameter names (state keys and groups' params) renamed."""
    if not optimizer_state:  # ranks other than 0 get an empty one (cpu_offload keeps it on rank 0 only)
        return optimizer_state
    return {
        "state": {rename(name): value for name, value in optimizer_state["state"].items()},
        "param_groups": [
            group | {"params": [rename(name) for name in group["params"]]}
            for group in optimizer_state["param_groups"]
        ],
    }


def _unwrapped_names(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` of the training model keyed as the state dict of :func:`unwrap` ``(model)``."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, LabelledLM):
        return state_dict
    return {name.removeprefix(LABELLED_PREFIX): tensor for name, tensor in state_dict.items()}


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and (when present) CUDA generator states, as weights_only-safe values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _save_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """A full model as safetensors; for a peft model, its adapter (``state_dict`` holds its weights)."""
    if _is_peft(model):
        model.save_pretrained(folder, state_dict=state_dict)
    else:
        model.save_pretrained(folder, state_dict=_without_tied_copies(model, state_dict))


def _without_tied_copies(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Drop the second name of a shared parameter (``lm_head.weight`` tied to the input embeddings).

    A gathered FSDP state dict holds a separate copy for each name, which ``save_pretrained`` would store.
    """
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            tied.add(name)
    return {name: tensor for name, tensor in state_dict.items() if name not in tied}
