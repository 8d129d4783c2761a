"""Step checkpoints that give an exact resume and double as Hugging Face model or peft adapter folders.

Layout under ``OUT/checkpoints``::

    step-000100/            full fine-tune: model weights (safetensors) + config, AutoModelForCausalLM loads it;
                            LoRA: the peft adapter (adapter_model.safetensors + adapter_config.json naming
                            the base model), PeftModel.from_pretrained(base, folder) loads it
        tokenizer files
        README.md           model card (align_train.model_card)
        trainer_state.pt    step, optimizer (by the model's parameter names), scheduler, and per rank:
                            RNG states + data cursor + tokens trained on
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
from collections.abc import Callable
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

from align_train.distributed import barrier, gather
from align_train.model_card import ModelFacts, write_model_card
from align_train.modeling.head import LabelledLM
from align_train.run_folder import RUN_CONFIG, STATE_FILE, checkpoint_root, damaged, latest_checkpoint
from schemas import ConfigError

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_TRAINABLE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
LABELLED_PREFIX = "lm."
"""What :class:`~align_train.modeling.head.LabelledLM` adds before the names of the model's parameters."""


def resume_point(out: Path, *, resume: bool, holdout: float) -> Path | None:
    """The checkpoint the run in ``out`` continues from (None for a fresh run), refusing settings that cannot
    continue it: ``resume`` false, or another ``holdout`` than the one it trained with."""
    latest = latest_checkpoint(out)
    if latest is not None and not resume:
        msg = f"out {out} already holds checkpoint {latest.name}: set resume=true to continue it or pick a new out"
        raise ConfigError(msg)
    saved = out / RUN_CONFIG
    if latest is not None:
        # A run without config.yaml predates the held-out split: it trained on every group.
        settings = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}) if saved.is_file() else {}
        before = settings.get("holdout", 0.0)
        if before != holdout:
            msg = (
                f"out {out} was trained with holdout={before}, this run has holdout={holdout}: "
                f"groups already trained on would be evaluated; keep holdout={before} or pick a new out"
            )
            raise ConfigError(msg)
    return latest


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
) -> Path:
    """Write the checkpoint of ``step``; collective under torch.distributed (every rank calls it, rank 0 writes).

    ``model`` is the wrapped training model (DDP, FSDP2 or plain); ``data_state`` is this rank's data cursor
    and ``tokens`` the tokens it trained on so far; ``card`` the run's model card, written for this step.
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
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "ranks": ranks,
        }
        torch.save(state, tmp / STATE_FILE)
        write_model_card(tmp, card.at(step=step, tokens=sum(r["tokens"] for r in ranks)))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = checkpoint_root(out) / "latest"
        pointer.with_suffix(".tmp").write_text(final.name, encoding="utf-8")
        os.replace(pointer.with_suffix(".tmp"), pointer)
    barrier()
    return final


def load_trainer_state(path: Path, *, world_size: int) -> dict[str, Any]:
    """Read ``trainer_state.pt`` of a checkpoint, refusing one that is damaged or was written by a
    different number of ranks."""
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise damaged(path, f"{STATE_FILE} cannot be read ({' '.join(str(e).split())[:200]})") from e
    if (
        not isinstance(state, dict)
        or not {"step", "world_size", "optimizer", "scheduler", "ranks"} <= state.keys()
    ):
        raise damaged(path, f"{STATE_FILE} does not hold a trainer state")
    if state["world_size"] != world_size:
        msg = (
            f"checkpoint {path} was written by {state['world_size']} ranks, this run has {world_size}: "
            "the data cursor is per rank, so resume with the same number of processes"
        )
        raise ConfigError(msg)
    return state


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
