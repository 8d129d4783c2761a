"""Training objectives over a model's label log-probabilities and a
:class:`~align_train.data.batch.TokenBatch`.

Sign convention, for every function here: a loss is a quantity to minimise; log-probabilities are natural
logs (≤ 0) of the labels under the model, and a reward or log-odds above 0 means the model prefers the
chosen completion.

Each loss sums over its units (loss tokens for SFT, preference pairs for DPO/ORPO) and divides by a count
the caller may pass for the whole accumulation window, so every unit weighs the same whatever the split of
the window into micro-batches. :mod:`align_train.training.objectives` ties each objective name to its loss and
decides that count for the training loop.

The SFT, DPO and ORPO losses take the policy's :class:`~align_train.modeling.logps.SeqLogps`, the per-sequence
sums of ``log p(label)``: from full logits with :func:`~align_train.modeling.logps.sequence_logps`, or without
them in training (:mod:`align_train.modeling.head`). The coupled cross-lingual
terms are in :mod:`align_train.training.coupled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from align_train.data.batch import ROLE_CHOSEN, ROLE_REJECTED, TokenBatch
from align_train.modeling.logps import SeqLogps


class LossOutput(NamedTuple):
    loss: torch.Tensor
    metrics: dict[str, float]


def sft_loss(logps: SeqLogps, batch: TokenBatch, *, num_loss_tokens: int | None = None) -> LossOutput:
    """Token cross-entropy: ``−Σ log p(label) / num_loss_tokens`` from the policy's :class:`SeqLogps`.

    ``num_loss_tokens`` is the count over the whole accumulation window (the loop sums
    :attr:`TokenBatch.num_loss_tokens` of its micro-batches); it defaults to this batch's own count.
    """
    sums = logps.sums.detach().tolist()
    counts = logps.counts.tolist()
    tokens = sum(counts)
    loss = -logps.sums.sum() / _denominator("num_loss_tokens", num_loss_tokens, tokens)
    metrics = {"loss_tokens": float(tokens)}
    if tokens:
        metrics["nll"] = -sum(sums) / tokens
    metrics |= _by_lang("nll", [-s for s in sums], counts, batch.seq_langs)
    return LossOutput(loss=loss, metrics=metrics)


def dpo_loss(
    policy: SeqLogps, reference: SeqLogps, batch: TokenBatch, *, beta: float, num_pairs: int | None = None
) -> LossOutput:
    """Sigmoid DPO (Rafailov et al. 2023, eq. 7), summed over pairs and divided by ``num_pairs``.

    Per pair: ``−log σ(β[(π_c − ref_c) − (π_r − ref_r)])`` with sequence log-probability sums; the
    implicit rewards are ``β(π − ref)``. The reference is treated as a constant.
    """
    _check_beta(beta)
    chosen, rejected, unscored = _scored_pairs(policy, batch)
    if not len(chosen):
        return _no_scored_pairs(policy, unscored)
    ref = reference.sums.detach()
    chosen_rewards = beta * (policy.sums[chosen] - ref[chosen])
    rejected_rewards = beta * (policy.sums[rejected] - ref[rejected])
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    loss = losses.sum() / _denominator("num_pairs", num_pairs, len(chosen))
    langs = [batch.seq_langs[i] for i in chosen.tolist()]
    metrics = _preference_metrics(chosen_rewards, rejected_rewards, langs, unscored)
    metrics |= means_of(**{"logps/chosen": policy.sums[chosen], "logps/rejected": policy.sums[rejected]})
    return LossOutput(loss=loss, metrics=metrics)


def orpo_loss(
    policy: SeqLogps, batch: TokenBatch, *, beta: float, num_pairs: int | None = None
) -> LossOutput:
    """ORPO (Hong et al. 2024, eqs. 3–7), summed over pairs and divided by ``num_pairs``.

    Per pair: ``L_SFT + β · L_OR`` where ``P = exp(mean log p)`` is the length-normalised likelihood
    (eq. 3), ``L_SFT = −log P(chosen)``, ``odds = P / (1 − P)`` (eq. 4) and
    ``L_OR = −log σ(log odds(chosen) − log odds(rejected))`` (eq. 7). TRL's ORPOTrainer computes the same
    odds-ratio term; its NLL term averages over all tokens (prompt included) of the batch's chosen sequences.
    """
    _check_beta(beta)
    chosen, rejected, unscored = _scored_pairs(policy, batch)
    if not len(chosen):
        return _no_scored_pairs(policy, unscored)
    # P = 1 exactly would give infinite odds; keep log P just below 0.
    means = policy.means.clamp(max=-torch.finfo(policy.sums.dtype).tiny)
    chosen_logps, rejected_logps = means[chosen], means[rejected]
    log_odds = (chosen_logps - rejected_logps) - (_log1mexp(chosen_logps) - _log1mexp(rejected_logps))
    or_losses = -F.logsigmoid(log_odds)
    nll = -chosen_logps
    loss = (nll + beta * or_losses).sum() / _denominator("num_pairs", num_pairs, len(chosen))
    langs = [batch.seq_langs[i] for i in chosen.tolist()]
    metrics = _preference_metrics(beta * chosen_logps, beta * rejected_logps, langs, unscored)
    metrics |= means_of(nll=nll, or_loss=or_losses, log_odds=log_odds)
    return LossOutput(loss=loss, metrics=metrics)


def _preference_pairs(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the chosen and of the rejected sequence of each pair, in ``pair_index`` order."""
    roles = batch.seq_role.cpu()
    pair_index = batch.pair_index.cpu()
    chosen = (roles == ROLE_CHOSEN).nonzero().squeeze(1)
    rejected = (roles == ROLE_REJECTED).nonzero().squeeze(1)
    chosen = chosen[pair_index[chosen].argsort()]
    rejected = rejected[pair_index[rejected].argsort()]
    chosen_pairs = pair_index[chosen]
    if (
        len(chosen) == 0
        or not torch.equal(chosen_pairs, pair_index[rejected])
        or len(chosen_pairs.unique()) != len(chosen_pairs)
    ):
        msg = (
            f"batch has {len(chosen)} chosen and {len(rejected)} rejected sequences over pair_index "
            f"{pair_index.tolist()}; a preference objective needs at least one pair and exactly one chosen "
            "(seq_role 1) and one rejected (seq_role 2) sequence per pair_index: collate preference rows with "
            "objective 'dpo' or 'orpo'"
        )
        raise ValueError(msg)
    return chosen, rejected


