"""Language ID: the ``lid`` stage against raw fastText ``predict`` on the same lines, and batched vs
per-line ``predict`` calls.

The stage (``curate.stages.lid.Lid.process``) runs on the chunks ``curate build`` would give it (the demo's
pre-translated en/es/de/fr groups, grown by replication) and does everything a build needs: strips code,
math and URLs, predicts each distinct text once, decides every row and splits kept from rejected rows.
Two baselines call batched ``predict`` on lists made beforehand, so they time the model alone:

- ``raw``: the messages the stage judges, as they are (newlines made spaces, as ``predict`` requires):
  what calling fastText on the data directly costs. The goal (>= 0.9x) is set against this.
- ``prose``: the same messages as the stage's own prose (spans already stripped): everything the stage
  does besides ``predict`` counts against it.

A second pass joins each row's messages into one ~1,000-character message, the length of a typical SFT
answer. Every timing is the best of ``--repeats`` interleaved runs.

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
from curate.stages.lid import Lid, default_model_path
from curate.text.conversation import conversations, prose
from schemas import CONVERSATION_COLUMNS


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


def judged_lines(lid: Lid, batch: pa.Table) -> tuple[list[str], list[str]]:
    """The messages the stage judges (``min_chars`` of prose): raw (newlines made spaces) and as prose."""
    found = prose(batch)
    rows = conversations(batch)
    raw, stripped = [], []
    for i, text in enumerate(found.texts.to_pylist()):
        if found.chars[i] >= lid.config.min_chars:
            message = rows[found.rows[i]][CONVERSATION_COLUMNS[found.columns[i]]][found.positions[i]]
            raw.append(message["content"].replace("\n", " "))
            stripped.append(text)
    return raw, stripped


def measure(lid: Lid, model: Any, batches: list[pa.Table], *, repeats: int) -> dict[str, float]:
    raw, lines = zip(*(judged_lines(lid, b) for b in batches), strict=True)
    times = best_of(
        repeats,
        {
            "stage": lambda: [lid.process(b) for b in batches],
            "prose_only": lambda: [prose(b) for b in batches],
            "raw": lambda: [model.predict(ls, k=1) for ls in raw],
            "batched": lambda: [model.predict(ls, k=1) for ls in lines],
            "per_line": lambda: [model.predict(line, k=1) for ls in lines for line in ls],
        },
    )
    n = sum(len(ls) for ls in lines)
    return {
        "lines": n,
        "chars": sum(len(line) for ls in raw for line in ls) / n,
        **{name: n / seconds for name, seconds in times.items()},
        "prose_share": times["prose_only"] / times["stage"],
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
        f"{'lines':24} {'n':>6} {'chars':>6} {'stage/s':>9} {'raw/s':>9} {'prose/s':>9} {'per-line/s':>10} "
        f"{'stage/raw':>9} {'stage/prose':>11} {'batch/line':>10} {'strip':>6}"
    )
    print(header)
    for name, r in results.items():
        print(
            f"{name:24} {r['lines']:6d} {r['chars']:6.0f} {r['stage']:9.0f} {r['raw']:9.0f} {r['batched']:9.0f} "
            f"{r['per_line']:10.0f} {r['stage'] / r['raw']:9.2f} {r['stage'] / r['batched']:11.2f} "
            f"{r['batched'] / r['per_line']:10.2f} {r['prose_share']:6.0%}"
        )
    print(
        "lines/s of the stage and of batched predict on the raw messages (raw) and on their prose; stage/raw is"
    )
    print("the goal (>= 0.9); stage/prose counts all the stage's own work; strip: share of the stage's time")
    print("spent extracting prose")


if __name__ == "__main__":
    main()
