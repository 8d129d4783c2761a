"""Coupled cross-lingual terms: losses that exist only because a group's translations share a micro-batch.

SFT, DPO and ORPO are sums of per-example losses: which rows share a batch changes them only through
optimiser dynamics. The terms here compare the sequences of one group (the anchor-language example and
its translations) inside the micro-batch, so they see a pair only when the batch policy puts a group's
languages together (``policy: all`` or ``sample``); on shuffled batches they have no pair and are 0.

``cosine``
    ``1 − cos(pool(translation), pool(anchor))`` per translation, the anchor's pooled state a constant
    target. With no negatives nothing stops every sequence from drifting to one point; it only pulls.
``contrastive``
    InfoNCE over the micro-batch (van den Oord et al. 2018) with every sequence of the same group as a
    positive (the multi-positive form of Khosla et al. 2020, eq. 2) and the sequences of the other groups
    as negatives, as in AFP (Li et al. 2023, arXiv 2311.08089) and AlignX (arXiv 2509.24338). The
    negatives are what keeps the representations apart; with one group per micro-batch it has none.
``consistency``
    an output-level term: a translation's answer should be as likely, per token, as its anchor's answer
    to the parallel prompt (the likelihood matching of DCO, arXiv 2603.04678). It is one-sided,
    ``relu(m_anchor − m_translation)²`` with ``m`` the mean label log-probability, so a language that
    lags its anchor is pulled up in proportion to its gap and one that is ahead is left alone. It needs no
    hidden states, works on the labelled-only output layer and costs nothing beyond the objective's
    forward pass. (A KL between output distributions, as in CrossConST, arXiv 2401.05861, would need the
    same answer forced after every language's prompt: extra forward passes the batch does not hold.)

Sign convention: each term is a loss to minimise, a mean over its pairs (queries) in the micro-batch,
and 0, still attached to the graph, when the micro-batch holds none. The anchor language is a constant
target in every term (its sequences get no gradient from them), so the terms move the other languages
towards English and leave English alone. Pooling averages a chosen layer's hidden states over a
sequence's loss tokens (the answer). In preference batches ``cosine`` pairs sequences of the same role;
``contrastive`` and ``consistency`` use the chosen answers only, the ones the model should give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from align_train.choices import AlignmentLoss
from align_train.data.batch import IGNORE_INDEX, ROLE_REJECTED, TokenBatch
from align_train.modeling.logps import SeqLogps
from align_train.training.losses import LossOutput, means_of


class CoupledInputs(NamedTuple):
    """What a term reads from the policy's forward pass: the label log-probabilities per sequence and,
    for the representation terms, one layer's hidden states ``[batch, time, hidden]``."""

    logps: SeqLogps
    hidden: torch.Tensor | None


@dataclass(frozen=True)
class AlignmentSettings:
    """The coupled term of a run: which one, its weight, the hidden layer it pools (an index into
    ``hidden_states``: 0 the embeddings, -1 the last layer after the final norm) and the contrastive
    temperature."""

    loss: AlignmentLoss = "cosine"
    weight: float = 0.0
    layer: int = -1
    temperature: float = 0.1

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @property
    def weighs_logps(self) -> bool:
        """Whether the term is a function of the label log-probabilities: the loss then weighs tokens
        unequally (see :func:`align_train.modeling.head.labelled_logps`'s ``uniform_weights``)."""
        return self.enabled and not COUPLED[self.loss].needs_hidden

    @property
    def hidden_layer(self) -> int | None:
        """The layer whose hidden states the forward pass must return, or None when the term reads none."""
        return self.layer if self.enabled and COUPLED[self.loss].needs_hidden else None


def cosine_loss(hidden: torch.Tensor, batch: TokenBatch, *, anchor_lang: str) -> LossOutput:
    """Mean over (translation, anchor) pairs of the same group and role of ``1 − cos(pool(t), pool(a))``."""
    pooled, counts = pool(hidden, batch)
    members, anchors = anchor_pairs(batch, counts, anchor_lang)
    if not members:
        return LossOutput(loss=pooled[:0].sum(), metrics={"align/pairs": 0.0})
    members_t = torch.tensor(members, device=pooled.device)
    anchors_t = torch.tensor(anchors, device=pooled.device)
    cosine = F.cosine_similarity(pooled[members_t], pooled[anchors_t].detach(), dim=-1)
    loss = (1.0 - cosine).mean()
    return LossOutput(
        loss=loss, metrics={"align/pairs": float(len(members))} | means_of(**{"align/cosine": cosine})
    )


