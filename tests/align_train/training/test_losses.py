import copy
import math
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from align_train.data.batch import TokenBatch
from align_train.modeling.logps import SeqLogps, sequence_logps
from align_train.training.losses import (
    dpo_loss,
    orpo_loss,
    sft_loss,
)
from align_train.training.objectives import OBJECTIVES
from tests.align_train.token_batches import (
    VOCAB,
    forward_logits,
    interleaved,
    our_layout,
    padded_batch,
    preference_inputs,
    random_batch,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LN2, LN3 = math.log(2.0), math.log(3.0)


def logps_of(logits: torch.Tensor, batch: TokenBatch) -> SeqLogps:
    return sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)


@pytest.fixture
def hand_batch() -> tuple[torch.Tensor, TokenBatch]:
    """Two sequences over a 2-token vocabulary whose log-probabilities are worked out by hand.

    Sequence 0 scores label 0 with logits [ln 3, 0] and label 1 with [0, ln 3]: 2·log(3/4) over 2 tokens.
    Sequence 1 scores label 1 with logits [0, 0]: log(1/2) over 1 token. The ±50 logits sit at positions
    whose next label is masked and must not count.
    """
    logits = torch.tensor(
        [
            [[LN3, 0.0], [0.0, LN3], [0.0, 0.0]],
            [[50.0, -50.0], [0.0, 0.0], [7.0, -7.0]],
        ]
    )
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    return logits, padded_batch(labels.clamp(min=0), labels, [3, 3], langs=["en", "de"], groups=[0, 0])


def as_pair(batch: TokenBatch) -> TokenBatch:
    """The same two sequences as the chosen (0) and rejected (1) completion of one pair."""
    batch.seq_role = torch.tensor([1, 2])
    batch.pair_index = torch.tensor([0, 0])
    return batch


