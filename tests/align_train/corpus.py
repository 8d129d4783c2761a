"""Tiny corpora in the exact ``curate build`` format, built from literal rows: row builders, a shard-dir
writer and a reader that loads a whole shard dir at once as the reference for tests."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from schemas import PARALLEL_SCHEMA, LangCounts, Manifest, ShardInfo, canonical_json, validate
from tests.rows import message, parallel_row

_QUESTION = {"en": "What is {a} plus {b}?", "de": "Was ist {a} plus {b}?", "sw": "{a} jumlisha {b} ni ngapi?"}
_ANSWER = {"en": "{a} plus {b} is {c}.", "de": "{a} plus {b} ist {c}.", "sw": "{a} jumlisha {b} ni {c}."}
_SYSTEM = {
    "en": "You are a careful calculator.",
    "de": "Du bist ein sorgfältiger Rechner.",
    "sw": "Wewe ni kikokotoo.",
}


def conversation(lang: str, i: int) -> list[dict]:
    """A question and its answer; every fourth one has a system prompt and answers through a tool call."""
    a, b = i + 2, 3 * i + 1
    question = message("user", _QUESTION[lang].format(a=a, b=b))
    answer = message("assistant", _ANSWER[lang].format(a=a, b=b, c=a + b))
    if i % 4:
        return [question, answer]
    call = canonical_json(
        [{"id": f"call{i}", "type": "function", "function": {"name": "add", "arguments": {"a": a, "b": b}}}]
    )
    return [
        message("system", _SYSTEM[lang]),
        question,
        message("assistant", "", tool_calls=call),
        message("tool", str(a + b), tool_call_id=f"call{i}"),
        answer,
    ]


# The groups of sft_rows(20) that holdout=0.3 holds out, by the sha256 positions of their ids: g006 0.014,
# g015 0.018, g003 0.114, g017 0.117, g014 0.144, g013 0.162, g004 0.190, then g010 0.376.
HELD_OUT = {"g003", "g004", "g006", "g013", "g014", "g015", "g017"}


def sft_rows(num_groups: int) -> list[dict]:
    """``num_groups`` groups in en (anchor) and de; every other group also has sw, the rare language.
    Conversations that call the ``add`` tool are task ``tool_calling``, the others ``math``."""
    rows = []
    for i in range(num_groups):
        langs = ["de", "en", "sw"] if i % 2 == 0 else ["de", "en"]
        task = "math" if i % 4 else "tool_calling"
        rows += [parallel_row(f"g{i:03d}", lang, conversation(lang, i), task=task) for lang in langs]
    return rows


def preference_rows(num_groups: int) -> list[dict]:
    """Preference groups in en and de: the chosen answer is right, the rejected one is off by one."""
    rows = []
    for i in range(num_groups):
        a, b = i + 2, 3 * i + 1
        for lang in ("de", "en"):
            rows.append(
                parallel_row(
                    f"p{i:03d}",
                    lang,
                    [message("user", _QUESTION[lang].format(a=a, b=b))],
                    kind="preference",
                    chosen=[message("assistant", _ANSWER[lang].format(a=a, b=b, c=a + b))],
                    rejected=[message("assistant", _ANSWER[lang].format(a=a, b=b, c=a + b + 1))],
                )
            )
    return rows


def write_shard_dir(
    root: Path, rows: list[dict], *, groups_per_shard: int, rows_per_record_batch: int
) -> Path:
    """Write ``rows`` as ``curate build`` does: zstd Arrow IPC files sorted by (group_id, lang), whole groups
    per shard, and a ``manifest.json`` with per-shard rows, groups, sha256 and languages.

    A small ``rows_per_record_batch`` makes groups straddle record batches inside a shard.
    """
    rows = sorted(rows, key=lambda r: (r["group_id"], r["lang"]))
    group_ids = list(dict.fromkeys(r["group_id"] for r in rows))
    (root / "shards").mkdir(parents=True)
    shards = []
    for s, start in enumerate(range(0, len(group_ids), groups_per_shard)):
        members = set(group_ids[start : start + groups_per_shard])
        table = pa.Table.from_pylist([r for r in rows if r["group_id"] in members], schema=PARALLEL_SCHEMA)
        validate(table, "parallel")
        name = f"shards/part-{s:06d}.arrow"
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_file(root / name, PARALLEL_SCHEMA, options=options) as writer:
            writer.write_table(table, max_chunksize=rows_per_record_batch)
        langs = Counter(table.column("lang").to_pylist())
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        shards.append(
            ShardInfo(file=name, rows=table.num_rows, groups=len(members), sha256=digest, langs=dict(langs))
        )
    counts = Counter(r["lang"] for r in rows)
    manifest = Manifest(
        anchor_lang="en",
        langs=sorted(counts),
        shards=shards,
        rejects=[],
        counts={lang: LangCounts(read=n, kept=n) for lang, n in counts.items()},
        inputs=[],
        config={},
        config_hash="fixture",
    )
    (root / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return root


def read_groups(shard_dir: Path) -> dict[str, list[dict]]:
    """Every group of a shard directory read in one go, rows sorted by language: the reference for tests."""
    manifest = json.loads((shard_dir / "manifest.json").read_text(encoding="utf-8"))
    groups: dict[str, list[dict]] = {}
    for shard in manifest["shards"]:
        with pa.memory_map(str(shard_dir / shard["file"])) as source:
            for row in pa.ipc.open_file(source).read_all().to_pylist():
                groups.setdefault(row["group_id"], []).append(row)
    return {g: sorted(rows, key=lambda r: r["lang"]) for g, rows in groups.items()}
