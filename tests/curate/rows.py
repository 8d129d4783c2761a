"""Stage-test helpers over the shared row builders (:mod:`tests.rows`): short conversations, tables and
results keyed by ``group/lang``."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from curate.stages.base import StageResult
from schemas import PARALLEL_SCHEMA, validate
from tests.rows import Messages, message, parallel_row


def convo(*contents: str) -> Messages:
    """Messages alternating user / assistant."""
    return [message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)]


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


def tool_row(group_id: str) -> dict[str, Any]:
    """An English tool-calling conversation: a call, its result and the answer."""
    calls = json.dumps(
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ]
    )
    messages = [
        message("system", "You are a helpful assistant."),
        message("user", "What is the weather in Paris?"),
        message("assistant", "", tool_calls=calls),
        {
            "role": "tool",
            "content": '{"temp_c": 21, "sky": "clear"}',
            "tool_calls": None,
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
        message("assistant", "It is 21 degrees and the sky is clear."),
    ]
    return parallel_row(group_id, "en", messages, task="tool_calling")


def preference_row(group_id: str) -> dict[str, Any]:
    """An English preference row: a question, a chosen and a rejected answer."""
    prompt = [message("user", "Which animal says woof?")]
    chosen = [message("assistant", "The dog says woof.")]
    rejected = [message("assistant", "The cat says woof.")]
    return parallel_row(group_id, "en", prompt, chosen=chosen, rejected=rejected)
