"""Tokenise a :class:`ParallelBatch` with the tokenizer's chat template, loss only on assistant tokens."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from align_train.batch import (
    IGNORE_INDEX,
    ROLE_CHOSEN,
    ROLE_REJECTED,
    ROLE_SFT,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ParallelBatch,
    Segments,
    TokenBatch,
)
from align_train.choices import OBJECTIVE_NAMES, PREFERENCE_OBJECTIVES, ObjectiveName, check_choice
from schemas import ConfigError, Message, canonical_json

_PROBE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Say one."},
    {"role": "assistant", "content": "One."},
    {"role": "user", "content": "Say two."},
    {"role": "assistant", "content": "Two."},
]


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Labels need a chat template to render conversations and a fast tokenizer's character offsets."""
    if not tokenizer.chat_template:
        msg = "tokenizer has no chat_template: use a chat/instruct tokenizer or set tokenizer.chat_template"
        raise ConfigError(msg)
    if not tokenizer.is_fast:
        msg = f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: offsets are needed for labels"
        raise ConfigError(msg)


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
    spans: list[tuple[int, int] | None]

    def spans_in(self, chats: Sequence[dict[str, Any]], text: str) -> list[tuple[int, int] | None] | None:
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

        spans: list[tuple[int, int] | None] = []
        for span in self.spans:
            if span is None:
                spans.append(None)
                continue
            lo, hi = moved(span[0]), moved(span[1])
            if lo is None or hi is None:
                return None
            spans.append((lo, hi))
        return spans


@dataclass
class _Sequence:
    input_ids: list[int]
    labels: list[int]
    group: int
    lang: str
    role: int
    pair: int


