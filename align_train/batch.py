"""The types that travel between the data path, the losses and evaluation: a batch of parallel rows
(:class:`ParallelBatch`, what the sampler yields) and its token tensors (:class:`TokenBatch`, what the
collator makes of it), with the label and role constants they use.

A leaf module: it imports nothing else from ``align_train``, so any module may import it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
"""Label of a token that carries no loss (prompt, padding, the first token of a sequence)."""

ROLE_SFT, ROLE_CHOSEN, ROLE_REJECTED = 0, 1, 2
"""``TokenBatch.seq_role`` of an SFT sequence and of the chosen and rejected completion of a pair."""

# How a tool call is written into the assistant text when the chat template cannot render ``tool_calls``
# (the Hermes / Qwen convention); evaluation reads generated calls back in the same format.
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class ParallelBatch:
    """Rows of one batch; for policies ``all``/``sample`` they are whole groups, in ``group_ids`` order."""

    rows: list[dict[str, Any]]
    group_ids: list[str]
    lang_counts: dict[str, int]

    @classmethod
    def of(cls, rows: list[dict[str, Any]]) -> ParallelBatch:
        """A batch of ``rows``; group ids in order of first appearance."""
        group_ids = list(dict.fromkeys(row["group_id"] for row in rows))
        counts = Counter(row["lang"] for row in rows)
        return cls(rows=rows, group_ids=group_ids, lang_counts=dict(sorted(counts.items())))


@dataclass
class TokenBatch:
    """Token tensors of one batch plus, per sequence, its group, language and preference role.

    ``seq_role`` is :data:`ROLE_SFT`, :data:`ROLE_CHOSEN` or :data:`ROLE_REJECTED`; the chosen and rejected
    sequences of one preference pair share ``pair_index`` (-1 for SFT sequences). A group, language and
    role name one sequence of the corpus (:meth:`seq_keys`).
    """

    input_ids: torch.LongTensor
    labels: torch.LongTensor
    position_ids: torch.LongTensor
    attention_mask: torch.LongTensor | None
    seq_ids: torch.LongTensor
    num_seqs: int
    seq_group: torch.LongTensor
    seq_langs: list[str]
    seq_role: torch.LongTensor
    pair_index: torch.LongTensor
    num_loss_tokens: int
    group_ids: list[str] = dataclasses.field(default_factory=list)
    """The group id of each ``seq_group`` index (empty for batches made by hand)."""

    def seq_keys(self) -> list[tuple[str, str, int]]:
        """``(group_id, lang, role)`` of each sequence: what names it across batches and epochs."""
        if not self.group_ids:
            msg = "this batch has no group_ids (it was not made by the Collator): sequences cannot be named"
            raise ValueError(msg)
        groups = self.seq_group.tolist()
        return [
            (self.group_ids[g], lang, role)
            for g, lang, role in zip(groups, self.seq_langs, self.seq_role.tolist(), strict=True)
        ]

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> TokenBatch:
        """The batch on ``device``; ``non_blocking`` copies from pinned memory overlap compute on a GPU."""
        moved = {
            f.name: value.to(device, non_blocking=non_blocking)
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> TokenBatch:
        """The batch in page-locked host memory, for asynchronous copies to a GPU."""
        pinned = {
            f.name: value.pin_memory()
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **pinned)

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face causal LM's forward.

        ``use_cache=False`` matters for packed batches: when the model builds a cache it skips the
        packed-sequence detection on ``position_ids`` and attends across sequence boundaries.
        """
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
            "use_cache": False,
        }

    def labelled_inputs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`align_train.head.LabelledLM`: the model inputs and the labels."""
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
            "labels": self.labels,
            "seq_ids": self.seq_ids,
            "num_seqs": self.num_seqs,
        }
