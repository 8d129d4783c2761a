"""The coupled cross-lingual terms against plain per-pair references: values, gradients, who gets a
gradient, and nothing without pairs."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from align_train.data.batch import ParallelBatch, TokenBatch
from align_train.distributed import Runtime
from align_train.modeling.head import LabelledLM
from align_train.modeling.logps import SeqLogps
from align_train.training.coupled import (
    COUPLED,
    AlignmentSettings,
    CoupledInputs,
    consistency_loss,
    contrastive_loss,
    cosine_loss,
    coupled_loss,
)
from align_train.training.objectives import OBJECTIVES, LossScale
from align_train.training.train import micro_step
from tests.align_train.corpus import sft_rows
from tests.align_train.token_batches import VOCAB, collated, objective_loss, padded_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TERMS = {
    "cosine": AlignmentSettings(loss="cosine", weight=1.0),
    "contrastive": AlignmentSettings(loss="contrastive", weight=1.0, layer=1, temperature=0.5),
    "consistency": AlignmentSettings(loss="consistency", weight=1.0),
}


@pytest.fixture
def hand_batch() -> TokenBatch:
    """An en anchor and its de translation, one group: three tokens each, the first unlabelled."""
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    return padded_batch(labels.clamp(min=0), labels, [3, 3], langs=["en", "de"], groups=[0, 0])


def test_cosine_loss_hand_worked(hand_batch: TokenBatch) -> None:
    # Pooled over loss tokens: en = mean([1, 0], [1, 2]) = [1, 1], de = [0, 3]; cos = 1/√2.
    hidden = torch.tensor(
        [
            [[100.0, -100.0], [1.0, 0.0], [1.0, 2.0]],
            [[-30.0, 9.0], [40.0, 40.0], [0.0, 3.0]],
        ]
    )
    out = cosine_loss(hidden, hand_batch, anchor_lang="en")
    assert out.loss.item() == pytest.approx(1 - 2**-0.5)
    assert out.metrics["align/pairs"] == 1
    assert out.metrics["align/cosine"] == pytest.approx(2**-0.5)


def test_cosine_loss_pairs_by_group_and_role() -> None:
    gen = torch.Generator().manual_seed(9)
    labels = torch.randint(0, VOCAB, (6, 5), generator=gen)
    labels[:, :2] = -100
    # Group 0: en, de, fr. Group 1: de only (no anchor). Group 2: en whose de has no loss token.
    labels[5] = -100
    batch = padded_batch(
        labels.clamp(min=0),
        labels,
        [5] * 6,
        langs=["en", "de", "fr", "de", "en", "de"],
        groups=[0, 0, 0, 1, 2, 2],
    )
    hidden = torch.randn(6, 5, 8, generator=gen, requires_grad=True)
    out = cosine_loss(hidden, batch, anchor_lang="en")
    assert out.metrics["align/pairs"] == 2
    pooled = torch.stack([hidden[i, 2:].mean(0) for i in range(3)]).detach()
    cosines = F.cosine_similarity(pooled[1:], pooled[:1].expand(2, -1), dim=-1)
    torch.testing.assert_close(out.loss, (1 - cosines).mean())
    out.loss.backward()
    token_grads = hidden.grad.norm(dim=-1)
    # Translations move; the anchor is the target and gets no gradient; masked tokens none either.
    assert bool((token_grads[1:3, 2:] > 0).all())
    assert bool((token_grads[0] == 0).all())
    assert bool((token_grads[:, :2] == 0).all())
    assert bool((token_grads[3:] == 0).all())


def test_contrastive_loss_hand_worked() -> None:
    # Two groups of (en, de), one loss token each, so a sequence pools to its hidden state. Unit vectors:
    # de₀ · en₀ = 1, de₀ · en₁ = 0, de₀ · de₁ = 0; τ = 1. de₀'s keys: en₀ (positive), en₁, de₁.
    labels = torch.tensor([[-100, 1]] * 4)
    batch = padded_batch(
        labels.clamp(min=0), labels, [2] * 4, langs=["en", "de", "en", "de"], groups=[0, 0, 1, 1]
    )
    hidden = torch.zeros(4, 2, 2)
    hidden[:, 1] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = contrastive_loss(hidden, batch, anchor_lang="en", temperature=1.0)
    # L = −log(e / (e + 1 + 1)) for each of the two translations.
    assert out.loss.item() == pytest.approx(-math.log(math.e / (math.e + 2)))
    assert out.metrics["align/pairs"] == 2
    assert out.metrics["align/accuracy"] == 1.0
    assert out.metrics["align/cosine"] == pytest.approx(1.0)
    assert out.metrics["align/cosine_negative"] == pytest.approx(0.0)


def random_groups(seed: int) -> tuple[torch.Tensor, TokenBatch]:
    """Three groups in a micro-batch: (en, de, fr), (en, de), (de, fr) with no anchor; hidden states."""
    gen = torch.Generator().manual_seed(seed)
    langs = ["en", "de", "fr", "en", "de", "de", "fr"]
    groups = [0, 0, 0, 1, 1, 2, 2]
    labels = torch.randint(0, VOCAB, (7, 6), generator=gen)
    labels[:, :2] = -100
    batch = padded_batch(labels.clamp(min=0), labels, [6, 5, 6, 4, 6, 6, 5], langs=langs, groups=groups)
    hidden = torch.randn(7, 6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    return hidden, batch


def plain_contrastive(hidden: torch.Tensor, batch: TokenBatch, anchor: str, tau: float) -> torch.Tensor:
    """One query at a time in float64, from the formula in the docstring."""
    pooled = []
    for i in range(batch.num_seqs):
        tokens = [
            t for t in range(1, hidden.shape[1]) if batch.labels[i, t] != -100 and batch.seq_ids[i, t] == i
        ]
        pooled.append(hidden[i, tokens].mean(0))
    z = [F.normalize(p, dim=0) for p in pooled]
    groups = batch.seq_group.tolist()
    losses = []
    for q in range(batch.num_seqs):
        if batch.seq_langs[q] == anchor:
            continue
        keys = [k for k in range(batch.num_seqs) if k != q]
        positives = [k for k in keys if groups[k] == groups[q]]
        if not positives or all(groups[k] == groups[q] for k in keys):
            continue

        def key(k: int) -> torch.Tensor:
            return z[k].detach() if batch.seq_langs[k] == anchor else z[k]

        scores = {k: torch.dot(z[q], key(k)) / tau for k in keys}
        norm = torch.logsumexp(torch.stack(list(scores.values())), 0)
        losses.append(-torch.stack([scores[p] - norm for p in positives]).mean())
    return torch.stack(losses).mean()


def test_contrastive_loss_and_gradients_equal_a_plain_reference() -> None:
    hidden, batch = random_groups(3)
    out = contrastive_loss(hidden, batch, anchor_lang="en", temperature=0.3)
    (ours,) = torch.autograd.grad(out.loss, hidden)
    expected = plain_contrastive(hidden, batch, "en", 0.3)
    (theirs,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(ours, theirs)
    # Queries: de and fr of group 0, de of group 1, de and fr of group 2 (positives of each other).
    assert out.metrics["align/pairs"] == 5
    # Anchors are constant keys: no gradient reaches them.
    assert float(ours[[0, 3]].abs().sum()) == 0.0
    assert float(ours[[1, 2, 4, 5, 6]].abs().sum()) > 0


def test_consistency_loss_and_gradients_equal_a_plain_reference() -> None:
    # Group 0: en (mean −1), de (−3, lags by 2), fr (−0.5, ahead). Group 1: en (−2), de (−2.5).
    # Group 2: de without an anchor.
    sums = torch.tensor([-2.0, -9.0, -1.0, -4.0, -5.0, -7.0], dtype=torch.float64, requires_grad=True)
    counts = torch.tensor([2, 3, 2, 2, 2, 7])
    labels = torch.zeros(6, 2, dtype=torch.long)
    batch = padded_batch(
        labels, labels, [2] * 6, langs=["en", "de", "fr", "en", "de", "de"], groups=[0, 0, 0, 1, 1, 2]
    )
    out = consistency_loss(SeqLogps(sums, counts), batch, anchor_lang="en")
    # Pairs (de₀, en₀): gap 2; (fr₀, en₀): gap −0.5, no loss; (de₁, en₁): gap 0.5. Mean of 4, 0, 0.25.
    assert out.loss.item() == pytest.approx((4 + 0 + 0.25) / 3)
    assert out.metrics["align/pairs"] == 3
    assert out.metrics["align/gap"] == pytest.approx((2 - 0.5 + 0.5) / 3)
    assert out.metrics["align/lagging"] == pytest.approx(2 / 3)
    (grad,) = torch.autograd.grad(out.loss, sums)
    # ∂/∂sums[i] of relu(m_a − sums[i]/n_i)² / 3 = −2 gap / (3 n_i); anchors and leaders get none.
    expected = torch.tensor([0.0, -2 * 2 / (3 * 3), 0.0, 0.0, -2 * 0.5 / (3 * 2), 0.0], dtype=torch.float64)
    torch.testing.assert_close(grad, expected)


def test_consistency_pairs_chosen_answers_only() -> None:
    sums = torch.tensor([-1.0, -1.0, -4.0, -4.0], requires_grad=True)
    counts = torch.ones(4, dtype=torch.long)
    labels = torch.zeros(4, 2, dtype=torch.long)
    batch = padded_batch(
        labels,
        labels,
        [2] * 4,
        langs=["en", "en", "de", "de"],
        groups=[0] * 4,
        roles=[1, 2, 1, 2],
        pairs=[0, 0, 1, 1],
    )
    out = consistency_loss(SeqLogps(sums, counts), batch, anchor_lang="en")
    assert out.metrics["align/pairs"] == 1  # de chosen with en chosen; the rejected answers are left alone
    assert out.loss.item() == pytest.approx(9.0)


@pytest.mark.parametrize("name", list(COUPLED))
def test_every_term_is_zero_and_attached_without_pairs(name: str) -> None:
    """A batch of the shuffled control: no two rows of one group."""
    hidden, batch = random_groups(4)
    batch.seq_group = torch.arange(batch.num_seqs)
    sums = torch.randn(batch.num_seqs, requires_grad=True)
    inputs = CoupledInputs(SeqLogps(sums, torch.full((batch.num_seqs,), 3)), hidden)
    out = coupled_loss(inputs, batch, TERMS[name], anchor_lang="en")
    assert out.loss.item() == 0.0
    assert out.metrics == {"align/pairs": 0.0}
    out.loss.backward()  # still part of the graph: the backward pass runs as for any batch


def test_contrastive_needs_a_negative_and_a_positive_temperature() -> None:
    hidden, batch = random_groups(5)
    batch.seq_group = torch.zeros(batch.num_seqs, dtype=torch.long)  # one group: no negative
    assert contrastive_loss(hidden, batch, anchor_lang="en", temperature=0.1).metrics["align/pairs"] == 0
    with pytest.raises(ValueError, match=r"temperature=0.0 must be > 0"):
        contrastive_loss(hidden, batch, anchor_lang="en", temperature=0.0)
    with pytest.raises(ValueError, match=r"hidden_states \(2, 2, 4\)"):
        cosine_loss(torch.zeros(2, 2, 4), batch, anchor_lang="en")


def test_settings_say_what_the_forward_pass_must_return() -> None:
    assert AlignmentSettings().hidden_layer is None  # weight 0: off
    assert TERMS["cosine"].hidden_layer == -1
    assert TERMS["contrastive"].hidden_layer == 1
    assert TERMS["consistency"].hidden_layer is None and TERMS["consistency"].weighs_logps
    assert not TERMS["cosine"].weighs_logps


@pytest.mark.parametrize(
    ("objective", "name"),
    [
        ("sft", "cosine"),
        ("sft", "contrastive"),
        ("sft", "consistency"),
        ("dpo", "consistency"),
        ("orpo", "contrastive"),
    ],
)
def test_chunked_head_gives_each_term_the_full_logits_losses_and_gradients(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], objective: str, name: str
) -> None:
    policy, frozen = smol_models
    batch = collated(tokenizer, objective, True)
    results = []
    for chunk_tokens in (None, 16):
        model = LabelledLM(copy.deepcopy(policy), chunk_tokens=chunk_tokens)
        reference = LabelledLM(frozen, chunk_tokens=chunk_tokens) if objective == "dpo" else None
        loss = objective_loss(model, reference, batch, objective, TERMS[name])
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (full, full_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    for param, grad in full_grads.items():
        # float32 sums in another order, and the objective's and the term's gradients partly cancel:
        # errors scale with the largest entries of the gradient (a few float32 eps of its parts).
        atol = 1e-4 * float(grad.abs().max())
        torch.testing.assert_close(
            chunked_grads[param], grad, rtol=1e-4, atol=atol, msg=lambda m, p=param: f"{p}: {m}"
        )


def _rank_gradients(rank: int, world_size: int, tokenizer_dir: str, pg_file: str, out: str) -> None:
    """One DDP rank: its micro-batch of the two, the coupled term's micro-step, the reduced gradients."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{pg_file}", rank=rank, world_size=world_size)
    try:
        model, batches = _ddp_case(tokenizer_dir)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        grads = _step_gradients(ddp, [batches[rank]], Runtime(rank, world_size, torch.device("cpu")))
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


