"""Each training objective as the loop uses it, and how micro-batch losses add up to a step's loss.

:data:`OBJECTIVES` maps every name of :data:`align_train.config.OBJECTIVE_NAMES` to its loss from
:mod:`align_train.training.losses`, whether it needs a frozen reference model, and the unit it averages over.
:class:`LossScale` is the one place that normalises a micro-batch's loss within an optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from align_train.choices import ObjectiveName
from align_train.data.batch import TokenBatch
from align_train.distributed import Runtime, all_sum
from align_train.modeling.logps import SeqLogps
from align_train.training.losses import LossOutput, dpo_loss, num_pairs, orpo_loss, sft_loss


class ObjectiveFn(Protocol):
    def __call__(
        self, policy: SeqLogps, batch: TokenBatch, *, reference: SeqLogps | None, beta: float, count: int
    ) -> LossOutput: ...


@dataclass(frozen=True)
class Objective:
    """What the training loop needs to know about one objective.

    ``compute`` takes the policy's label log-probabilities, the batch, the reference's (computed under
    ``torch.no_grad``, when ``needs_reference``) and ``count``: the sum of ``count_units`` over the
    micro-batches of the accumulation window. ``token_mean`` says that the loss weighs every label token
    alike, which lets the output layer compute its gradients in the forward pass
    (:func:`align_train.modeling.head.labelled_logps`).
    """

    needs_reference: bool
    compute: ObjectiveFn
    count_units: Callable[[TokenBatch], int]
    token_mean: bool = False


def _sft(
    policy: SeqLogps, batch: TokenBatch, *, reference: SeqLogps | None, beta: float, count: int
) -> LossOutput:
    return sft_loss(policy, batch, num_loss_tokens=count)


def _dpo(
    policy: SeqLogps, batch: TokenBatch, *, reference: SeqLogps | None, beta: float, count: int
) -> LossOutput:
    if reference is None:
        msg = "objective 'dpo' needs reference log-probabilities (reference=None received)"
        raise ValueError(msg)
    return dpo_loss(policy, reference, batch, beta=beta, num_pairs=count)


def _orpo(
    policy: SeqLogps, batch: TokenBatch, *, reference: SeqLogps | None, beta: float, count: int
) -> LossOutput:
    return orpo_loss(policy, batch, beta=beta, num_pairs=count)


def _loss_tokens(batch: TokenBatch) -> int:
    return batch.num_loss_tokens


OBJECTIVES: dict[ObjectiveName, Objective] = {
    "sft": Objective(needs_reference=False, compute=_sft, count_units=_loss_tokens, token_mean=True),
    "dpo": Objective(needs_reference=True, compute=_dpo, count_units=num_pairs),
    "orpo": Objective(needs_reference=False, compute=_orpo, count_units=num_pairs),
}


@dataclass(frozen=True)
class LossScale:
    """How much each micro-batch's loss weighs in an optimizer step: the loss normalisation of the loop.

    A step's window is ``grad_accum`` micro-batches on each of ``world_size`` ranks; its objective is the
    mean over every loss unit of the window (tokens for SFT, pairs for DPO and ORPO), whatever the split of
    the window into micro-batches and ranks. Three factors make the accumulated gradients add up to it:

    1. ``units``, the count over the whole window on all ranks, is the ``count`` each micro-batch's
       objective divides its sum by, so that a unit weighs the same in every micro-batch and on every rank;
    2. DDP and FSDP average gradients over ranks, but ``units`` already spans all ranks:
       :meth:`objective` multiplies by ``world_size`` to undo that average;
    3. the alignment term is a mean over the pairs of one micro-batch: :meth:`alignment` weighs it by
       ``alignment_weight / grad_accum``, so the step's term is its mean over the micro-batches (and, through
       the gradient average, over the ranks).

    The objective value a micro-batch reports (its loss before factor 2) is its share of the window's
    objective: summed over the micro-batches and ranks, it is the step's logged ``loss``.
    """

    units: int
    world_size: int
    grad_accum: int
    alignment_weight: float

    @classmethod
    def for_window(
        cls,
        micro_batches: Sequence[TokenBatch],
        objective: Objective,
        *,
        run: Runtime,
        alignment_weight: float,
    ) -> LossScale:
        """The scale of a window: every rank calls it with its own micro-batches (an all-reduce)."""
        local = sum(objective.count_units(batch) for batch in micro_batches)
        # At least 1: a window without loss units (all of it cut by max_length) has a zero loss, not NaN.
        units = max(1, all_sum(local, run))
        return cls(
            units=units,
            world_size=run.world_size,
            grad_accum=len(micro_batches),
            alignment_weight=alignment_weight,
        )

    def objective(self, loss: torch.Tensor) -> torch.Tensor:
        """The term to backpropagate for a micro-batch's objective, computed with ``count=units``."""
        return loss * self.world_size

    def alignment(self, loss: torch.Tensor) -> torch.Tensor:
        """The term to backpropagate for a micro-batch's alignment loss."""
        return self.alignment_weight * loss / self.grad_accum