def contrastive_loss(
    hidden: torch.Tensor, batch: TokenBatch, *, anchor_lang: str, temperature: float
) -> LossOutput:
    """Multi-positive InfoNCE over the micro-batch's answers, one query per translation.

    For a translation ``q`` with keys ``k`` (every other answer of the micro-batch, anchor-language keys
    detached) and positives ``P(q)`` (the keys of its group)::

        L_q = −1/|P(q)| Σ_{p ∈ P(q)} log [ exp(s_qp / τ) / Σ_{k ≠ q} exp(s_qk / τ) ],   s = cosine

    A translation counts as a query when the micro-batch holds at least one positive and one negative for
    it; the loss is the mean of ``L_q`` over the queries.
    """
    if not temperature > 0:
        msg = f"temperature={temperature} must be > 0"
        raise ValueError(msg)
    pooled, counts = pool(hidden, batch)
    roles = batch.seq_role.tolist()
    keep = [i for i in range(batch.num_seqs) if counts[i] and roles[i] != ROLE_REJECTED]
    if len(keep) < 3:  # a query needs itself, a positive and a negative
        return LossOutput(loss=pooled[:0].sum(), metrics={"align/pairs": 0.0})
    device = pooled.device
    keep_t = torch.tensor(keep, device=device)
    groups = batch.seq_group.to(device)[keep_t]
    is_anchor = torch.tensor([batch.seq_langs[i] == anchor_lang for i in keep], device=device)
    z = F.normalize(pooled[keep_t], dim=-1)
    keys = torch.where(is_anchor[:, None], z.detach(), z)
    self_mask = torch.eye(len(keep), dtype=torch.bool, device=device)
    positive = (groups[:, None] == groups[None, :]) & ~self_mask
    negative = groups[:, None] != groups[None, :]
    queries = ~is_anchor & positive.any(1) & negative.any(1)
    if not bool(queries.any()):
        return LossOutput(loss=pooled[:0].sum(), metrics={"align/pairs": 0.0})
    similarity = z[queries] @ keys.T
    logits = (similarity / temperature).masked_fill(self_mask[queries], float("-inf"))
    log_probs = logits - logits.logsumexp(dim=1, keepdim=True)
    pos = positive[queries]
    losses = -(log_probs.masked_fill(~pos, 0.0).sum(1) / pos.sum(1))
    best = similarity.masked_fill(self_mask[queries], float("-inf")).argmax(1)
    metrics = {"align/pairs": float(len(losses))} | means_of(
        **{
            "align/accuracy": pos.gather(1, best[:, None]).float(),
            "align/cosine": similarity[pos],
            "align/cosine_negative": similarity[negative[queries]],
        }
    )
    return LossOutput(loss=losses.mean(), metrics=metrics)


def consistency_loss(logps: SeqLogps, batch: TokenBatch, *, anchor_lang: str) -> LossOutput:
    """Mean over (translation, anchor) chosen answers of one group of ``relu(m_a − m_t)²``, ``m`` the mean
    label log-probability of an answer (nats per token), ``m_a`` a constant."""
    counts = logps.counts.tolist()
    roles = batch.seq_role.tolist()
    members, anchors = anchor_pairs(batch, counts, anchor_lang)
    pairs = [(m, a) for m, a in zip(members, anchors, strict=True) if roles[m] != ROLE_REJECTED]
    if not pairs:
        return LossOutput(loss=logps.sums[:0].sum(), metrics={"align/pairs": 0.0})
    means = logps.means
    members_t = torch.tensor([m for m, _ in pairs], device=means.device)
    anchors_t = torch.tensor([a for _, a in pairs], device=means.device)
    gap = means[anchors_t].detach() - means[members_t]
    losses = F.relu(gap).square()
    metrics = {"align/pairs": float(len(pairs))} | means_of(
        **{"align/gap": gap, "align/lagging": (gap > 0).float()}
    )
    return LossOutput(loss=losses.mean(), metrics=metrics)


