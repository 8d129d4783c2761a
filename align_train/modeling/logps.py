"""Label log-probabilities per sequence: what every objective and the evaluation's loss are computed from.

Position ``t`` of a batch scores label ``t + 1`` when both belong to the same sequence
(:func:`scored_positions`); a sequence's :class:`SeqLogps` is the sum and count of ``log p(label)`` over
its scored positions. :func:`sequence_logps` computes them from full logits (evaluation, and training on
models whose output layer cannot run on labelled positions alone);
:class:`align_train.modeling.head.LabelledLM` computes the same values without full logits.

Log-probabilities are natural logs (≤ 0) of the labels under the model. Training
(:mod:`align_train.training.losses`) and evaluation (:mod:`align_train.eval.evaluate`) both read them from
here, so neither imports the other.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from align_train.data.batch import IGNORE_INDEX


class SeqLogps(NamedTuple):
    """Per-sequence log-probability of the label tokens: ``sums[i]`` over ``counts[i]`` tokens."""

    sums: torch.Tensor
    counts: torch.Tensor

    @property
    def means(self) -> torch.Tensor:
        """Length-normalised log-probability; 0 for a sequence without loss tokens."""
        return self.sums / self.counts.clamp(min=1)

    @classmethod
    def of_tokens(cls, token_logps: torch.Tensor, owners: torch.Tensor, num_seqs: int) -> SeqLogps:
        """Per-sequence sums of the log-probabilities of scored tokens, ``owners[i]`` owning token ``i``."""
        sums = token_logps.new_zeros(num_seqs).index_add(0, owners, token_logps)
        return cls(sums=sums, counts=torch.bincount(owners, minlength=num_seqs))


def scored_positions(
    labels: torch.Tensor, seq_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The positions that score a label, as ``(mask [batch, time − 1], targets [N], owners [N])``.

    Position ``t`` scores label ``t + 1``. In a packed row the last token of one sequence sits before the
    first token of the next; a position and its label must belong to the same sequence, so packed and
    padded layouts score the same tokens. ``owners`` are the sequence indices of the scored tokens.
    """
    if labels.shape != seq_ids.shape:
        msg = f"labels {tuple(labels.shape)} and seq_ids {tuple(seq_ids.shape)} must agree on [batch, time]"
        raise ValueError(msg)
    targets = labels[:, 1:]
    owners = seq_ids[:, 1:]
    scored = (targets != IGNORE_INDEX) & (owners >= 0) & (owners == seq_ids[:, :-1])
    return scored, targets[scored], owners[scored]


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, seq_ids: torch.Tensor, num_seqs: int
) -> SeqLogps:
    """Sum and count of ``log p(label)`` per sequence from full ``logits`` ``[batch, time, vocab]``.

    The positions are those of :func:`scored_positions`; log-probabilities are computed in float32 on them
    only. Training computes the same values without full logits
    (:class:`align_train.modeling.head.LabelledLM`).
    """
    if logits.shape[:-1] != labels.shape or labels.shape != seq_ids.shape:
        msg = (
            f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and seq_ids {tuple(seq_ids.shape)} "
            "must agree on [batch, time]"
        )
        raise ValueError(msg)
    scored, targets, owners = scored_positions(labels, seq_ids)
    token_logps = -F.cross_entropy(logits[:, :-1][scored].float(), targets, reduction="none")
    return SeqLogps.of_tokens(token_logps, owners, num_seqs)
