"""The training loop of ``align-train``: setup → loop → cleanup, readable top to bottom.

One process trains alone; under ``torchrun`` every process is a data-parallel rank (DDP or FSDP2) that
reads its own disjoint groups of the shards. Helpers below the loop hold the distributed plumbing and
logging so that :func:`train` shows only what happens in a step.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import numpy as np
import pyarrow.compute as pc
import pyarrow.feather as feather
import torch
import torch.distributed as dist
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.distributed.fsdp import FSDPModule, fully_shard
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as hf_logging

from align_train.batch import ParallelBatch, TokenBatch
from align_train.checkpoint import latest_checkpoint, load_trainer_state, restore, save_checkpoint
from align_train.collator import Collator
from align_train.config import PREFERENCE_OBJECTIVES, RUN_CONFIG, TrainConfig, save_yaml
from align_train.losses import OBJECTIVES, Objective, alignment_loss, sequence_logps
from align_train.model import Reference, load_policy, load_reference, load_tokenizer, packing_is_exact
from align_train.sampler import ParallelBatchSampler
from align_train.shard_stream import ShardStream
from schemas import ConfigError


def train(cfg: TrainConfig) -> Path:
    """Train as configured and return the final checkpoint.

    SIGTERM makes every rank finish its step, save a checkpoint and return normally.
    """
    # ---- setup ------------------------------------------------------------------------------------
    run = init_distributed()
    stop = StopSignal()
    try:
        hf_logging.disable_progress_bar()
        resume_from = _resume_point(cfg)
        if run.is_main:  # what the run trains on, for its evaluation (held-out groups) and for audits
            save_yaml(cfg, cfg.out / RUN_CONFIG)
        autocast = _autocast(cfg, run)
        # Same seed on every rank while building the model: FSDP2 does not broadcast initial weights.
        _seed_all(cfg.seed)
        tokenizer = load_tokenizer(cfg.model)
        policy = load_policy(cfg, tokenizer, checkpoint=resume_from).to(run.device).train()
        objective = OBJECTIVES[cfg.objective]
        reference = _reference(cfg, tokenizer, policy, objective, run)
        pack = _packing(cfg, policy, run)  # on the unsharded model: a no-grad forward through FSDP2 breaks it
        model = _distribute(policy, cfg, run)
        sampler = _sampler(cfg, run)
        collator = Collator(tokenizer, objective=cfg.objective, max_length=cfg.max_length, pack=pack)
        total_steps = _total_steps(cfg, sampler)
        optimizer = _optimizer(model, cfg)
        scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
        forward = partial(
            _forward, model, reference, objective, cfg=cfg, run=run, anchor_lang=sampler.anchor_lang
        )
        save = partial(
            save_checkpoint,
            cfg.out,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            tokenizer=tokenizer,
        )
        step = 0
        if resume_from is not None:
            state = load_trainer_state(resume_from, world_size=run.world_size)
            cursor = restore(state, model=model, optimizer=optimizer, scheduler=scheduler, rank=run.rank)
            sampler.load_state_dict(cursor)
            step = state["step"]
        else:
            # Each rank its own random stream (dropout): identical masks on all ranks would waste data.
            _seed_all(cfg.seed + run.rank)
        logger = MetricsLogger(
            cfg, run, sampler=sampler, collator=collator, start_step=step, total_steps=total_steps
        )
        batches = _endless(sampler)

        # ---- loop -------------------------------------------------------------------------------------
        while step < total_steps:
            lr = optimizer.param_groups[0]["lr"]
            window = [next(batches) for _ in range(cfg.grad_accum)]
            micro_batches = [collator(batch).to(run.device) for batch in window]
            # Normalise by the loss units (tokens or pairs) of the whole window on all ranks, so every
            # unit weighs the same however the window is split into micro-batches and ranks.
            count = max(1, _all_sum(sum(objective.count_units(b) for b in micro_batches), run))
            losses, metrics = [], []
            for micro, batch in enumerate(micro_batches):
                _sync_gradients(model, enabled=micro == cfg.grad_accum - 1)
                with autocast:
                    out = forward(batch, count=count)
                out.loss.backward()
                losses.append(out.objective)
                metrics.append(out.metrics)
            grad_norm = _clip(model, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            logger.log(
                step,
                loss=sum(losses),
                lr=lr,
                grad_norm=grad_norm,
                window=window,
                micro_batches=micro_batches,
                metrics=metrics,
            )
            # Every rank must leave the loop at the same step, or the next collective hangs forever.
            if _any_rank(stop.requested, run):
                break
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                save(step=step, data_state=sampler.state_dict())

        # ---- cleanup ----------------------------------------------------------------------------------
        checkpoint = save(step=step, data_state=sampler.state_dict())
        logger.close()
        return checkpoint
    finally:
        stop.uninstall()
        if dist.is_initialized():
            dist.destroy_process_group()


class MicroStep(NamedTuple):
    """One micro-batch: ``loss`` to backpropagate, ``objective`` its share of the window's objective value
    (what is logged), and the objective's metrics."""

    loss: torch.Tensor
    objective: float
    metrics: dict[str, float]


