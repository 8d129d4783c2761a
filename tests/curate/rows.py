"""Tiny literal parallel rows for stage and writer tests."""

from __future__ import annotations

import pyarrow as pa

from schemas import PARALLEL_SCHEMA, content_hash


def message(role: str, content: str, *, tool_calls: str | None = None) -> dict:
    return {"role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": None, "name": None}


def row(
    group_id: str, lang: str, *contents: str, anchor: bool | None = None, task: str = "chat", **extra
) -> dict:
    """A row whose messages alternate user / assistant over ``contents``."""
    messages = [message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)]
    is_anchor = lang == "en" if anchor is None else anchor
    out = {
        "group_id": group_id,
        "lang": lang,
        "is_anchor": is_anchor,
        "kind": "sft",
        "task": task,
        "messages": messages,
        "chosen": None,
        "rejected": None,
        "meta": "{}",
        "translator": "source" if is_anchor else "test",
        "lid_lang": None,
        "lid_prob": None,
        "equivalence": None,
        "length_ratio": None,
        "content_hash": content_hash(messages),
    }
    out.update(extra)
    return out


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PARALLEL_SCHEMA)
