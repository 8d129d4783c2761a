"""Data-parallel plumbing of the training loop: which rank this process is, wrapping the model in DDP or
FSDP2, gradient-sync toggling, the collectives the loop needs, and the SIGTERM stop flag.

Without ``torchrun`` (no process group) every function here is the single-process identity: the model is
not wrapped and a collective returns its input, so the loop reads the same on one process and on many.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` data-parallel processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Runtime:
    """Join the process group that ``torchrun`` describes in RANK/WORLD_SIZE/LOCAL_RANK, if any."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return Runtime(rank=0, world_size=1, device=torch.device("cuda" if cuda else "cpu"))
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Runtime(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


class StopSignal:
    """Turns SIGTERM (preemption, ``kill``, torchrun shutting down) into a flag the loop checks per step.

    Only the ranks that received the signal see the flag: check it through :func:`any_rank`, so that every
    rank leaves the loop at the same step (a rank that stops alone leaves the others hanging in the next
    collective).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def wrap(model: torch.nn.Module, *, strategy: Literal["ddp", "fsdp"], run: Runtime) -> torch.nn.Module:
    """DDP replicates the model and all-reduces gradients; FSDP2 shards parameters, gradients and
    optimizer state per decoder layer. A single process trains the bare model."""
    if not dist.is_initialized():
        return model
    if strategy == "fsdp":
        return shard(model)
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def wrap_frozen(model: torch.nn.Module, *, strategy: Literal["ddp", "fsdp"]) -> torch.nn.Module:
    """A frozen model used beside the trained one (the DPO reference): sharded like it under FSDP2, so it
    fits wherever the policy does; under DDP or in one process every rank keeps a whole copy."""
    if strategy == "fsdp" and dist.is_initialized():
        shard(model)
    return model


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 in place: each decoder layer (the ``_no_split_modules`` of the Hugging Face model inside) is a
    unit, then the root."""
    layer_types = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    for module in model.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module)
    fully_shard(model)
    return model


def reshard(model: torch.nn.Module) -> None:
    """Shard FSDP2 parameters again after forwards without a backward (no-op otherwise): FSDP2 keeps the
    root's parameters gathered after a forward, expecting the backward to release them."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def set_gradient_sync(model: torch.nn.Module, *, enabled: bool) -> None:
    """Gradients are reduced across ranks only on the last micro-step of a window; earlier micro-steps
    accumulate locally, which saves ``grad_accum - 1`` reductions per step."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = enabled
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def clip_grad_norm(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip to ``max_norm`` (no clipping when None) and return the gradient norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor sharded like the gradients
        norm = norm.full_tensor()
    return float(norm)


def all_sum(value: int, run: Runtime) -> int:
    """``value`` summed over all ranks."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(value, device=run.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return int(tensor)


def any_rank(flag: bool, run: Runtime) -> bool:
    """Whether ``flag`` is set on any rank."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor(int(flag), device=run.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point value of ``tensors`` is finite (of a DTensor: this rank's shard, so
    combine ranks with :func:`any_rank`)."""
    for tensor in tensors:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            return False
    return True


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_initialized():
        dist.barrier()


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
