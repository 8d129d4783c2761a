"""The training recipe of ``align-train``: setup → loop → cleanup, readable top to bottom.

One process trains alone; under ``torchrun`` every process is a data-parallel rank (DDP or FSDP2) that
reads its own disjoint groups of the shards. The plumbing lives in helpers: :mod:`align_train.distributed`
(ranks, model wrapping, collectives, the stop signal), :class:`align_train.training.objectives.LossScale` (how
the micro-batch losses add up to a step's loss), :mod:`align_train.training.metrics_log` (what each step
records) and :mod:`align_train.training.checkpoint` (exact resume).
"""

from __future__ import annotations

import math
import random
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as hf_logging

from align_train.choices import PREFERENCE_OBJECTIVES
from align_train.config import TrainConfig, save_yaml
from align_train.data.batch import TokenBatch
from align_train.data.collator import Collator
from align_train.data.prefetch import Prefetcher, windows
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.distributed import (
    Runtime,
    StopSignal,
    all_finite,
    any_rank,
    barrier,
    clip_grad_norm,
    init_distributed,
    reshard,
    set_gradient_sync,
    shutdown,
    wrap,
    wrap_frozen,
)
from align_train.model_card import training_facts
from align_train.modeling.capabilities import choose
from align_train.modeling.head import LabelledLM, causal_lm
from align_train.modeling.model import (
    MERGED_DIR,
    compile_layers,
    compute_dtype,
    enable_activation_checkpointing,
    export_merged,
    load_policy,
    load_tokenizer,
)
from align_train.run_folder import RUN_CONFIG
from align_train.training.checkpoint import (
    corpus_identity,
    load_trainer_state,
    restore,
    resume_point,
    save_checkpoint,
)
from align_train.training.coupled import AlignmentSettings, CoupledInputs, coupled_loss
from align_train.training.metrics_log import MetricsLogger
from align_train.training.objectives import OBJECTIVES, LossScale, Objective
from align_train.training.optim import adamw
from align_train.training.reference import (
    REFERENCE_FILE,
    Reference,
    ReferenceTable,
    load_reference,
    precompute_reference,
    reference_identity,
)
from align_train.training.trackers import open_trackers
from schemas import ConfigError, UserError
from schemas.threads import set_threads


