"""Tiny literal parallel rows for stage and writer tests."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate.stages.base import StageResult
from schemas import PARALLEL_SCHEMA, content_hash, validate

Messages = list[dict[str, Any]]


def message(role: str, content: str, *, tool_calls: str | None = None, **fields: str) -> dict[str, Any]:
    base = {"role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": None, "name": None}
    return base | fields


def convo(*contents: str) -> Messages:
    """Messages alternating user / assistant."""
    return [message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)]


def parallel_row(
    group_id: str,
    lang: str,
    messages: Messages,
    *,
    task: str = "chat",
    chosen: Messages | None = None,
    rejected: Messages | None = None,
    anchor: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``PARALLEL_SCHEMA`` row; ``en`` is the anchor unless ``anchor`` says otherwise."""
    is_anchor = lang == "en" if anchor is None else anchor
    out = {
        "group_id": group_id,
        "lang": lang,
        "is_anchor": is_anchor,
        "kind": "sft" if chosen is None else "preference",
        "task": task,
        "messages": messages,
        "chosen": chosen,
        "rejected": rejected,
        "meta": "{}",
        "translator": "source" if is_anchor else "test",
        "lid_lang": None,
        "lid_prob": None,
        "equivalence": None,
        "length_ratio": None,
        "content_hash": content_hash(messages, chosen, rejected),
    }
    out.update(extra)
    return out


def row(group_id: str, lang: str, *contents: str, **fields: Any) -> dict[str, Any]:
    """A row whose messages alternate user / assistant over ``contents``."""
    return parallel_row(group_id, lang, convo(*contents), **fields)


def table(*rows: dict[str, Any]) -> pa.Table:
    out = pa.Table.from_pylist(list(rows), schema=PARALLEL_SCHEMA)
    validate(out)
    return out


def by_key(result: StageResult) -> dict[str, dict[str, Any]]:
    """``group/lang`` → the row as kept or rejected (``reason`` None when kept)."""
    out = {f"{r['group_id']}/{r['lang']}": {**r, "reason": None} for r in result.kept.to_pylist()}
    out |= {f"{r['group_id']}/{r['lang']}": r for r in result.rejected.to_pylist()}
    return out