def test_sequence_logps_hand_worked(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    logps = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    torch.testing.assert_close(logps.sums, torch.tensor([2 * math.log(3 / 4), math.log(1 / 2)]))
    assert logps.counts.tolist() == [2, 1]
    torch.testing.assert_close(logps.means, torch.tensor([math.log(3 / 4), math.log(1 / 2)]))


def test_sft_loss_hand_worked(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    out = sft_loss(logps_of(logits, batch), batch)
    # −(2·log(3/4) + log(1/2)) / 3 = log(32/9) / 3
    assert out.loss.item() == pytest.approx(math.log(32 / 9) / 3)
    assert out.metrics["loss_tokens"] == 3
    assert out.metrics["nll/en"] == pytest.approx(math.log(4 / 3))
    assert out.metrics["nll/de"] == pytest.approx(LN2)


def test_dpo_loss_hand_worked(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    batch = as_pair(batch)
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    # Chosen gained ln 2 over the reference, rejected stayed: −log σ(ln 2) = −log(2/3).
    reference = SeqLogps(
        sums=torch.tensor([2 * math.log(3 / 4) - LN2, math.log(1 / 2)]), counts=policy.counts
    )
    out = dpo_loss(policy, reference, batch, beta=1.0)
    assert out.loss.item() == pytest.approx(math.log(3 / 2))
    assert out.metrics["rewards/chosen"] == pytest.approx(LN2)
    assert out.metrics["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert out.metrics["rewards/margin"] == pytest.approx(LN2)
    assert out.metrics["rewards/accuracy"] == 1.0
    assert out.metrics["rewards/accuracy/en"] == 1.0
    assert out.metrics["pairs"] == 1
    # β = 0.5 halves the rewards: −log σ(ln 2 / 2) = log(1 + 1/√2).
    assert dpo_loss(policy, reference, batch, beta=0.5).loss.item() == pytest.approx(math.log(1 + 2**-0.5))


def test_orpo_loss_hand_worked(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    batch = as_pair(batch)
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    # P(chosen) = 3/4, P(rejected) = 1/2: odds 3 and 1, log odds ratio ln 3, L_OR = −log σ(ln 3) = log(4/3),
    # L_SFT = −log(3/4) = log(4/3).
    out = orpo_loss(policy, batch, beta=1.0)
    assert out.metrics["log_odds"] == pytest.approx(LN3)
    assert out.metrics["or_loss"] == pytest.approx(math.log(4 / 3))
    assert out.metrics["nll"] == pytest.approx(math.log(4 / 3))
    assert out.loss.item() == pytest.approx(2 * math.log(4 / 3))
    assert orpo_loss(policy, batch, beta=0.5).loss.item() == pytest.approx(1.5 * math.log(4 / 3))


def loop_logps(logits: torch.Tensor, batch: TokenBatch) -> tuple[list[float], list[int]]:
    """Reference: one row at a time in float64, position t scoring label t + 1."""
    sums, counts = [], []
    for row in range(batch.labels.shape[0]):
        total, count = 0.0, 0
        for t in range(batch.labels.shape[1] - 1):
            label = int(batch.labels[row, t + 1])
            if label != -100:
                total += float(torch.log_softmax(logits[row, t].double(), -1)[label])
                count += 1
        sums.append(total)
        counts.append(count)
    return sums, counts


def test_sequence_logps_matches_a_per_sequence_loop() -> None:
    logits, batch = random_batch(0)
    logps = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    sums, counts = loop_logps(logits, batch)
    assert logps.counts.tolist() == counts == [5, 4, 2]
    torch.testing.assert_close(logps.sums.double(), torch.tensor(sums, dtype=torch.float64))
    # bf16 logits (autocast on GPU) are scored in float32.
    low = sequence_logps(logits.bfloat16(), batch.labels, batch.seq_ids, batch.num_seqs)
    assert low.sums.dtype == torch.float32
    torch.testing.assert_close(low.sums, logps.sums, rtol=2e-2, atol=0.1)


def test_sequence_logps_packed_equals_padded() -> None:
    logits, batch = random_batch(1)
    # A label on the first token of a sequence has no position of its own sequence to predict it: in a
    # packed row the previous sequence's last token would, and must not be counted.
    batch.labels[1, 0] = 5
    padded = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    real = batch.seq_ids >= 0
    packed = sequence_logps(
        logits[real][None], batch.labels[real][None], batch.seq_ids[real][None], batch.num_seqs
    )
    torch.testing.assert_close(packed.sums, padded.sums)
    assert packed.counts.tolist() == padded.counts.tolist()


def test_masked_tokens_never_contribute() -> None:
    logits, batch = random_batch(2)
    logits.requires_grad_(True)
    out = sft_loss(logps_of(logits, batch), batch)
    out.loss.backward()
    scored = torch.zeros_like(batch.labels, dtype=torch.bool)
    scored[:, :-1] = (batch.labels[:, 1:] != -100) & (batch.seq_ids[:, 1:] == batch.seq_ids[:, :-1])
    grad_norms = logits.grad.norm(dim=-1)
    assert bool((grad_norms[~scored] == 0).all())
    assert bool((grad_norms[scored] > 0).all())
    # Whatever sits at unscored positions (logits, or input ids under a masked label) changes nothing.
    noisy = logits.detach().clone()
    noisy[~scored] = torch.randn_like(noisy[~scored]) * 100
    batch.input_ids = batch.input_ids.masked_fill(batch.labels == -100, 0)
    torch.testing.assert_close(sft_loss(logps_of(noisy, batch), batch).loss, out.loss.detach())


def test_sft_window_normalisation_matches_one_big_batch() -> None:
    logits, whole = random_batch(3)
    first = padded_batch(whole.input_ids[:2], whole.labels[:2], [9, 7], langs=["en", "de"])
    second = padded_batch(whole.input_ids[2:], whole.labels[2:], [8], langs=["fr"])
    window = OBJECTIVES["sft"].count_units(first) + OBJECTIVES["sft"].count_units(second)
    split = (
        sft_loss(logps_of(logits[:2], first), first, num_loss_tokens=window).loss
        + sft_loss(logps_of(logits[2:], second), second, num_loss_tokens=window).loss
    )
    torch.testing.assert_close(split, sft_loss(logps_of(logits, whole), whole).loss)
    # Averaging the two micro-batch means instead would weigh the 2-token batch like the 9-token one.
    naive = (
        sft_loss(logps_of(logits[:2], first), first).loss
        + sft_loss(logps_of(logits[2:], second), second).loss
    ) / 2
    assert not torch.allclose(naive, split)


def test_sft_loss_without_loss_tokens_is_zero_and_differentiable() -> None:
    logits = torch.randn(1, 4, VOCAB, requires_grad=True)
    batch = padded_batch(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), -100), [4], langs=["en"])
    out = sft_loss(logps_of(logits, batch), batch)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert out.metrics == {"loss_tokens": 0.0}


def float64_dpo(policy: Sequence[float], reference: Sequence[float], beta: float) -> float:
    """Rafailov et al. eq. 7 over pairs (chosen, rejected) = (policy[2i], policy[2i + 1])."""
    losses = []
    for c, r in zip(range(0, len(policy), 2), range(1, len(policy), 2), strict=True):
        z = beta * ((policy[c] - reference[c]) - (policy[r] - reference[r]))
        losses.append(math.log1p(math.exp(-z)))
    return sum(losses) / len(losses)


def float64_orpo(means: Sequence[float], beta: float) -> float:
    """Hong et al. eqs. 3–7 over pairs (chosen, rejected) = (means[2i], means[2i + 1])."""

    def log_odds(mean_logp: float) -> float:
        return mean_logp - math.log(1 - math.exp(mean_logp))

    losses = []
    for c, r in zip(means[0::2], means[1::2], strict=True):
        or_loss = math.log1p(math.exp(-(log_odds(c) - log_odds(r))))
        losses.append(-c + beta * or_loss)
    return sum(losses) / len(losses)


def test_dpo_and_orpo_match_float64_paper_equations() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 8, VOCAB, generator=gen) * 2
    labels = torch.randint(0, VOCAB, (4, 8), generator=gen)
    labels[:, :3] = -100
    batch = interleaved(
        padded_batch(labels.clamp(min=0), labels, [8, 6, 7, 8], langs=["en", "en", "de", "de"])
    )
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    reference = SeqLogps(sums=policy.sums + torch.randn(4, generator=gen), counts=policy.counts)
    sums, counts = loop_logps(logits, batch)
    means = [s / n for s, n in zip(sums, counts, strict=True)]
    ref = reference.sums.double().tolist()
    assert dpo_loss(policy, reference, batch, beta=0.1).loss.item() == pytest.approx(
        float64_dpo(sums, ref, 0.1), rel=1e-5
    )
    assert orpo_loss(policy, batch, beta=0.1).loss.item() == pytest.approx(float64_orpo(means, 0.1), rel=1e-5)


def test_pairs_follow_pair_index_not_sequence_order() -> None:
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(4, 6, VOCAB, generator=gen)
    labels = torch.randint(0, VOCAB, (4, 6), generator=gen)
    labels[:, :2] = -100
    batch = interleaved(
        padded_batch(labels.clamp(min=0), labels, [6, 5, 4, 6], langs=["en", "en", "de", "de"])
    )
    order = [2, 1, 3, 0]  # c1, r0, r1, c0
    shuffled = padded_batch(
        labels[order].clamp(min=0), labels[order], [4, 5, 6, 6], langs=["de", "en", "de", "en"]
    )
    shuffled.seq_role = batch.seq_role[order]
    shuffled.pair_index = batch.pair_index[order]
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    moved = sequence_logps(logits[order], shuffled.labels, shuffled.seq_ids, shuffled.num_seqs)
    reference = SeqLogps(sums=policy.sums * 1.1, counts=policy.counts)
    moved_reference = SeqLogps(sums=reference.sums[order], counts=reference.counts[order])
    expected = dpo_loss(policy, reference, batch, beta=0.1)
    got = dpo_loss(moved, moved_reference, shuffled, beta=0.1)
    torch.testing.assert_close(got.loss, expected.loss)
    assert got.metrics == pytest.approx(expected.metrics)
    torch.testing.assert_close(
        orpo_loss(moved, shuffled, beta=0.1).loss, orpo_loss(policy, batch, beta=0.1).loss
    )


def test_pairs_without_loss_tokens_are_left_out_and_counted() -> None:
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 6, VOCAB, generator=gen, requires_grad=True)
    labels = torch.randint(0, VOCAB, (4, 6), generator=gen)
    labels[:, :2] = -100
    labels[3] = -100  # the rejected completion of pair 1 was cut away entirely
    batch = interleaved(
        padded_batch(labels.clamp(min=0), labels, [6, 6, 6, 6], langs=["en", "en", "de", "de"])
    )
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    reference = SeqLogps(sums=policy.sums.detach() - 1.0, counts=policy.counts)
    pair0 = interleaved(padded_batch(labels[:2].clamp(min=0), labels[:2], [6, 6], langs=["en", "en"]))
    policy0 = sequence_logps(logits[:2], pair0.labels, pair0.seq_ids, pair0.num_seqs)
    reference0 = SeqLogps(sums=reference.sums[:2], counts=reference.counts[:2])
    for loss, alone in [
        (dpo_loss(policy, reference, batch, beta=0.1), dpo_loss(policy0, reference0, pair0, beta=0.1)),
        (orpo_loss(policy, batch, beta=0.1), orpo_loss(policy0, pair0, beta=0.1)),
    ]:
        torch.testing.assert_close(loss.loss, alone.loss)
        assert (loss.metrics["pairs"], loss.metrics["pairs_unscored"]) == (1, 1)
    empty = interleaved(padded_batch(labels[2:].clamp(min=0), labels[2:], [6, 6], langs=["de", "de"]))
    policy_empty = sequence_logps(logits[2:], empty.labels, empty.seq_ids, empty.num_seqs)
    out = orpo_loss(policy_empty, empty, beta=0.1)
    assert out.loss.item() == 0.0
    assert out.metrics == {"pairs": 0.0, "pairs_unscored": 1.0}
    out.loss.backward()


def test_orpo_stays_finite_when_a_completion_is_certain() -> None:
    logits = torch.zeros(2, 3, VOCAB)
    logits[0, :, 1] = 1e4  # log p(1) rounds to exactly 0: P = 1, odds = ∞ without care
    logits.requires_grad_(True)
    labels = torch.tensor([[-100, 1, 1], [-100, 2, 2]])
    batch = as_pair(padded_batch(labels.clamp(min=0), labels, [3, 3], langs=["en", "en"]))
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    assert policy.sums[0].item() == 0.0
    out = orpo_loss(policy, batch, beta=0.1)
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert bool(torch.isfinite(logits.grad).all())


# Three preference pairs in three languages, as plain text: TRL tokenises them and appends the EOS token.
TRL_PAIRS = [
    {"prompt": "What is 2 plus 3?", "chosen": " It is 5.", "rejected": " It is 6, I think."},
    {"prompt": "Was ist 7 plus 1?", "chosen": " Acht.", "rejected": " Neun."},
    {"prompt": "Combien font 4 fois 4 ?", "chosen": " Seize.", "rejected": " Dix-sept, sans doute."},
]


def tokenized_pairs(rows: Sequence[dict[str, Any]]) -> TokenBatch:
    """TRL's tokenised pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) in our layout: c0, r0, c1,
    r1, ..., labels on the completion tokens only."""
    sequences = [(r["prompt_ids"], r[key]) for r in rows for key in ("chosen_ids", "rejected_ids")]
    lengths = [len(prompt) + len(completion) for prompt, completion in sequences]
    ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, (prompt, completion) in enumerate(sequences):
        ids[i, : lengths[i]] = torch.tensor(prompt + completion)
        labels[i, len(prompt) : lengths[i]] = torch.tensor(completion)
    langs = [lang for lang in ("en", "de", "fr")[: len(rows)] for _ in range(2)]
    return interleaved(padded_batch(ids, labels, lengths, langs=langs))


# TRL 1.16 reads the gradient-checkpointing settings that transformers renamed for v6.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_dpo_matches_trl_dpo_trainer(
    smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], tokenizer_dir: Path, tmp_path: Path
) -> None:
    """TRL's DPOTrainer, built through its public API on copies of the same policy and reference and
    evaluated once on the pairs (one batch), reports the loss and metrics that our DPO objective gives on
    the token ids TRL made of them."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy, reference = (copy.deepcopy(model) for model in smol_models)
    pairs = Dataset.from_list(TRL_PAIRS)
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=0.1,
        loss_type=["sigmoid"],
        per_device_eval_batch_size=len(pairs),  # one batch: eval_loss is the loss of all pairs
        prediction_loss_only=True,
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16, under which accelerate runs the reference forward in autocast
        report_to="none",
    )
    trainer = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=args,
        train_dataset=pairs,
        eval_dataset=pairs,
        processing_class=AutoTokenizer.from_pretrained(tokenizer_dir),
    )
    trl_metrics = trainer.evaluate()

    batch = tokenized_pairs(trainer.eval_dataset)
    objective = OBJECTIVES["dpo"]
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
    expected = torch.tensor(trl_metrics["eval_loss"], dtype=out.loss.dtype)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    for ours, theirs in [
        ("rewards/chosen", "rewards/chosen"),
        ("rewards/rejected", "rewards/rejected"),
        ("rewards/margin", "rewards/margins"),
        ("rewards/accuracy", "rewards/accuracies"),
        ("logps/chosen", "logps/chosen"),
        ("logps/rejected", "logps/rejected"),
    ]:
        assert out.metrics[ours] == pytest.approx(trl_metrics[f"eval_{theirs}"], rel=1e-4, abs=1e-6), ours
    out.loss.backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    assert all(p.grad is None for p in reference.parameters())


def test_orpo_matches_trl_odds_ratio_loss() -> None:
    from trl.experimental import orpo

    ids, attention, completion = preference_inputs(6)
    gen = torch.Generator().manual_seed(6)
    trl_logits = torch.randn(*ids.shape, VOCAB, generator=gen) * 2
    trl_labels = ids.masked_fill(completion == 0, -100)
    trl_means = orpo.ORPOTrainer.get_batch_logps(trl_logits, trl_labels, average_log_prob=True)
    trainer = types.SimpleNamespace(beta=0.1, accelerator=types.SimpleNamespace(device=torch.device("cpu")))
    # TRL returns β·log σ(log odds ratio) per pair (a quantity to maximise) and the mean log odds ratio.
    trl_terms, _, _, _, trl_log_odds = orpo.ORPOTrainer.odds_ratio_loss(trainer, trl_means[:3], trl_means[3:])

    batch = our_layout(ids, attention, completion)
    order = [0, 3, 1, 4, 2, 5]
    policy = sequence_logps(trl_logits[order], batch.labels, batch.seq_ids, batch.num_seqs)
    torch.testing.assert_close(policy.means, trl_means[order])
    out = orpo_loss(policy, batch, beta=0.1)
    assert out.metrics["log_odds"] == pytest.approx(trl_log_odds.item(), rel=1e-5)
    assert out.metrics["or_loss"] == pytest.approx(-trl_terms.mean().item() / 0.1, rel=1e-5)
    expected = (-trl_means[:3] - trl_terms).mean()
    torch.testing.assert_close(out.loss, expected)


def test_preference_losses_refuse_batches_without_pairs(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    policy = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
    with pytest.raises(ValueError, match="needs at least one pair"):
        orpo_loss(policy, batch, beta=0.1)
    batch.seq_role = torch.tensor([1, 1])
    batch.pair_index = torch.tensor([0, 0])
    with pytest.raises(ValueError, match="2 chosen and 0 rejected"):
        dpo_loss(policy, policy, batch, beta=0.1)


def test_bad_arguments_name_the_parameter(hand_batch: tuple[torch.Tensor, TokenBatch]) -> None:
    logits, batch = hand_batch
    with pytest.raises(ValueError, match=r"num_loss_tokens=2 is less than this batch's 3"):
        sft_loss(logps_of(logits, batch), batch, num_loss_tokens=2)
    with pytest.raises(ValueError, match="must agree"):
        sequence_logps(logits[:, :2], batch.labels, batch.seq_ids, batch.num_seqs)
    pair = as_pair(batch)
    policy = sequence_logps(logits, pair.labels, pair.seq_ids, pair.num_seqs)
    with pytest.raises(ValueError, match=r"beta=0.0 must be > 0"):
        orpo_loss(policy, pair, beta=0.0)
    with pytest.raises(ValueError, match="reference=None"):
        OBJECTIVES["dpo"].compute(policy, pair, reference=None, beta=0.1, count=1)