def train(cfg: TrainConfig) -> Path:
    """Train as configured and return the final checkpoint.

    SIGTERM makes every rank finish its step, save a checkpoint and return normally.
    """
    # ---- setup ------------------------------------------------------------------------------------
    run = init_distributed()
    stop = StopSignal()
    stack = ExitStack()
    try:
        threads = set_threads(cfg.threads)
        hf_logging.disable_progress_bar()
        settings = cfg.model_dump(mode="json")
        resume_from = resume_point(cfg.out, resume=cfg.resume, settings=settings)
        corpus = corpus_identity(cfg.shards)
        # Read first: a damaged checkpoint should stop the run before a model is loaded.
        state = (
            None
            if resume_from is None
            else load_trainer_state(resume_from, world_size=run.world_size, shards=cfg.shards)
        )
        if run.is_main:  # what the run trains on, for its evaluation (held-out groups) and for audits
            save_yaml(cfg, cfg.out / RUN_CONFIG)
            print(f"align-train: {threads} per process")
        autocast = _autocast(cfg, run)
        # Same seed on every rank while building the model: FSDP2 does not broadcast initial weights.
        _seed_all(cfg.seed)
        tokenizer = load_tokenizer(cfg.model)
        policy = load_policy(cfg.model, tokenizer, lora=cfg.lora, seed=cfg.seed, checkpoint=resume_from)
        policy = policy.to(run.device).train()
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(policy)
        objective = OBJECTIVES[cfg.objective]
        alignment = _alignment(cfg, policy)
        # Decided on the unsharded model: a no-grad forward through FSDP2 breaks it.
        chosen = choose(
            policy,
            attention=cfg.attention,
            pack=cfg.pack,
            chunk_tokens=cfg.loss_chunk_tokens,
            is_main=run.is_main,
        )
        if cfg.compile:  # after the probes' forwards, which would otherwise compile graphs of their own
            compile_layers(policy)
        labelled = LabelledLM(policy, chunk_tokens=chosen.chunk_tokens)
        reference = _reference(cfg, tokenizer, labelled, objective, run)
        model = wrap(labelled, strategy=cfg.dist, run=run)
        sampler = _sampler(cfg, run)
        collator = Collator(
            tokenizer,
            objective=cfg.objective,
            max_length=cfg.max_length,
            pack=chosen.pack,
            one_row=chosen.one_row,
        )
        if run.is_main:
            layout = "packed into one row" if chosen.one_row else "packed" if chosen.pack else "padded"
            print(f"align-train: {chosen.attention} attention, batches {layout}")
        total_steps = _total_steps(cfg, sampler)
        optimizer = adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
        if reference is not None and cfg.precompute_reference:
            # After the optimizer took the (sharded) parameters; a frozen reference model is dropped here.
            reference = _precomputed(reference, collator, model, cfg, run)
        step, tokens = 0, 0  # tokens: of the sequences this rank trained on, for the model card
        card = training_facts(
            cfg.model_dump(mode="json"),
            run=cfg.out.name,
            shards=cfg.shards,
            base_model=None if cfg.model is None else cfg.model.resolve(),
            adapter=cfg.lora.enabled,
            world_size=run.world_size,
        )
        if state is not None:
            cursor = restore(state, model=model, optimizer=optimizer, scheduler=scheduler, rank=run.rank)
            sampler.load_state_dict(cursor)
            step, tokens = state["step"], state["ranks"][run.rank].get("tokens", 0)
        else:
            # Each rank its own random stream (dropout): identical masks on all ranks would waste data.
            _seed_all(cfg.seed + run.rank)
        trackers = (
            open_trackers(
                cfg.report_to, out=cfg.out, project=cfg.tracking_project, settings=settings, start_step=step
            )
            if run.is_main
            else []
        )
        logger = MetricsLogger(
            cfg.out, run, log_every=cfg.log_every, trackers=trackers, start_step=step, total_steps=total_steps
        )
        stack.callback(logger.close)
        # Windows of collated micro-batches, built ahead in a worker; the cursor to checkpoint is the
        # one after the last window the loop took, not the worker's.
        data = Prefetcher(
            windows(sampler, collator, grad_accum=cfg.grad_accum),
            depth=cfg.prefetch,
            worker=cfg.prefetch_worker,
        )
        stack.callback(data.close)
        data_state = sampler.state_dict()

        def save() -> Path:
            """Checkpoint the current step; collective (every rank calls it, rank 0 writes). Weights that
            are not finite are never saved: a resume from them would only train on NaN."""
            if any_rank(not all_finite(p for p in model.parameters() if p.requires_grad), run):
                msg = f"step {step}: the weights hold NaN or infinity and are not saved: {NONFINITE_ADVICE}"
                raise NonFiniteError(msg)
            return save_checkpoint(
                cfg.out,
                step=step,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                tokenizer=tokenizer,
                data_state=data_state,
                tokens=tokens,
                card=card,
                corpus=corpus,
            )

        # ---- loop -------------------------------------------------------------------------------------
        while step < total_steps:
            lr = optimizer.param_groups[0]["lr"]
            # Collated on the CPU up front: the loss units of the whole window on all ranks are needed
            # before the first backward. Each micro-batch goes to the device in its own micro-step.
            window = next(data)
            if run.device.type == "cuda":  # page-locked: the copies below then overlap compute
                window = window.pin_memory()
            data_state = window.data_state
            tokens += window.tokens
            scale = LossScale.for_window(
                window.micro_batches, objective, run=run, alignment_weight=alignment.weight
            )
            losses, metrics = [], []
            for micro, batch in enumerate(window.micro_batches):
                set_gradient_sync(model, enabled=micro == cfg.grad_accum - 1)
                with autocast:
                    out = micro_step(
                        model,
                        batch.to(run.device, non_blocking=True),
                        objective=objective,
                        reference=reference,
                        scale=scale,
                        beta=cfg.beta,
                        alignment=alignment,
                        anchor_lang=sampler.anchor_lang,
                    )
                out.loss.backward()
                losses.append(out.objective)
                metrics.append(out.metrics)
            grad_norm = clip_grad_norm(model, cfg.max_grad_norm)
            # A NaN anywhere makes every weight NaN at the update: skip it or stop before it, on every rank.
            finite = not any_rank(not math.isfinite(sum(losses) + grad_norm), run)
            if finite:
                optimizer.step()
            elif cfg.on_nonfinite == "stop":
                msg = (
                    f"step {step + 1}: the loss is {sum(losses):g} and the gradient norm {grad_norm:g}; the run "
                    f"stops before the update: {NONFINITE_ADVICE}"
                )
                raise NonFiniteError(msg)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            logger.log(
                step,
                loss=sum(losses),
                lr=lr,
                grad_norm=grad_norm,
                window=window,
                metrics=metrics,
                skipped=not finite,
            )
            # Every rank must leave the loop at the same step, or the next collective hangs forever.
            if any_rank(stop.requested, run):
                break
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                save()

        # ---- cleanup ----------------------------------------------------------------------------------
        checkpoint = save()
        if cfg.export_merged and run.is_main:
            export_merged(
                checkpoint, cfg.out / MERGED_DIR, base_model=cfg.model, tokenizer=tokenizer, seed=cfg.seed
            )
        barrier()
        return checkpoint
    finally:
        stack.close()
        stop.uninstall()
        shutdown()


