"""Literal rows of the data contract for the tests of every package: messages and ``PARALLEL_SCHEMA`` rows."""

from __future__ import annotations

from typing import Any

from schemas import content_hash

Messages = list[dict[str, Any]]


def message(
    role: str,
    content: str,
    *,
    tool_calls: str | None = None,
    tool_call_id: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """One message with every contract field (``tool_calls`` as canonical JSON text)."""
    return {
        "role": role,
        "content": content,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
        "name": name,
    }


def parallel_row(
    group_id: str,
    lang: str,
    messages: Messages,
    *,
    task: str = "chat",
    chosen: Messages | None = None,
    rejected: Messages | None = None,
    anchor: bool | None = None,
    anchor_lang: str = "en",
    **extra: Any,
) -> dict[str, Any]:
    """A ``PARALLEL_SCHEMA`` row: the anchor when ``lang`` is ``anchor_lang`` (unless ``anchor`` says
    otherwise), a preference row when it has ``chosen``; scores unset; ``extra`` overrides any column."""
    is_anchor = lang == anchor_lang if anchor is None else anchor
    row = {
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
    }
    row.update(extra)
    row["content_hash"] = content_hash(row["messages"], row["chosen"], row["rejected"])
    return row