@dataclass(frozen=True)
class CoupledTerm:
    """One coupled term as the training loop calls it, and whether it needs hidden states."""

    needs_hidden: bool
    compute: Callable[[CoupledInputs, TokenBatch, AlignmentSettings, str], LossOutput]


def _cosine(inputs: CoupledInputs, batch: TokenBatch, settings: AlignmentSettings, anchor: str) -> LossOutput:
    return cosine_loss(_hidden(inputs), batch, anchor_lang=anchor)


def _contrastive(
    inputs: CoupledInputs, batch: TokenBatch, settings: AlignmentSettings, anchor: str
) -> LossOutput:
    return contrastive_loss(_hidden(inputs), batch, anchor_lang=anchor, temperature=settings.temperature)


def _consistency(
    inputs: CoupledInputs, batch: TokenBatch, settings: AlignmentSettings, anchor: str
) -> LossOutput:
    return consistency_loss(inputs.logps, batch, anchor_lang=anchor)


COUPLED: dict[AlignmentLoss, CoupledTerm] = {
    "cosine": CoupledTerm(needs_hidden=True, compute=_cosine),
    "contrastive": CoupledTerm(needs_hidden=True, compute=_contrastive),
    "consistency": CoupledTerm(needs_hidden=False, compute=_consistency),
}


def coupled_loss(
    inputs: CoupledInputs, batch: TokenBatch, settings: AlignmentSettings, *, anchor_lang: str
) -> LossOutput:
    """The configured coupled term of one micro-batch (unweighted: :class:`~align_train.training.objectives.LossScale`
    weighs it)."""
    return COUPLED[settings.loss].compute(inputs, batch, settings, anchor_lang)


def _hidden(inputs: CoupledInputs) -> torch.Tensor:
    if inputs.hidden is None:
        msg = "this coupled term pools hidden states, but the forward pass returned none (hidden_layer=None)"
        raise ValueError(msg)
    return inputs.hidden


def pool(hidden: torch.Tensor, batch: TokenBatch) -> tuple[torch.Tensor, list[int]]:
    """Per sequence, the mean of ``hidden`` over its loss tokens (at least in float32) ``[num_seqs, hidden]``, and how
    many loss tokens each has (a sequence without any pools to zeros)."""
    if hidden.shape[:-1] != batch.labels.shape:
        msg = (
            f"hidden_states {tuple(hidden.shape)} must be [batch, time, hidden] over labels "
            f"{tuple(batch.labels.shape)}"
        )
        raise ValueError(msg)
    pooled_tokens = (batch.labels != IGNORE_INDEX) & (batch.seq_ids >= 0)
    owners = batch.seq_ids[pooled_tokens]
    counts = torch.bincount(owners, minlength=batch.num_seqs)
    dtype = torch.promote_types(hidden.dtype, torch.float32)  # bf16 states pool in float32
    sums = hidden.new_zeros(batch.num_seqs, hidden.shape[-1], dtype=dtype)
    pooled = sums.index_add(0, owners, hidden[pooled_tokens].to(dtype)) / counts.clamp(min=1)[:, None]
    return pooled, counts.tolist()


def anchor_pairs(batch: TokenBatch, counts: Sequence[int], anchor_lang: str) -> tuple[list[int], list[int]]:
    """(translation, anchor) sequence indices sharing group and role, both with loss tokens."""
    groups = batch.seq_group.tolist()
    roles = batch.seq_role.tolist()
    anchor_of = {
        (groups[i], roles[i]): i
        for i, lang in enumerate(batch.seq_langs)
        if lang == anchor_lang and counts[i]
    }
    members: list[int] = []
    anchors: list[int] = []
    for i, lang in enumerate(batch.seq_langs):
        anchor = anchor_of.get((groups[i], roles[i]))
        if lang != anchor_lang and counts[i] and anchor is not None:
            members.append(i)
            anchors.append(anchor)
    return members, anchors
