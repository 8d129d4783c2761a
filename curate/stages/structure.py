"""``structure``: a translation keeps its anchor's skeleton: roles, code, tool calls and, for math, numbers.

Translators rewrite prose; whatever a model is trained to reproduce exactly must come through untouched.
Messages are compared with the anchor's position by position, so roles are checked first: once the shape
of the conversation differs, nothing else lines up. The first failed check decides the reason, in the
order roles, tool calls, code, numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa

from curate.config import StructureConfig
from curate.stages.base import FilterStage, Verdict, anchor_index
from curate.text.conversation import Conversation, Message, conversations
from curate.text.masking import protected_spans
from schemas import CONVERSATION_COLUMNS, canonical_json, read_numbers

_CODE_KINDS = frozenset({"code_block", "code_inline"})
_DETAIL_CHARS = 40


def number_values(text: str) -> Counter[Decimal]:
    """The numbers of ``text`` (:func:`schemas.read_numbers`) as a multiset, signs dropped: translators
    turn "-5" into words ("minus 5") as often as they keep the sign."""
    return Counter(abs(value) for value in read_numbers(text))


class Structure(FilterStage):
    """Reject translations whose roles, code spans, tool calls or (math) answer numbers differ from the
    anchor's; ``detail`` names the message (``messages[2]``) and what differed."""

    name = "structure"

    def __init__(self, config: StructureConfig) -> None:
        self.config = config
        checks: list[tuple[str, Callable[[Message, Message], str | None]]] = []
        if config.tool_calls:
            checks.append(("tool_calls_changed", _tool_calls_diff))
        if config.code:
            checks.append(("code_changed", _code_diff))
        self._checks = checks
        self._math_checks = [*checks, ("numbers_changed", _numbers_diff)] if config.numbers else checks

    def judge(self, batch: pa.Table) -> Verdict:
        rows = conversations(batch)
        anchors = anchor_index(batch)
        groups = batch.column("group_id").to_pylist()
        is_anchor = batch.column("is_anchor").to_pylist()
        tasks = batch.column("task").to_pylist()
        reasons: list[str | None] = []
        details: list[str | None] = []
        for row, group in enumerate(groups):
            found = None
            if not is_anchor[row]:
                found = self._compare(rows[row], rows[anchors[group]], math=tasks[row] == "math")
            reasons.append(found[0] if found else None)
            details.append(found[1] if found else None)
        return Verdict(reasons=reasons, details=details)

    def _compare(
        self, translation: Conversation, anchor: Conversation, *, math: bool
    ) -> tuple[str, str] | None:
        """The first difference as ``(reason, detail)``, or None when the translation keeps the structure."""
        diff = _roles_diff(translation, anchor)
        if diff:
            return "roles_changed", diff
        for reason, check in self._math_checks if math else self._checks:
            for column, messages in anchor.items():
                for i, (ours, theirs) in enumerate(zip(translation[column], messages, strict=True)):
                    diff = check(ours, theirs)
                    if diff:
                        return reason, f"{column}[{i}]: {diff}"
        return None


def _roles_diff(translation: Conversation, anchor: Conversation) -> str | None:
    for column in CONVERSATION_COLUMNS:
        if column not in anchor and column not in translation:
            continue
        if column not in translation or column not in anchor:
            side = "translation" if column not in translation else "anchor"
            return f"{column}: missing in the {side}"
        ours = [m["role"] for m in translation[column]]
        theirs = [m["role"] for m in anchor[column]]
        if ours != theirs:
            return f"{column}: roles {ours} vs anchor {theirs}"
    return None


def _tool_calls_diff(ours: Message, anchor: Message) -> str | None:
    if ours["tool_calls"] == anchor["tool_calls"]:
        return None
    try:
        got = _parse_calls(ours["tool_calls"])
    except ValueError as e:
        return f"tool_calls not valid: {e}"
    try:
        want = _parse_calls(anchor["tool_calls"])
    except ValueError as e:
        return f"anchor tool_calls not valid, translation's differ: {e}"
    if len(got) != len(want):
        return f"{len(got)} tool calls vs anchor {len(want)}"
    for k, ((name, arguments), (want_name, want_arguments)) in enumerate(zip(got, want, strict=True)):
        if name != want_name:
            return f"call {k}: name {name!r} vs anchor {want_name!r}"
        if arguments != want_arguments:
            got_text, want_text = _clip(canonical_json(arguments)), _clip(canonical_json(want_arguments))
            return f"call {k}: arguments {got_text} vs anchor {want_text}"
    return None


def _parse_calls(text: str | None) -> list[tuple[str, Any]]:
    """Each call's name and arguments as parsed JSON (ids and the ``arguments`` encoding do not matter)."""
    if text is None:
        return []
    try:
        calls = json.loads(text)
        if not isinstance(calls, list):
            msg = f"expected a JSON list, got {type(calls).__name__}"
            raise ValueError(msg)
        parsed = []
        for call in calls:
            function = call["function"]
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            parsed.append((function["name"], arguments))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        msg = f"{type(e).__name__}: {e}"
        raise ValueError(msg) from e
    return parsed


def _code_diff(ours: Message, anchor: Message) -> str | None:
    got = [s.text for s in protected_spans(ours["content"]) if s.kind in _CODE_KINDS]
    want = [s.text for s in protected_spans(anchor["content"]) if s.kind in _CODE_KINDS]
    if got == want:
        return None
    if len(got) != len(want):
        return f"{len(got)} code spans vs anchor {len(want)}"
    k = next(k for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
    return f"code span {k}: {_clip(got[k])!r} vs anchor {_clip(want[k])!r}"


def _numbers_diff(ours: Message, anchor: Message) -> str | None:
    if anchor["role"] != "assistant":
        return None
    got = number_values(ours["content"])
    want = number_values(anchor["content"])
    if got == want:
        return None
    missing = sorted((want - got).elements())
    added = sorted((got - want).elements())
    return f"numbers missing {[_plain(d) for d in missing]}, added {[_plain(d) for d in added]}"


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
