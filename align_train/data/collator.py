"""Tokenise a :class:`ParallelBatch` with the tokenizer's chat template, loss only on assistant tokens."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from align_train.choices import OBJECTIVE_NAMES, PREFERENCE_OBJECTIVES, ObjectiveName, check_choice
from align_train.data.batch import (
    IGNORE_INDEX,
    ROLE_CHOSEN,
    ROLE_REJECTED,
    ROLE_SFT,
    ParallelBatch,
    TokenBatch,
)
from align_train.data.chat_template import ChatTemplate
from align_train.data.layout import TokenSequence, packed, padded
from schemas import ConfigError


class Collator:
    """Chat-template tokenisation of parallel rows into a padded or a packed :class:`TokenBatch`.

    Labels: only the tokens of assistant messages carry a label, from the first content token through
    the end-of-turn token (``tokenizer.eos_token`` when the template emits it; text the template adds
    after it, such as a newline, is not trained). :class:`~align_train.data.chat_template.ChatTemplate`
    renders each conversation once and finds the character span of each assistant message; the spans become
    token labels through the tokenizer's offsets (so the tokenizer must be a fast one).

    Sequences per row: ``sft`` trains on ``messages`` (for a preference row, on ``messages + chosen``
    with labels on ``chosen`` only); ``dpo``/``orpo`` need preference rows and emit a chosen
    (``messages + chosen``) and a rejected (``messages + rejected``) sequence per row, labels on the
    completion only, adjacent and sharing ``pair_index``.

    Truncation: a sequence longer than ``max_length`` keeps its first ``max_length`` tokens (chosen and
    rejected are cut independently). A sequence left without loss tokens stays in the batch (it still
    counts for its group) and is counted in ``stats["no_loss_tokens"]``; the first token of every
    sequence never has a label, so no position predicts across a sequence boundary.

    Layout (:mod:`align_train.data.layout`): one sequence a row, right-padded; with ``pack=True`` the
    sequences packed one after another in rows of at most ``max_length`` tokens, ``position_ids`` restarting
    at 0 for each sequence and no attention mask; with ``one_row=True`` too, all of them in a single row and
    no token is padding (for :data:`~align_train.modeling.attention.VARLEN_SDPA` attention, whose cost is the
    sequences' squares whatever the rows).

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
        self.template = ChatTemplate(tokenizer)
        if not tokenizer.is_fast:
            msg = (
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: offsets are needed for labels"
            )
            raise ConfigError(msg)
        self.tokenizer = tokenizer
        self.objective = objective
        self.max_length = max_length
        self.pack = pack
        self.one_row = one_row
        # Padded positions are masked and unlabelled, so the id only has to exist in the vocabulary.
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats: Counter[str] = Counter()

    def __call__(self, batch: ParallelBatch) -> TokenBatch:
        if not batch.rows:
            msg = "batch has no rows: expected at least one row to collate"
            raise ValueError(msg)
        groups = {group_id: i for i, group_id in enumerate(batch.group_ids)}
        sequences: list[TokenSequence] = []
        for pair, row in enumerate(batch.rows):
            if row["group_id"] not in groups:
                msg = f"row of group {row['group_id']!r} is not in batch.group_ids={batch.group_ids}"
                raise ValueError(msg)
            sequences.extend(self._row_sequences(row, groups[row["group_id"]], pair))
        self.stats["sequences"] += len(sequences)
        if self.pack:
            capacity = None if self.one_row else self.max_length
            tokens = packed(sequences, capacity=capacity, pad_token_id=self.pad_token_id)
        else:
            tokens = padded(sequences, pad_token_id=self.pad_token_id)
        tokens.group_ids = list(batch.group_ids)
        return tokens

    def _row_sequences(self, row: dict[str, Any], group: int, pair: int) -> list[TokenSequence]:
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
    ) -> TokenSequence:
        """Tokens of ``messages``, labels on the assistant messages from index ``loss_from`` on."""
        chats = [self.template.chat(m) for m in messages]
        text, spans = self.template.rendered(chats)
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
        return TokenSequence(input_ids, labels, group=group, lang=lang, role=role, pair=pair)

    def prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """``messages`` rendered exactly as in training, then the template's generation prompt: the text a
        model continues with its next assistant turn."""
        return self.template.prompt(messages)
