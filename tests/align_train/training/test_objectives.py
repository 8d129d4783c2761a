"""The objectives table and :class:`LossScale`: how micro-batch losses add up to a step's loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from align_train.choices import OBJECTIVE_NAMES
from align_train.data.batch import ParallelBatch, TokenBatch
from align_train.data.collator import Collator
from align_train.distributed import Runtime
from align_train.modeling.logps import SeqLogps, sequence_logps
from align_train.training.coupled import cosine_loss
from align_train.training.losses import num_pairs, sft_loss
from align_train.training.objectives import OBJECTIVES, LossScale
from tests.align_train.corpus import preference_rows
from tests.align_train.token_batches import (
    forward_logits,
    our_layout,
    padded_batch,
    preference_inputs,
    random_batch,
)

torch.set_num_threads(1)


def logps_of(logits: torch.Tensor, batch: TokenBatch) -> SeqLogps:
    return sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)


def test_objectives_table() -> None:
    assert set(OBJECTIVES) == {"sft", "dpo", "orpo"}
    assert tuple(OBJECTIVES) == OBJECTIVE_NAMES  # every configurable name has its implementation
    assert [name for name, o in OBJECTIVES.items() if o.needs_reference] == ["dpo"]
    batch = our_layout(*preference_inputs(8))
    assert (
        OBJECTIVES["dpo"].count_units(batch) == OBJECTIVES["orpo"].count_units(batch) == num_pairs(batch) == 3
    )
    assert OBJECTIVES["sft"].count_units(batch) == batch.num_loss_tokens == 21


@pytest.mark.parametrize("name", ["sft", "dpo", "orpo"])
def test_gradients_flow_through_every_objective(
    name: str, tiny_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    policy, reference = tiny_models
    batch = our_layout(*preference_inputs(7))
    if name == "sft":
        batch.seq_role = torch.zeros(6, dtype=torch.long)
        batch.pair_index = torch.full((6,), -1)
    objective = OBJECTIVES[name]
    ref_logps = None
    if objective.needs_reference:
        with torch.no_grad():
            ref_logps = sequence_logps(
                forward_logits(reference, batch), batch.labels, batch.seq_ids, batch.num_seqs
            )
    out = objective.compute(
        logps_of(forward_logits(policy, batch), batch),
        batch,
        reference=ref_logps,
        beta=0.1,
        count=objective.count_units(batch),
    )
    out.loss.backward()
    grad = policy.model.embed_tokens.weight.grad
    assert grad is not None
    assert bool(torch.isfinite(grad).all())
    assert grad.abs().sum().item() > 0
    policy.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["sft", "dpo", "orpo"])
def test_collated_batches_give_the_same_losses_packed_and_padded(
    name: str, tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    policy, reference = smol_models
    objective = OBJECTIVES[name]
    batch = ParallelBatch.of(preference_rows(2))
    results = []
    for pack in (False, True):
        tokens = Collator(tokenizer, objective=name, max_length=256, pack=pack)(batch)
        with torch.no_grad():
            out = policy(**tokens.model_inputs(), output_hidden_states=True)
            ref_logps = None
            if objective.needs_reference:
                ref_logits = reference(**tokens.model_inputs()).logits
                ref_logps = sequence_logps(ref_logits, tokens.labels, tokens.seq_ids, tokens.num_seqs)
        count = objective.count_units(tokens)
        result = objective.compute(
            logps_of(out.logits, tokens), tokens, reference=ref_logps, beta=0.1, count=count
        )
        align = cosine_loss(out.hidden_states[-1], tokens, anchor_lang="en")
        results.append((result, align))
    (padded, padded_align), (packed, packed_align) = results
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-4, atol=1e-5)
    assert packed.metrics == pytest.approx(padded.metrics, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(packed_align.loss, padded_align.loss, rtol=1e-4, atol=1e-5)
    # One de translation per group, paired with its en anchor once per role (sft; or chosen and rejected).
    assert padded_align.metrics["align/pairs"] == (2 if name == "sft" else 4)
    assert padded.loss.item() > 0


def test_loss_scale_adds_micro_batches_and_ranks_up_to_the_whole_window() -> None:
    # Three sequences with 5, 4 and 2 loss tokens: the step's objective is the mean over all 11 tokens.
    logits, whole = random_batch(3)
    expected = sft_loss(logps_of(logits, whole), whole).loss
    objective = OBJECTIVES["sft"]

    # One process, two micro-batches ([0, 1], [2]): the micro-step losses add up.
    first = padded_batch(whole.input_ids[:2], whole.labels[:2], [9, 7], langs=["en", "de"])
    second = padded_batch(whole.input_ids[2:], whole.labels[2:], [8], langs=["fr"])
    window = [first, second]
    scale = LossScale.for_window(
        window, objective, run=Runtime(0, 1, torch.device("cpu")), alignment_weight=0.0
    )
    assert (scale.units, scale.world_size, scale.grad_accum) == (11, 1, 2)
    parts = [
        objective.compute(logps_of(logits[:2], first), first, reference=None, beta=0.0, count=scale.units)
    ]
    parts.append(
        objective.compute(logps_of(logits[2:], second), second, reference=None, beta=0.0, count=scale.units)
    )
    torch.testing.assert_close(sum(scale.objective(p.loss) for p in parts), expected)

    # Two ranks of one micro-batch each ([0, 1] and [2]): DDP averages the gradients over the ranks, so the
    # average of the backpropagated terms is the window's objective; the logged shares add up to it.
    scale = LossScale(units=11, world_size=2, grad_accum=1, alignment_weight=0.0)
    torch.testing.assert_close(sum(scale.objective(p.loss) for p in parts) / 2, expected)
    torch.testing.assert_close(sum(p.loss for p in parts), expected)


def test_loss_scale_averages_the_alignment_term_over_micro_batches() -> None:
    scale = LossScale(units=11, world_size=2, grad_accum=4, alignment_weight=0.5)
    terms = torch.tensor([0.1, 0.2, 0.3, 0.6])
    torch.testing.assert_close(sum(scale.alignment(t) for t in terms), 0.5 * terms.mean())


def test_a_window_without_loss_units_has_a_zero_loss() -> None:
    labels = torch.full((1, 4), -100)
    empty = padded_batch(torch.zeros(1, 4, dtype=torch.long), labels, [4], langs=["en"])
    logits = torch.randn(1, 4, 97, requires_grad=True)
    objective = OBJECTIVES["sft"]
    scale = LossScale.for_window(
        [empty], objective, run=Runtime(0, 1, torch.device("cpu")), alignment_weight=0.0
    )
    assert scale.units == 1
    out = objective.compute(logps_of(logits, empty), empty, reference=None, beta=0.0, count=scale.units)
    loss = scale.objective(out.loss)
    loss.backward()
    assert loss.item() == 0.0