def _scored_pairs(policy: SeqLogps, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Chosen and rejected indices of the pairs with loss tokens on both sides, and how many pairs lack them.

    A completion left without loss tokens (cut by ``max_length``) carries no preference: its pair is left
    out of the loss and counted in the ``pairs_unscored`` metric.
    """
    chosen, rejected = _preference_pairs(batch)
    counts = policy.counts.cpu()
    scored = (counts[chosen] > 0) & (counts[rejected] > 0)
    device = policy.sums.device
    return chosen[scored].to(device), rejected[scored].to(device), int((~scored).sum())


def _no_scored_pairs(policy: SeqLogps, unscored: int) -> LossOutput:
    """A zero loss still attached to the graph, so the backward pass runs as for any batch."""
    return LossOutput(loss=policy.sums[:0].sum(), metrics={"pairs": 0.0, "pairs_unscored": float(unscored)})


def num_pairs(batch: TokenBatch) -> int:
    """Number of preference pairs in ``batch``: the unit DPO and ORPO are normalised by."""
    return int((batch.seq_role == ROLE_CHOSEN).sum())


def _denominator(name: str, value: int | None, batch_count: int) -> int:
    """The window count ``value`` (at least this batch's ``batch_count``), or the batch's own count."""
    if value is None:
        return max(batch_count, 1)
    if value < max(batch_count, 1):
        msg = (
            f"{name}={value} is less than this batch's {max(batch_count, 1)}: pass the count over the "
            "whole accumulation window, which includes this batch"
        )
        raise ValueError(msg)
    return value


def _check_beta(beta: float) -> None:
    if not beta > 0:
        msg = f"beta={beta} must be > 0"
        raise ValueError(msg)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for ``x < 0``, accurate on both sides of ``−log 2`` (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _preference_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, langs: Sequence[str], unscored: int
) -> dict[str, float]:
    correct = (chosen_rewards > rejected_rewards).float()
    metrics = {"pairs": float(len(langs)), "pairs_unscored": float(unscored)}
    metrics |= means_of(
        **{
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margin": chosen_rewards - rejected_rewards,
            "rewards/accuracy": correct,
        }
    )
    return metrics | _by_lang("rewards/accuracy", correct.tolist(), [1] * len(langs), langs)


def means_of(**values: torch.Tensor) -> dict[str, float]:
    """Batch means of detached tensors, read back to the host in one transfer."""
    stacked = torch.stack([v.detach().float().mean() for v in values.values()]).tolist()
    return dict(zip(values, stacked, strict=True))


def _by_lang(
    name: str, totals: Sequence[float], weights: Sequence[int], langs: Sequence[str]
) -> dict[str, float]:
    """``name/<lang>``: weighted mean of ``totals`` per language, for languages with any weight."""
    sums: dict[str, list[float]] = {}
    for total, weight, lang in zip(totals, weights, langs, strict=True):
        entry = sums.setdefault(lang, [0.0, 0.0])
        entry[0] += total
        entry[1] += weight
    return {f"{name}/{lang}": total / weight for lang, (total, weight) in sorted(sums.items()) if weight}