NONFINITE_ADVICE = (
    "lower lr, raise warmup_steps, keep max_grad_norm set, or set on_nonfinite=skip to skip such steps; "
    "resume from the last checkpoint"
)


class NonFiniteError(UserError, ArithmeticError):
    """Training reached a loss, gradient norm or weights that are not finite."""


class MicroStep(NamedTuple):
    """One micro-batch: ``loss`` to backpropagate, ``objective`` its share of the window's objective value
    (what is logged), and the objective's metrics."""

    loss: torch.Tensor
    objective: float
    metrics: dict[str, float]


def micro_step(
    model: torch.nn.Module,
    batch: TokenBatch,
    *,
    objective: Objective,
    reference: Reference | ReferenceTable | None,
    scale: LossScale,
    beta: float,
    alignment: AlignmentSettings,
    anchor_lang: str,
) -> MicroStep:
    """Forward one micro-batch (already on the model's device) and compute its scaled losses.

    ``model`` is a :class:`~align_train.modeling.head.LabelledLM`, possibly wrapped by DDP or FSDP2: it
    returns the label log-probabilities per sequence, never the full logits.
    """
    out = model(
        **batch.labelled_inputs(),
        hidden_layer=alignment.hidden_layer,
        # A coupled term on the log-probabilities weighs tokens unequally: no gradients in the forward.
        uniform_weights=objective.token_mean and not alignment.weighs_logps,
    )
    ref_logps = None if reference is None else reference(batch)
    result = objective.compute(out.logps, batch, reference=ref_logps, beta=beta, count=scale.units)
    loss = scale.objective(result.loss)
    metrics = dict(result.metrics)
    if alignment.enabled:
        align = coupled_loss(CoupledInputs(out.logps, out.hidden), batch, alignment, anchor_lang=anchor_lang)
        loss = loss + scale.alignment(align.loss)
        metrics |= align.metrics
    return MicroStep(loss=loss, objective=float(result.loss.detach()), metrics=metrics)


