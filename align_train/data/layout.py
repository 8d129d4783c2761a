"""Tokenised sequences laid out as a :class:`~align_train.data.batch.TokenBatch`: padded, one sequence a row,
or packed, several a row.

Packing places the sequences one after another in rows of at most ``capacity`` tokens (first-fit, longest
first), ``position_ids`` restarting at 0 for each sequence and ``attention_mask=None``; from such position
ids ``transformers.masking_utils`` builds a block-diagonal causal mask (sdpa, eager, flex;
flash-attention uses them as varlen boundaries), so a packed batch computes exactly what the padded batch
does. The end of a row shorter than the longest is padding, a block of its own that no sequence attends
to. Rows rather than one long row, because attention over a row costs its length squared under a mask
(sdpa, eager)::

    sequences     a0 a1 a2 | b0 b1 | c0 c1 c2 c3          capacity 6
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

A capacity of the sequences' total length puts them all in a single row, with no padding: for
:data:`~align_train.modeling.attention.VARLEN_SDPA` attention, whose cost is the sequences' squares whatever
the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align_train.data.batch import IGNORE_INDEX, Segments, TokenBatch


@dataclass
class TokenSequence:
    """One sequence's tokens and labels, with what :class:`TokenBatch` records of it."""

    input_ids: list[int]
    labels: list[int]
    group: int
    lang: str
    role: int
    pair: int


def padded(sequences: list[TokenSequence], *, pad_token_id: int) -> TokenBatch:
    """One sequence a row, right-padded to the longest, with an attention mask."""
    width = max(len(s.input_ids) for s in sequences)
    shape = (len(sequences), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
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
    return _batch(sequences, input_ids, labels, position_ids, attention_mask, seq_ids)


def packed(sequences: list[TokenSequence], *, capacity: int | None, pad_token_id: int) -> TokenBatch:
    """The sequences packed into rows of at most ``capacity`` tokens (None: all in one row)."""
    if capacity is None:
        capacity = sum(len(s.input_ids) for s in sequences)
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
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
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
    return _batch(sequences, input_ids, labels, position_ids, None, seq_ids)


def _batch(
    sequences: list[TokenSequence],
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
