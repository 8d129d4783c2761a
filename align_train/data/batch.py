"""The types that travel between the data path, the losses and evaluation: a batch of parallel rows
(:class:`ParallelBatch`, what the sampler yields) and its token tensors (:class:`TokenBatch`, what the
collator makes of it, with the :class:`Segments` layout that variable-length attention reads), with the
label and role constants they use.

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


BUCKET_RATIO = 1.25
"""A length bucket of :class:`Segments` holds sequences at least ``1 / BUCKET_RATIO`` of its longest one."""


@dataclass(frozen=True)
class Segments:
    """Where the sequences of a ``[rows × width]`` batch lie among its flattened tokens, in length buckets.

    ``gather`` lists, bucket after bucket, each sequence's flat token indices padded to its bucket's length
    (a padding slot repeats the sequence's first token: under causal attention no real token sees it);
    ``buckets`` gives each bucket's ``(sequences, length)``. ``scatter`` maps every flat token to its slot in
    ``gather``; a token of no sequence (padding) maps to slot 0, and nothing reads what it gets back.
    """

    gather: torch.Tensor
    buckets: tuple[tuple[int, int], ...]
    scatter: torch.Tensor

    @classmethod
    def of(cls, seq_ids: torch.Tensor) -> Segments:
        """The layout of a batch whose ``seq_ids`` name each token's sequence (negative: padding).

        A sequence is a run of equal ids within a row, as the collator lays them out.
        """
        width = seq_ids.shape[1]
        flat = seq_ids.reshape(-1).cpu()
        boundary = torch.ones(flat.numel(), dtype=torch.bool)
        boundary[1:] = flat[1:] != flat[:-1]
        boundary[::width] = True
        starts = boundary.nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([flat.numel()]))
        real = flat[starts] >= 0
        starts, lengths = starts[real], lengths[real]
        order = torch.argsort(lengths, descending=True, stable=True)
        starts, lengths = starts[order], lengths[order]

        buckets: list[tuple[int, int]] = []
        for n in lengths.tolist():  # longest first: a bucket's first sequence sets its length
            if buckets and n * BUCKET_RATIO >= buckets[-1][1]:
                buckets[-1] = (buckets[-1][0] + 1, buckets[-1][1])
            else:
                buckets.append((1, n))
        padded = torch.tensor([length for count, length in buckets for _ in range(count)], dtype=torch.long)
        slots = int(padded.sum())
        first_slot = torch.repeat_interleave(torch.cumsum(padded, 0) - padded, padded)
        offset = torch.arange(slots) - first_slot
        used = offset < torch.repeat_interleave(lengths, padded)
        gather = torch.repeat_interleave(starts, padded) + torch.where(used, offset, 0)
        scatter = torch.zeros(flat.numel(), dtype=torch.long)
        scatter[gather[used]] = torch.arange(slots)[used]
        return cls(gather, tuple(buckets), scatter)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Segments:
        move = {"device": device, "non_blocking": non_blocking}
        return Segments(self.gather.to(**move), self.buckets, self.scatter.to(**move))

    def pin_memory(self) -> Segments:
        return Segments(self.gather.pin_memory(), self.buckets, self.scatter.pin_memory())


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
    segments: Segments | None = None
    """The sequences' layout for variable-length attention (None for batches made by hand)."""

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
            if isinstance(value := getattr(self, f.name), torch.Tensor | Segments)
        }
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> TokenBatch:
        """The batch in page-locked host memory, for asynchronous copies to a GPU."""
        pinned = {
            f.name: value.pin_memory()
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor | Segments)
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
        """Keyword arguments for :class:`align_train.modeling.head.LabelledLM`: the model inputs and the
        labels."""
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
            "labels": self.labels,
            "seq_ids": self.seq_ids,
            "num_seqs": self.num_seqs,
            "segments": self.segments,
        }
