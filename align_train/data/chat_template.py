"""The tokenizer's chat template as training and evaluation use it: a conversation rendered to text once,
with the character span of each assistant message in it.

A span is what rendering a message adds after the generation prompt, up to the end-of-turn token, so the
template needs no ``{% generation %}`` markers, only to render a conversation's prefix as a prefix of the
whole (checked once, on a probe conversation, when a :class:`ChatTemplate` is made). Templates that do not
render ``tool_calls`` get them written into the content as ``<tool_call>\\n{json}\\n</tool_call>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from align_train.data.batch import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from schemas import ConfigError, Message, canonical_json

Span = tuple[int, int]
"""Character offsets ``[start, end)`` of an assistant message in a rendered conversation."""

_PROBE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Say one."},
    {"role": "assistant", "content": "One."},
    {"role": "user", "content": "Say two."},
    {"role": "assistant", "content": "Two."},
]

_MARKER = "\ue000{}.{}\ue001"
"""Stands for field ``f`` of message ``i`` in a skeleton render: private-use code points, which no template
adds."""
_MARKED_FIELDS = ("content", "name", "tool_call_id")
_SKELETON_CACHE = 4096


@dataclass(frozen=True)
class _Skeleton:
    """A conversation structure rendered with markers for its texts, and its assistant spans there.

    ``slots`` are the rendered markers in text order: (offset in ``text``, marker length, message, field).
    """

    text: str
    slots: list[tuple[int, int, int, str]]
    spans: list[Span | None]

    def spans_in(self, chats: Sequence[dict[str, Any]], text: str) -> list[Span | None] | None:
        """The spans in ``text``, the render of the same structure with the texts of ``chats``; None unless
        ``text`` is exactly this skeleton with its markers replaced by those texts (the template inserts
        them verbatim)."""
        pieces = []
        shifts = []  # (marker start, marker end, shift of the offsets at or after its end)
        shift = last = 0
        for position, length, message, field in self.slots:
            value = chats[message][field]
            pieces += [self.text[last:position], value]
            last = position + length
            shift += len(value) - length
            shifts.append((position, last, shift))
        pieces.append(self.text[last:])
        if "".join(pieces) != text:
            return None

        def moved(offset: int) -> int | None:
            out = offset
            for start, end, after in shifts:
                if start < offset < end:  # inside a marker: no place in the real text
                    return None
                if offset >= end:
                    out = offset + after
            return out

        spans: list[Span | None] = []
        for span in self.spans:
            if span is None:
                spans.append(None)
                continue
            lo, hi = moved(span[0]), moved(span[1])
            if lo is None or hi is None:
                return None
            spans.append((lo, hi))
        return spans


class ChatTemplate:
    """``tokenizer``'s chat template, refusing one without a template or that is not prefix-stable."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not tokenizer.chat_template:
            msg = (
                "tokenizer has no chat_template: use a chat/instruct tokenizer or set tokenizer.chat_template"
            )
            raise ConfigError(msg)
        self.tokenizer = tokenizer
        self._skeletons: dict[str, _Skeleton | None] = {}
        self._inline_tool_calls = "tool_calls" not in tokenizer.chat_template
        probe_text = self.render(_PROBE)
        if any(self._span(_PROBE, i, probe_text) is None for i in (2, 4)):
            msg = (
                "the tokenizer's chat_template does not render a conversation's prefix as a prefix of the "
                "whole conversation, so assistant tokens cannot be located: use a prefix-stable template"
            )
            raise ConfigError(msg)

    def chat(self, message: dict[str, Any]) -> dict[str, Any]:
        """A row's message as the template takes it (tool calls inlined when it does not render them)."""
        chat = Message.model_validate(message).as_chat()
        if self._inline_tool_calls and "tool_calls" in chat:
            calls = [
                f"{TOOL_CALL_OPEN}\n{canonical_json(c.get('function', c))}\n{TOOL_CALL_CLOSE}"
                for c in chat.pop("tool_calls")
            ]
            chat["content"] = "\n".join([chat["content"], *calls] if chat["content"] else calls)
        return chat

    def prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """``messages`` rendered exactly as in training, then the template's generation prompt: the text a
        model continues with its next assistant turn."""
        return self.render([self.chat(m) for m in messages], add_generation_prompt=True)

    def render(self, chats: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            list(chats), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def rendered(self, chats: list[dict[str, Any]]) -> tuple[str, list[Span | None]]:
        """The conversation rendered once, and the character span of each assistant message in it (None
        for other messages, and where the template is not prefix-stable).

        A span is found by rendering the conversation's prefixes (:meth:`_span`), which costs about three
        more renders per assistant message. Those prefix renders depend on the conversation's structure
        (its roles, and the tool calls of a template that renders them), not on the words of its messages,
        so they are done once per structure on a *skeleton* whose texts (``content``, ``name``,
        ``tool_call_id``) are unique markers, and each span is moved to the real text by the lengths of the
        texts before it. That holds when the template inserts every text verbatim, at most once: the
        skeleton with its markers replaced by the real texts must be exactly the text rendered from the real
        messages, or the spans are found on the real messages instead. So every conversation is rendered
        once, and a structure not seen before costs the prefix renders once.
        """
        text = self.render(chats)
        marked = [
            chat | {f: _MARKER.format(i, f) for f in _MARKED_FIELDS if isinstance(chat.get(f), str)}
            for i, chat in enumerate(chats)
        ]
        key = json.dumps(marked, sort_keys=True, ensure_ascii=False)
        if key not in self._skeletons:
            if len(self._skeletons) >= _SKELETON_CACHE:
                self._skeletons.pop(next(iter(self._skeletons)))
            self._skeletons[key] = self._skeleton(marked)
        skeleton = self._skeletons[key]
        if skeleton is not None and (spans := skeleton.spans_in(chats, text)) is not None:
            return text, spans
        return text, [
            self._span(chats, i, text) if chat["role"] == "assistant" else None
            for i, chat in enumerate(chats)
        ]

    def _skeleton(self, marked: list[dict[str, Any]]) -> _Skeleton | None:
        """The rendered skeleton and its assistant spans, or None when a marker is rendered more than once."""
        text = self.render(marked)
        slots = []
        for i, chat in enumerate(marked):
            for field in _MARKED_FIELDS:
                marker = _MARKER.format(i, field)
                if chat.get(field) != marker or (count := text.count(marker)) == 0:
                    continue  # absent, or not rendered (substituting would then change nothing)
                if count > 1:
                    return None
                slots.append((text.index(marker), len(marker), i, field))
        spans = [
            self._span(marked, i, text) if c["role"] == "assistant" else None for i, c in enumerate(marked)
        ]
        return _Skeleton(text=text, slots=sorted(slots), spans=spans)

    def _span(self, chats: Sequence[dict[str, Any]], i: int, text: str) -> Span | None:
        """Character span of assistant message ``i`` in ``text``: what rendering it adds after the
        generation prompt, up to the end-of-turn token. None when the template is not prefix-stable here
        (e.g. a conversation that opens with an assistant message)."""
        if i == 0:
            return None
        upto = self.render(chats[: i + 1])
        if not text.startswith(upto):
            return None
        for add_generation_prompt in (True, False):
            before = self.render(chats[:i], add_generation_prompt=add_generation_prompt)
            if upto.startswith(before):
                break
        else:
            return None
        end = len(upto)
        eos = self.tokenizer.eos_token
        if eos and (cut := upto.rfind(eos, len(before))) >= 0:
            end = cut + len(eos)
        return len(before), end