def _forward(
    model: torch.nn.Module,
    reference: Reference | None,
    objective: Objective,
    batch: TokenBatch,
    cfg: TrainConfig,
    *,
    count: int,
    run: Runtime,
    anchor_lang: str,
) -> MicroStep:
    inputs = batch.model_inputs()
    out = model(**inputs, output_hidden_states=cfg.alignment_weight > 0)
    ref_logps = None
    if reference is not None:
        ref_logits = reference(**inputs).logits
        ref_logps = sequence_logps(ref_logits, batch.labels, batch.seq_ids, batch.num_seqs)
    result = objective.compute(out.logits, batch, reference=ref_logps, beta=cfg.beta, count=count)
    # DDP and FSDP average gradients over ranks, but `count` already spans all ranks: undo the average.
    loss = result.loss * run.world_size
    metrics = dict(result.metrics)
    if cfg.alignment_weight > 0:
        align = alignment_loss(out.hidden_states[-1], batch, anchor_lang=anchor_lang)
        loss = loss + cfg.alignment_weight * align.loss / cfg.grad_accum
        metrics |= align.metrics
    return MicroStep(loss=loss, objective=float(result.loss.detach()), metrics=metrics)


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


class StopSignal:
    """Turns SIGTERM (preemption, ``kill``, torchrun shutting down) into a flag the loop checks per step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _resume_point(cfg: TrainConfig) -> Path | None:
    latest = latest_checkpoint(cfg.out)
    if latest is not None and not cfg.resume:
        msg = f"out {cfg.out} already holds checkpoint {latest.name}: set resume=true to continue it or pick a new out"
        raise ConfigError(msg)
    saved = cfg.out / RUN_CONFIG
    if latest is not None:
        # A run without config.yaml predates the held-out split: it trained on every group.
        settings = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}) if saved.is_file() else {}
        before = settings.get("holdout", 0.0)
        if before != cfg.holdout:
            msg = (
                f"out {cfg.out} was trained with holdout={before}, this run has holdout={cfg.holdout}: "
                f"groups already trained on would be evaluated; keep holdout={before} or pick a new out"
            )
            raise ConfigError(msg)
    return latest


def _autocast(cfg: TrainConfig, run: Runtime) -> AbstractContextManager[Any]:
    """bf16 autocast on GPU (weights and optimizer state stay float32); plain float32 on CPU."""
    if cfg.dtype == "bf16" and run.device.type != "cuda":
        msg = f"dtype='bf16' needs a GPU, this process runs on {run.device}: use dtype='auto' or 'fp32'"
        raise ConfigError(msg)
    if cfg.dtype == "fp32" or run.device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reference(
    cfg: TrainConfig, tokenizer: Any, policy: torch.nn.Module, objective: Objective, run: Runtime
) -> Reference | None:
    if not objective.needs_reference:
        return None
    reference = load_reference(cfg, tokenizer, policy)
    if not reference.disable_adapters:
        reference.model.to(run.device)
        if cfg.dist == "fsdp" and dist.is_initialized():
            _fully_shard(reference.model)
    return reference


def _distribute(model: torch.nn.Module, cfg: TrainConfig, run: Runtime) -> torch.nn.Module:
    """DDP replicates the model and all-reduces gradients; FSDP2 shards parameters, gradients and
    optimizer state per decoder layer. A single process trains the bare model."""
    if not dist.is_initialized():
        return model
    if cfg.dist == "fsdp":
        return _fully_shard(model)
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _fully_shard(model: torch.nn.Module) -> torch.nn.Module:
    layer_types = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module)
    fully_shard(model)
    return model


def _sync_gradients(model: torch.nn.Module, *, enabled: bool) -> None:
    """Gradients are reduced across ranks only on the last micro-step of a window; earlier micro-steps
    accumulate locally, which saves ``grad_accum - 1`` reductions per step."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = enabled
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def _packing(cfg: TrainConfig, policy: torch.nn.Module, run: Runtime) -> bool:
    """Pack when asked and the model computes packed sequences exactly; ``auto`` falls back to padding."""
    if cfg.pack is False:
        return False
    if packing_is_exact(policy):
        return True
    if cfg.pack is True:
        msg = (
            "pack=true, but this model's attention ignores packed position_ids (sequences would attend to "
            "each other): use pack=auto or pack=false"
        )
        raise ConfigError(msg)
    if run.is_main:
        print("note: this model's attention does not support packed sequences; batches are padded")
    return False


