"""Comparable answers read from reference messages and from generations.

A scorer turns both sides into a canonical text: the final number of a math answer ("28000", "3.5") or the
sorted, canonical JSON of an assistant turn's tool calls. Two answers are equal exactly when their texts
are, which is what both accuracy (generation vs reference) and cross-lingual consistency (one language's
generation vs another's) compare; ``None`` is no answer and equals nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from align_train.choices import ScorerName
from align_train.data.batch import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from schemas import canonical_json, read_numbers

_TOOL_CALL = re.compile(rf"{re.escape(TOOL_CALL_OPEN)}(.*?)(?:{re.escape(TOOL_CALL_CLOSE)}|$)", re.DOTALL)


def final_number(text: str) -> str | None:
    """The last number written in ``text`` as plain decimal text ("The answer is 28,000." → "28000",
    "La respuesta es 3,5." → "3.5"), read by :func:`schemas.read_numbers`."""
    numbers = read_numbers(text)
    return format(numbers[-1].normalize(), "f") if numbers else None


def reference_tool_calls(message: dict[str, Any]) -> str | None:
    """The canonical calls of a reference assistant message ("[]" when it calls no tool); None when its
    ``tool_calls`` cannot be read."""
    try:
        calls = json.loads(message["tool_calls"]) if message.get("tool_calls") else []
        return canonical_calls(call.get("function", call) for call in calls)
    except (ValueError, AttributeError):
        return None


def generated_tool_calls(text: str) -> str | None:
    """The canonical calls in a generation: every ``<tool_call>{json}</tool_call>`` block (the collator's
    format, also Hermes' and Qwen's), else a bare JSON call or list of calls (Llama 3.1's format). None when
    the text calls no tool or a call is not readable JSON: no call is no answer, so two languages that both
    call nothing do not count as agreeing."""
    blocks = _TOOL_CALL.findall(text)
    try:
        if blocks:
            return canonical_calls(json.loads(block) for block in blocks)
        stripped = text.strip()
        if not stripped.startswith(("{", "[")):
            return None
        value = json.loads(stripped)
        return canonical_calls(value if isinstance(value, list) else [value])
    except ValueError:
        return None


def canonical_calls(functions: Iterable[dict[str, Any]]) -> str:
    """``[{"arguments", "name"}, ...]`` as canonical JSON, calls sorted: neither key order, the order of
    calls, an ``arguments`` string instead of an object, ``parameters`` for ``arguments`` nor 14.0 for 14
    changes the text. Raises ValueError for a call without a name or with non-object arguments."""
    calls = []
    for function in functions:
        if not isinstance(function, dict):
            msg = f"a tool call must be a JSON object, got {canonical_json(function)}"
            raise ValueError(msg)
        name = function.get("name")
        arguments = function.get("arguments", function.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        if not isinstance(name, str) or not isinstance(arguments, dict):
            msg = f"a tool call needs a name and an object of arguments, got {canonical_json(function)}"
            raise ValueError(msg)
        calls.append(canonical_json({"name": name, "arguments": _integral_floats(arguments)}))
    return "[" + ",".join(sorted(calls)) + "]"


def _integral_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    return value


def last_assistant(messages: Sequence[dict[str, Any]]) -> int | None:
    """Index of the last assistant message: the final answer of a conversation."""
    return next((i for i in reversed(range(len(messages))) if messages[i]["role"] == "assistant"), None)


def first_tool_call(messages: Sequence[dict[str, Any]]) -> int | None:
    """Index of the first assistant message that calls a tool, else of the last assistant message (a
    conversation in which the right move is not to call one)."""
    calls = (i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls"))
    return next(calls, last_assistant(messages))


@dataclass(frozen=True)
class Scorer:
    """What a task's answer is: which assistant message is predicted (``target``, given the conversation),
    and how to read a comparable answer from that reference message and from a generation."""

    target: Callable[[Sequence[dict[str, Any]]], int | None]
    expected: Callable[[dict[str, Any]], str | None]
    predicted: Callable[[str], str | None]


SCORERS: dict[ScorerName, Scorer] = {
    "math": Scorer(
        target=last_assistant, expected=lambda m: final_number(m["content"]), predicted=final_number
    ),
    "tool": Scorer(target=first_tool_call, expected=reference_tool_calls, predicted=generated_tool_calls),
}