def _ddp_case(tokenizer_dir: str) -> tuple[LabelledLM, list[TokenBatch]]:
    """The same model on every rank, and two micro-batches of two groups (en, de, and sw in some)."""
    from align_train.data.collator import Collator
    from align_train.modeling.model import load_tokenizer, tiny_model

    tokenizer = load_tokenizer(Path(tokenizer_dir))
    model = LabelledLM(tiny_model(tokenizer, seed=0), chunk_tokens=16)
    collator = Collator(tokenizer, objective="sft", max_length=256, pack=True)
    rows = sft_rows(4)
    halves = [[r for r in rows if r["group_id"] in ids] for ids in ({"g000", "g001"}, {"g002", "g003"})]
    return model, [collator(ParallelBatch.of(half)) for half in halves]


DDP_TERM = AlignmentSettings(loss="contrastive", weight=0.7, layer=1, temperature=0.2)


def _step_gradients(
    model: torch.nn.Module, batches: list[TokenBatch], run: Runtime
) -> dict[str, torch.Tensor]:
    scale = LossScale.for_window(batches, OBJECTIVES["sft"], run=run, alignment_weight=DDP_TERM.weight)
    for batch in batches:
        step = micro_step(
            model,
            batch,
            objective=OBJECTIVES["sft"],
            reference=None,
            scale=scale,
            beta=0.0,
            alignment=DDP_TERM,
            anchor_lang="en",
        )
        assert step.metrics["align/pairs"] > 0
        step.loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_two_ddp_ranks_give_one_process_s_gradients_with_a_coupled_term(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Rank r takes micro-batch r; one process accumulates both: the same window, the same gradients."""
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(
        _rank_gradients, args=(2, str(tokenizer_dir), str(tmp_path / "pg"), str(out)), nprocs=2, join=True
    )
    model, batches = _ddp_case(str(tokenizer_dir))
    alone = _step_gradients(model, batches, Runtime(0, 1, torch.device("cpu")))
    ranks = {name.removeprefix("module."): grad for name, grad in torch.load(out, weights_only=True).items()}
    assert ranks.keys() == alone.keys()
    for name, grad in alone.items():
        atol = 1e-5 * float(grad.abs().max())  # float32 sums in another order (the all-reduce's)
        torch.testing.assert_close(ranks[name], grad, rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