def _sampler(cfg: TrainConfig, run: Runtime) -> ParallelBatchSampler:
    """This rank's batches; data problems found here are the user's to fix, so they are ConfigErrors."""
    try:
        stream = ShardStream(
            cfg.shards,
            rank=run.rank,
            world_size=run.world_size,
            seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer,
            langs=cfg.langs,
            split="train",
            holdout=cfg.holdout,
        )
        _check_kinds(cfg, stream)
        return ParallelBatchSampler(
            stream,
            policy=cfg.policy,
            groups_per_batch=cfg.groups_per_batch,
            anchor_lang=stream.manifest.anchor_lang,
            k=cfg.k,
            temperature=cfg.temperature,
            seed=cfg.seed,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _check_kinds(cfg: TrainConfig, stream: ShardStream) -> None:
    """DPO and ORPO need preference rows everywhere; finding out mid-run would waste the run."""
    if cfg.objective not in PREFERENCE_OBJECTIVES:
        return
    for shard in stream.manifest.shards:
        kinds = feather.read_table(cfg.shards / shard.file, columns=["kind"], memory_map=True)["kind"]
        others = sorted(set(pc.unique(kinds).to_pylist()) - {"preference"})
        if others:
            msg = (
                f"objective={cfg.objective!r} needs preference rows, but {shard.file} holds rows of kind "
                f"{', '.join(others)}: use objective='sft' or a preference corpus"
            )
            raise ValueError(msg)


def _total_steps(cfg: TrainConfig, sampler: ParallelBatchSampler) -> int:
    steps_per_epoch = len(sampler) // cfg.grad_accum
    if steps_per_epoch == 0:
        msg = (
            f"an epoch gives each rank {len(sampler)} batches of groups_per_batch={cfg.groups_per_batch}, "
            f"fewer than grad_accum={cfg.grad_accum}: lower groups_per_batch or grad_accum"
        )
        raise ConfigError(msg)
    return cfg.max_steps or cfg.epochs * steps_per_epoch


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norms and biases only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def _endless(sampler: ParallelBatchSampler) -> Iterator[ParallelBatch]:
    """Batches across epochs, starting from the sampler's (possibly restored) epoch and cursor."""
    epoch = sampler.state_dict()["epoch"]
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def _clip(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip to ``max_norm`` (no clipping when None) and return the gradient norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor sharded like the gradients
        norm = norm.full_tensor()
    return float(norm)


def _all_sum(value: int, run: Runtime) -> int:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(value, device=run.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return int(tensor)


def _any_rank(flag: bool, run: Runtime) -> bool:
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor(int(flag), device=run.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor)


class MetricsLogger:
    """Per-step records to ``OUT/metrics.jsonl`` (rank 0), a rich progress bar, optional TensorBoard, and
    per rank the groups each step trained on (``OUT/data/rank-N.jsonl``), so data order can be audited.

    Every rank calls :meth:`log` every step (it gathers from all ranks on logging steps). On resume, records
    past the checkpoint's step are dropped so the files read as one uninterrupted run.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run: Runtime,
        *,
        sampler: ParallelBatchSampler,
        collator: Collator,
        start_step: int,
        total_steps: int,
    ) -> None:
        self.run = run
        self.sampler = sampler
        self.collator = collator
        self.log_every = cfg.log_every
        self.total_steps = total_steps
        self.metrics_path = cfg.out / "metrics.jsonl"
        data_path = cfg.out / "data" / f"rank-{run.rank}.jsonl"
        data_path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_jsonl(data_path, start_step)
        self.data_file = data_path.open("a", encoding="utf-8")
        self.tokens = 0
        self.since = time.perf_counter()
        self.collated = Counter[str]()
        self.writer = None
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not run.is_main,
        )
        if run.is_main:
            _truncate_jsonl(self.metrics_path, start_step)
            if cfg.tensorboard:
                self.writer = _summary_writer(cfg.out / "tensorboard")
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
        self.progress.start()

    def log(
        self,
        step: int,
        *,
        loss: float,
        lr: float,
        grad_norm: float,
        window: list[ParallelBatch],
        micro_batches: list[TokenBatch],
        metrics: list[dict[str, float]],
    ) -> None:
        group_ids = [g for batch in window for g in batch.group_ids]
        self.data_file.write(json.dumps({"step": step, "group_ids": group_ids}) + "\n")
        self.tokens += sum(int((b.seq_ids >= 0).sum()) for b in micro_batches)
        self.progress.advance(self.task)
        if step % self.log_every and step != self.total_steps:
            return
        self.data_file.flush()
        langs = Counter[str]()
        for batch in window:
            langs.update(batch.lang_counts)
        collated, self.collated = self.collator.stats - self.collated, self.collator.stats.copy()
        local = {
            "loss": loss,
            "tokens": self.tokens,
            "langs": langs,
            "metrics": metrics,
            "collated": collated,
        }
        ranks = _gather(local, self.run)
        if not self.run.is_main:
            self.tokens, self.since = 0, time.perf_counter()
            return
        elapsed = time.perf_counter() - self.since
        record: dict[str, Any] = {
            "step": step,
            "epoch": self.sampler.state_dict()["epoch"],
            "loss": sum(r["loss"] for r in ranks),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": sum(r["tokens"] for r in ranks) / max(elapsed, 1e-9),
            "langs": dict(sorted(sum((r["langs"] for r in ranks), Counter()).items())),
            "collator": dict(sum((r["collated"] for r in ranks), Counter())),
        }
        record |= _mean_metrics([m for r in ranks for m in r["metrics"]])
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.writer.add_scalar(key, value, step)
        info = f"loss {record['loss']:.4f}  lr {lr:.2e}  {record['tokens_per_s']:.0f} tok/s"
        self.progress.update(self.task, info=info)
        self.tokens, self.since = 0, time.perf_counter()

    def close(self) -> None:
        self.progress.stop()
        self.data_file.close()
        if self.writer is not None:
            self.writer.close()


def _summary_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        msg = "tensorboard=true needs the tensorboard package: pip install tensorboard, or set tensorboard=false"
        raise ConfigError(msg) from e
    return SummaryWriter(str(folder))


def _gather(value: dict[str, Any], run: Runtime) -> list[dict[str, Any]]:
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * run.world_size
    dist.all_gather_object(out, value)
    return out


def _mean_metrics(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Objective metrics averaged over the micro-batches of all ranks that report them."""
    sums: dict[str, list[float]] = {}
    for m in metrics:
        for key, value in m.items():
            sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sorted(sums.items())}


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the records of steps up to ``last_step`` (all of them gone for a fresh run)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