def _autocast(cfg: TrainConfig, run: Runtime) -> AbstractContextManager[Any]:
    """bf16 autocast on GPU (weights and optimizer state stay float32); plain float32 on CPU."""
    if compute_dtype(cfg.dtype, run.device) == torch.float32:
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _alignment(cfg: TrainConfig, policy: torch.nn.Module) -> AlignmentSettings:
    """The run's coupled term, its layer checked against the model (hidden_states has layers + 1 entries)."""
    layers = causal_lm(policy).config.num_hidden_layers
    if not -(layers + 1) <= cfg.alignment_layer <= layers:
        msg = (
            f"alignment_layer={cfg.alignment_layer} is invalid for a model with {layers} layers: expected "
            f"{-(layers + 1)}..{layers} (0 the embeddings, -1 the last layer)"
        )
        raise ConfigError(msg)
    return AlignmentSettings(
        loss=cfg.alignment_loss,
        weight=cfg.alignment_weight,
        layer=cfg.alignment_layer,
        temperature=cfg.alignment_temperature,
    )


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reference(
    cfg: TrainConfig, tokenizer: Any, policy: LabelledLM, objective: Objective, run: Runtime
) -> Reference | None:
    if not objective.needs_reference:
        return None
    reference = load_reference(
        cfg.reference,  # resolved by the config: 'adapter-disabled' with LoRA, else 'frozen'
        policy,
        model=cfg.model,
        tokenizer=tokenizer,
        seed=cfg.seed,
        chunk_tokens=cfg.loss_chunk_tokens,
        is_main=run.is_main,
    )
    if not reference.disable_adapters:
        wrap_frozen(reference.model.to(run.device), strategy=cfg.dist)
    return reference


def _precomputed(
    reference: Reference, collator: Collator, model: torch.nn.Module, cfg: TrainConfig, run: Runtime
) -> ReferenceTable:
    """The reference log-probabilities of the whole training split: the run's saved table when its settings
    match, else computed now (every rank a share) and saved."""
    identity = reference_identity(
        collator,
        shards=cfg.shards,
        langs=cfg.langs,
        holdout=cfg.holdout,
        kind=cfg.reference,
        model=cfg.model,
        seed=cfg.seed,
        lora=cfg.lora,
    )
    table = ReferenceTable.load(cfg.out / REFERENCE_FILE, identity=identity)
    if table is None:
        table = precompute_reference(
            reference,
            collator,
            run,
            shards=cfg.shards,
            langs=cfg.langs,
            holdout=cfg.holdout,
            groups_per_batch=cfg.groups_per_batch,
            seed=cfg.seed,
        )
        reshard(model)  # an adapter-disabled reference is the policy: FSDP2 left its root gathered
        if run.is_main:
            table.save(cfg.out / REFERENCE_FILE, identity=identity)
    barrier()
    return table


def _sampler(cfg: TrainConfig, run: Runtime) -> ParallelBatchSampler:
    """This rank's batches of the training split."""
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
    if cfg.objective in PREFERENCE_OBJECTIVES:
        # Finding a row of another kind mid-run would waste the run.
        for file, kinds in stream.shard_kinds().items():
            if others := sorted(kinds - {"preference"}):
                msg = (
                    f"objective={cfg.objective!r} needs preference rows, but {file} holds rows of kind "
                    f"{', '.join(others)}: use objective='sft' or a preference corpus"
                )
                raise ConfigError(msg)
    return ParallelBatchSampler(
        stream,
        policy=cfg.policy,
        groups_per_batch=cfg.groups_per_batch,
        anchor_lang=stream.manifest.anchor_lang,
        k=cfg.k,
        temperature=cfg.temperature,
        seed=cfg.seed,
        batches_per_step=cfg.grad_accum,
    )


def _total_steps(cfg: TrainConfig, sampler: ParallelBatchSampler) -> int:
    steps_per_epoch = len(sampler) // cfg.grad_accum
    if steps_per_epoch == 0:
        msg = (
            f"an epoch gives each rank {len(sampler)} batches of groups_per_batch={cfg.groups_per_batch}, "
            f"fewer than grad_accum={cfg.grad_accum}: lower groups_per_batch or grad_accum"
        )
        raise ConfigError(msg)
    return cfg.max_steps or cfg.epochs * steps_per_epoch
