"""Language ID: the ``lid`` stage against raw fastText ``predict`` on the same lines, and batched vs
per-line ``predict`` calls.

The stage (``curate.lid.Lid.process``) runs on the chunks ``curate build`` would give it (the demo's
pre-translated en/es/de/fr groups, grown by replication); the baselines get the exact lines the stage
judges, already extracted, so they measure the model alone (the stage sends fastText each distinct line
once). The stage's time is split into reading prose out of the rows (code, math and URLs removed),
``predict``, and turning guesses into verdicts. A second pass joins each row's messages into one
~1,000-character message, the length of a typical SFT answer. Every timing is the best of ``--repeats``
interleaved runs.

    python bench/lid.py                   # ~10 s on 2 CPU cores
    python bench/lid.py --factor 32 --chunk-size 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fasttext
import pyarrow as pa
from corpus import DEMO, grow, machine, read_rows

from curate.config import LidConfig
from curate.conversation import prose, prose_by_row
from curate.lid import Lid, default_model_path


def best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time of each run, interleaved so that background load hits all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def long_messages(chunk: pa.Table, chars: int) -> pa.Table:
    """Each row with its prose messages joined (and repeated) into one assistant message of ``chars``+."""
    out = []
    for row in chunk.to_pylist():
        texts = [m["content"] for m in row["messages"] if m["role"] != "tool" and m["content"]]
        body = " ".join(texts)
        while len(body) < chars:
            body = f"{body} {body}"
        message = {**row["messages"][0], "role": "assistant", "content": body, "tool_calls": None}
        out.append({**row, "messages": [message], "chosen": None, "rejected": None})
    return pa.Table.from_pylist(out, schema=chunk.schema)


def measure(lid: Lid, model: Any, batches: list[pa.Table], *, repeats: int) -> dict[str, float]:
    lines = [
        [t for texts in prose_by_row(b) for t in texts.values() if len(t) >= lid.config.min_chars]
        for b in batches
    ]
    times = best_of(
        repeats,
        {
            "stage": lambda: [lid.process(b) for b in batches],
            "prose": lambda: [prose(b) for b in batches],
            "batched": lambda: [model.predict(ls, k=1) for ls in lines],
            "per_line": lambda: [model.predict(line, k=1) for ls in lines for line in ls],
        },
    )
    n = sum(len(ls) for ls in lines)
    return {
        "lines": n,
        "chars": sum(len(line) for ls in lines for line in ls) / n,
        **{name: n / seconds for name, seconds in times.items()},
        "prose_share": times["prose"] / times["stage"],
        "predict_share": times["batched"] / times["stage"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=8, help="replicas of the demo's parallel groups")
    parser.add_argument("--chunk-size", type=int, default=256, help="groups per chunk (write.chunk_size)")
    parser.add_argument("--long-chars", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = grow(DEMO / "parallel.jsonl", Path(tmp) / "parallel.jsonl", factor=args.factor)
        chunks = read_rows(source, langs=["es", "de", "fr"], chunk_size=args.chunk_size)
    lid = Lid(LidConfig())
    lid.setup()
    model = fasttext.load_model(str(default_model_path()))  # the same file, loaded apart from the stage
    runs = {
        "demo messages": chunks,
        f"joined to {args.long_chars}+ chars": [long_messages(c, args.long_chars) for c in chunks],
    }
    results = {name: measure(lid, model, batches, repeats=args.repeats) for name, batches in runs.items()}

    print(f"machine: {machine()}")
    rows = sum(c.num_rows for c in chunks)
    print(f"rows: {rows} (en/es/de/fr) in {len(chunks)} chunks, best of {args.repeats} runs")
    header = (
        f"{'lines':24} {'n':>6} {'chars':>6} {'stage/s':>9} {'fastText/s':>11} {'per-line/s':>11} "
        f"{'stage/raw':>9} {'batch/line':>10} {'prose':>6} {'predict':>8}"
    )
    print(header)
    for name, r in results.items():
        print(
            f"{name:24} {r['lines']:6d} {r['chars']:6.0f} {r['stage']:9.0f} {r['batched']:11.0f} "
            f"{r['per_line']:11.0f} {r['stage'] / r['batched']:9.2f} {r['batched'] / r['per_line']:10.2f} "
            f"{r['prose_share']:6.0%} {r['predict_share']:8.0%}"
        )
    print("stage/raw: lines/s of the whole stage over raw batched predict (goal >= 0.9); prose and predict:")
    print("shares of the stage's time spent extracting prose and inside fastText")


if __name__ == "__main__":
    main()
