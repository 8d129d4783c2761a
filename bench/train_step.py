"""Training-step throughput: padded vs padding-free (packed) batches, and what the data path costs.

Runs the same SFT steps (forward, backward, AdamW) twice on the same model initialisation and the same
parallel batches, once padded and once packed, and prints side by side:

- tokens/s counting real (non-pad) tokens only, and the share of padding the padded run computes;
- the share of step time spent in the sampler + collator (reading groups, chat template, tokenising);
- on a GPU, model FLOPs utilisation (MFU) against the device's dense bf16 peak.

    python bench/train_step.py                          # demo shards (make demo), tiny model, CPU
    python bench/train_step.py --size smollm2-135m --groups-per-batch 16 --steps 30   # on a GPU
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from align_train.batch import ParallelBatch
from align_train.collator import Collator
from align_train.head import LabelledLM, choose_head
from align_train.losses import sft_loss
from align_train.model import load_model, load_tokenizer, tiny_model
from align_train.sampler import ParallelBatchSampler
from align_train.shard_stream import ShardStream
from align_train.threads import set_threads

# Dense bf16 peak (FLOP/s) by device-name fragment, for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


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


def build_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    if args.model is not None:
        return load_model(args.model, tokenizer)
    return smollm2_135m(tokenizer) if args.size == "smollm2-135m" else tiny_model(tokenizer, seed=0)


def batches(args: argparse.Namespace) -> Iterator[ParallelBatch]:
    """The same batch sequence on every call (same seed): both modes see identical data."""
    stream = ShardStream(args.shards, seed=0, shuffle_buffer=256)
    sampler = ParallelBatchSampler(
        stream,
        policy=args.policy,
        groups_per_batch=args.groups_per_batch,
        anchor_lang=stream.manifest.anchor_lang,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def train_flops(model: torch.nn.Module, seq_lengths: list[int]) -> float:
    """Model FLOPs of one training step (forward + backward): 6·N per token plus causal attention,
    6·layers·hidden·len² per sequence. Padding is not counted: MFU measures useful work."""
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    attention = 6 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in seq_lengths)
    return 6.0 * params * sum(seq_lengths) + attention


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, *, pack: bool) -> dict[str, float]:
    device = torch.device(args.device)
    model = LabelledLM(build_model(args, tokenizer).to(device).train(), chunk_tokens=None)
    model.chunk_tokens = choose_head(model.lm, chunk_tokens=None, is_main=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    collator = Collator(tokenizer, objective="sft", max_length=args.max_length, pack=pack)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    data_iter = batches(args)
    totals = {"data_s": 0.0, "step_s": 0.0, "tokens": 0, "computed": 0, "flops": 0.0}
    for step in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        token_batch = collator(next(data_iter)).to(device)
        sync(device)
        collated = time.perf_counter()
        with autocast:
            out = model(**token_batch.labelled_inputs(), uniform_weights=True)
        loss = sft_loss(out.logps, token_batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        done = time.perf_counter()
        if step < args.warmup:
            continue
        seq_lengths = torch.bincount(token_batch.seq_ids[token_batch.seq_ids >= 0]).tolist()
        totals["data_s"] += collated - start
        totals["step_s"] += done - start
        totals["tokens"] += sum(seq_lengths)
        totals["computed"] += token_batch.input_ids.numel()
        totals["flops"] += train_flops(model.lm, seq_lengths)
    return totals


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=Path("out/demo"), help="a `curate build` output dir")
    parser.add_argument("--model", type=Path, default=None, help="a local model folder (default: --size)")
    parser.add_argument("--size", choices=["tiny", "smollm2-135m"], default="tiny")
    parser.add_argument("--policy", choices=["all", "sample", "monolingual"], default="all")
    parser.add_argument("--groups-per-batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: OMP_NUM_THREADS, else the idle cores)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not (args.shards / "manifest.json").is_file():
        parser.error(
            f"{args.shards} is not a `curate build` output dir: run `make demo` first or pass --shards"
        )
    set_threads(args.threads)

    tokenizer = load_tokenizer(args.model)
    results = {mode: run(args, tokenizer, pack=mode == "packed") for mode in ("padded", "packed")}
    device = torch.device(args.device)
    peak = peak_flops(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}   model: {args.model or args.size}   policy: {args.policy}   "
        f"groups/batch: {args.groups_per_batch}   steps: {args.steps} (+{args.warmup} warm-up)"
    )
    header = f"{'':8} {'tokens/s':>10} {'pad share':>10} {'data share':>11} {'ms/step':>9}"
    print(header + (f" {'MFU':>7}" if peak else ""))
    for mode, r in results.items():
        line = (
            f"{mode:8} {r['tokens'] / r['step_s']:10.0f} {1 - r['tokens'] / r['computed']:10.1%} "
            f"{r['data_s'] / r['step_s']:11.2%} {1000 * r['step_s'] / args.steps:9.1f}"
        )
        print(line + (f" {r['flops'] / r['step_s'] / peak:7.1%}" if peak else ""))
    speedup = (results["packed"]["tokens"] / results["packed"]["step_s"]) / (
        results["padded"]["tokens"] / results["padded"]["step_s"]
    )
    print(f"packed / padded tokens/s: {speedup:.2f}x   (data share target: <= 3%)")


if __name__ == "__main__":
    main()