class Collator:
    """Chat-template tokenisation of parallel rows into a padded or a packed :class:`TokenBatch`.

    Labels: only the tokens of assistant messages carry a label, from the first content token through
    the end-of-turn token (``tokenizer.eos_token`` when the template emits it; text the template adds
    after it, such as a newline, is not trained). Each message's span is found by rendering the
    conversation up to it, so the template needs no ``{% generation %}`` markers, only to render a
    conversation's prefix as a prefix of the whole (checked once at construction). Those prefix renders
    are done once per conversation structure, so each conversation is rendered once (see
    :meth:`_rendered`); the character spans become token labels through the tokenizer's offsets. Templates that do not
    render ``tool_calls`` get them written into the content as ``<tool_call>\\n{json}\\n</tool_call>``.

    Sequences per row: ``sft`` trains on ``messages`` (for a preference row, on ``messages + chosen``
    with labels on ``chosen`` only); ``dpo``/``orpo`` need preference rows and emit a chosen
    (``messages + chosen``) and a rejected (``messages + rejected``) sequence per row, labels on the
    completion only, adjacent and sharing ``pair_index``.

    Truncation: a sequence longer than ``max_length`` keeps its first ``max_length`` tokens (chosen and
    rejected are cut independently). A sequence left without loss tokens stays in the batch (it still
    counts for its group) and is counted in ``stats["no_loss_tokens"]``; the first token of every
    sequence never has a label, so no position predicts across a sequence boundary.

    Packing (``pack=True``) places the sequences one after another in rows of at most ``max_length``
    tokens (first-fit, longest first), ``position_ids`` restarting at 0 for each sequence and
    ``attention_mask=None``; from such position ids ``transformers.masking_utils`` builds a block-diagonal
    causal mask (sdpa, eager, flex; flash-attention uses them as varlen boundaries), so a packed batch
    computes exactly what the padded batch does. The end of a row shorter than the longest is padding, a
    block of its own that no sequence attends to. Rows rather than one long row, because attention over
    a row costs its length squared under a mask (sdpa, eager)::

        sequences     a0 a1 a2 | b0 b1 | c0 c1 c2 c3          max_length 6
        input_ids    [c0 c1 c2 c3 b0 b1]                     shape [2, 6]
                     [a0 a1 a2 pd pd pd]
        position_ids [ 0  1  2  3  0  1]
                     [ 0  1  2  0  1  2]
        seq_ids      [ 2  2  2  2  1  1]
                     [ 0  0  0 -1 -1 -1]
        attention     c0 c1 c2 c3 b0 b1  (row 0)
                  c0   1
                  c1   1  1
                  c2   1  1  1
                  c3   1  1  1  1
                  b0               1
                  b1               1  1

    With ``one_row=True`` all sequences go into a single row and no token is padding: for
    :data:`~align_train.attention.VARLEN_SDPA` attention, whose cost is the sequences' squares whatever the
    rows (under a mask that row would cost its length squared).

    Call the model with :meth:`TokenBatch.model_inputs` (it sets ``use_cache=False``, without which the
    packed mask is not built).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        objective: ObjectiveName,
        max_length: int,
        pack: bool = False,
        one_row: bool = False,
    ) -> None:
        check_choice("objective", objective, OBJECTIVE_NAMES)
        if max_length < 2:
            msg = f"max_length={max_length} is invalid: expected at least 2 tokens"
            raise ValueError(msg)
        _check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.objective = objective
        self.max_length = max_length
        self.pack = pack
        self.one_row = one_row
        # Padded positions are masked and unlabelled, so the id only has to exist in the vocabulary.
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats: Counter[str] = Counter()
        self._skeletons: dict[str, _Skeleton | None] = {}
        self._inline_tool_calls = "tool_calls" not in tokenizer.chat_template
        probe_text = self._render(_PROBE)
        if any(self._span(_PROBE, i, probe_text) is None for i in (2, 4)):
            msg = (
                "the tokenizer's chat_template does not render a conversation's prefix as a prefix of the "
                "whole conversation, so assistant tokens cannot be located: use a prefix-stable template"
            )
            raise ConfigError(msg)

    def __call__(self, batch: ParallelBatch) -> TokenBatch:
        if not batch.rows:
            msg = "batch has no rows: expected at least one row to collate"
            raise ValueError(msg)
        groups = {group_id: i for i, group_id in enumerate(batch.group_ids)}
        sequences: list[_Sequence] = []
        for pair, row in enumerate(batch.rows):
            if row["group_id"] not in groups:
                msg = f"row of group {row['group_id']!r} is not in batch.group_ids={batch.group_ids}"
                raise ValueError(msg)
            sequences.extend(self._row_sequences(row, groups[row["group_id"]], pair))
        self.stats["sequences"] += len(sequences)
        tokens = self._packed(sequences) if self.pack else self._padded(sequences)
        tokens.group_ids = list(batch.group_ids)
        return tokens

    def _row_sequences(self, row: dict[str, Any], group: int, pair: int) -> list[_Sequence]:
        lang, prompt = row["lang"], row["messages"]
        if row["kind"] != "preference":
            if self.objective in PREFERENCE_OBJECTIVES:
                msg = (
                    f"objective={self.objective!r} needs preference rows, but row ({row['group_id']!r}, "
                    f"{lang!r}) has kind={row['kind']!r}: use objective='sft' for this corpus"
                )
                raise ConfigError(msg)
            return [self._sequence(prompt, loss_from=0, group=group, lang=lang, role=ROLE_SFT, pair=-1)]
        if self.objective == "sft":
            completions = [(row["chosen"], ROLE_SFT, -1)]
        else:
            completions = [(row["chosen"], ROLE_CHOSEN, pair), (row["rejected"], ROLE_REJECTED, pair)]
        return [
            self._sequence(
                [*prompt, *(completion or [])],
                loss_from=len(prompt),
                group=group,
                lang=lang,
                role=role,
                pair=p,
            )
            for completion, role, p in completions
        ]

    def _sequence(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        group: int,
        lang: str,
        loss_from: int,
        role: int,
        pair: int,
    ) -> _Sequence:
        """Tokens of ``messages``, labels on the assistant messages from index ``loss_from`` on."""
        chats = [self._chat(m) for m in messages]
        text, spans = self._rendered(chats)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids: list[int] = encoded["input_ids"]
        starts = np.fromiter((start for start, _ in encoded["offset_mapping"]), np.int64, len(input_ids))
        labelled = np.zeros(len(input_ids), dtype=bool)
        for i in range(loss_from, len(chats)):
            if chats[i]["role"] != "assistant":
                continue
            if spans[i] is None:
                self.stats["assistant_span_not_found"] += 1
                continue
            lo, hi = spans[i]
            labelled |= (starts >= lo) & (starts < hi)
        labelled[0] = False
        labels = np.where(labelled, np.asarray(input_ids, dtype=np.int64), IGNORE_INDEX).tolist()
        if len(input_ids) > self.max_length:
            self.stats["truncated"] += 1
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            self.stats["no_loss_tokens"] += 1
        return _Sequence(input_ids, labels, group=group, lang=lang, role=role, pair=pair)

    def _rendered(self, chats: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int] | None]]:
        """The conversation rendered once, and the character span of each assistant message in it.

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
        text = self._render(chats)
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
        text = self._render(marked)
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

    def _chat(self, message: dict[str, Any]) -> dict[str, Any]:
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
        return self._render([self._chat(m) for m in messages], add_generation_prompt=True)

    def _render(self, chats: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            list(chats), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _span(self, chats: Sequence[dict[str, Any]], i: int, text: str) -> tuple[int, int] | None:
        """Character span of assistant message ``i`` in ``text``: what rendering it adds after the
        generation prompt, up to the end-of-turn token. None when the template is not prefix-stable here
        (e.g. a conversation that opens with an assistant message)."""
        if i == 0:
            return None
        upto = self._render(chats[: i + 1])
        if not text.startswith(upto):
            return None
        for add_generation_prompt in (True, False):
            before = self._render(chats[:i], add_generation_prompt=add_generation_prompt)
            if upto.startswith(before):
                break
        else:
            return None
        end = len(upto)
        eos = self.tokenizer.eos_token
        if eos and (cut := upto.rfind(eos, len(before))) >= 0:
            end = cut + len(eos)
        return len(before), end

    def _padded(self, sequences: list[_Sequence]) -> TokenBatch:
        width = max(len(s.input_ids) for s in sequences)
        shape = (len(sequences), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        seq_ids = torch.full(shape, -1, dtype=torch.long)
        for i, s in enumerate(sequences):
            n = len(s.input_ids)
            input_ids[i, :n] = torch.tensor(s.input_ids)
            labels[i, :n] = torch.tensor(s.labels)
            attention_mask[i, :n] = 1
            seq_ids[i, :n] = i
        position_ids = torch.arange(width).expand(shape).clone()
        return self._batch(sequences, input_ids, labels, position_ids, attention_mask, seq_ids)

    def _packed(self, sequences: list[_Sequence]) -> TokenBatch:
        capacity = sum(len(s.input_ids) for s in sequences) if self.one_row else self.max_length
        rows: list[list[int]] = []
        free: list[int] = []
        for i in sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids)):
            n = len(sequences[i].input_ids)
            row = next((r for r, space in enumerate(free) if space >= n), None)
            if row is None:
                rows.append([])
                free.append(capacity)
                row = len(rows) - 1
            rows[row].append(i)
            free[row] -= n
        width = capacity - min(free)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        seq_ids = torch.full(shape, -1, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for i in members:
                s = sequences[i]
                n = len(s.input_ids)
                input_ids[r, at : at + n] = torch.tensor(s.input_ids)
                labels[r, at : at + n] = torch.tensor(s.labels)
                seq_ids[r, at : at + n] = i
                position_ids[r, at : at + n] = torch.arange(n)
                at += n
            position_ids[r, at:] = torch.arange(width - at)  # the padding: a block of its own
        return self._batch(sequences, input_ids, labels, position_ids, None, seq_ids)

    @staticmethod
    def _batch(
        sequences: list[_Sequence],
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        seq_ids: torch.Tensor,
    ) -> TokenBatch:
        return TokenBatch(
            input_ids=input_ids,
            labels=labels,
            position_ids=position_ids,
            attention_mask=attention_mask,
            seq_ids=seq_ids,
            num_seqs=len(sequences),
            seq_group=torch.tensor([s.group for s in sequences], dtype=torch.long),
            seq_langs=[s.lang for s in sequences],
            seq_role=torch.tensor([s.role for s in sequences], dtype=torch.long),
            pair_index=torch.tensor([s.pair for s in sequences], dtype=torch.long),
            num_loss_tokens=int((labels != IGNORE_INDEX).sum()),
            segments=Segments.of(seq_ids),
        )
