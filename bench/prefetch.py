"""Where the data path runs while the loop launches a GPU's kernels: in the loop, a thread, or a process.

On a GPU, the training loop's host side is Python and kernel launches: it holds the GIL for most of a step,
as the data path does while it reads groups and renders chat templates. This benchmark runs that host side
without a GPU: a model of Qwen2-0.5B's depth (24 layers) but a few units wide, forward and backward on a
short batch, whose time is the dispatch of some 5,500 ops a pass. Each step also takes one window of real
``align-train`` batches (the demo shards, ``--groups-per-batch`` groups packed into one row), built

- ``inline``: in the loop (``prefetch: 0``);
- ``thread``: by ``Prefetcher`` in a thread (``prefetch_worker: thread``);
- ``process``: by ``Prefetcher`` in a forked process (``prefetch_worker: process``, the default);

against ``alone``, the host side with no data path at all. The worker can only hide the data path when it
does not hold the loop's GIL. Wall-clock milliseconds per step, best of ``--repeats``, modes interleaved;
every mode with one torch thread (set ``OMP_NUM_THREADS=1`` on a busy machine).

    python bench/prefetch.py                   # demo shards (make demo), ~20 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from align_train.choices import PrefetchWorker
from align_train.data.collator import Collator
from align_train.data.prefetch import Prefetcher, Window, windows
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.modeling.model import load_tokenizer

MODES = ("alone", "inline", "thread", "process")


def host_step(layers: int) -> Callable[[], None]:
    """Forward and backward of a ``layers``-deep, 16-wide Qwen2 on 64 tokens: the launches without the math."""
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    ids = torch.randint(512, (1, 64))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()

    return step


def data_source(args: argparse.Namespace) -> Callable[[], Iterator[Window]]:
    """A fresh endless iterator of windows over the training split, as ``align-train`` builds them."""
    tokenizer = load_tokenizer(None)
    collator = Collator(tokenizer, objective="sft", max_length=args.max_length, pack=True, one_row=True)

    def source() -> Iterator[Window]:
        stream = ShardStream(args.shards, seed=0, split="train")
        sampler = ParallelBatchSampler(
            stream,
            policy="all",
            groups_per_batch=args.groups_per_batch,
            anchor_lang=stream.manifest.anchor_lang,
        )
        return windows(sampler, collator, grad_accum=1)

    return source


def run(
    mode: str, args: argparse.Namespace, step: Callable[[], None], source: Callable[[], Iterator[Window]]
) -> float:
    """Milliseconds per step of ``--steps`` steps after ``--warmup``."""
    data: Prefetcher | None = None
    if mode != "alone":
        depth = 0 if mode == "inline" else args.prefetch
        worker: PrefetchWorker = "thread" if mode == "thread" else "process"
        data = Prefetcher(source(), depth=depth, worker=worker)
    try:
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                start = time.perf_counter()
            if data is not None:
                window: Window = next(data)
                assert window.micro_batches
            for _ in range(args.host_repeats):
                step()
        return (time.perf_counter() - start) / args.steps * 1e3
    finally:
        if data is not None:
            data.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("out/demo"), help="an SFT `curate build` output")
    parser.add_argument("--groups-per-batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--host-repeats", type=int, default=3, help="forward-backward passes per step")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not (args.shards / "manifest.json").is_file():
        parser.error(
            f"{args.shards} is not a `curate build` output dir: run `make demo` first or pass --shards"
        )
    torch.set_num_threads(1)
    step, source = host_step(args.layers), data_source(args)

    windows_alone = source()
    next(windows_alone)
    start = time.perf_counter()
    for _ in range(5):
        next(windows_alone)
    collate_ms = (time.perf_counter() - start) / 5 * 1e3
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for mode in MODES:
            ms = run(mode, args, step, source)
            best[mode] = min(ms, best.get(mode, ms))

    print(
        f"groups/batch: {args.groups_per_batch}   max_length: {args.max_length}   layers: {args.layers} x "
        f"{args.host_repeats} passes   steps: {args.steps} (+{args.warmup})   best of {args.repeats}"
    )
    print(f"one window built alone: {collate_ms:.0f} ms")
    print(f"{'mode':8} {'ms/step':>8} {'vs alone':>9}")
    for mode in MODES:
        print(f"{mode:8} {best[mode]:8.0f} {best[mode] / best['alone']:9.2f}")
    print(
        f"process / thread: {best['thread'] / best['process']:.2f}x the steps per second   "
        f"thread / inline: {best['inline'] / best['thread']:.2f}x"
    )


if __name__ == "__main__":
    main()
