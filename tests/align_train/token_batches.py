"""Token batches and models for the loss tests: hand-built :class:`TokenBatch` layouts (padded, as
preference pairs, in TRL's layout), batches from the real collator with the loss a micro-step computes on
them, and pairs of tiny Llama models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align_train.data.batch import ParallelBatch, TokenBatch
from align_train.data.collator import Collator
from align_train.modeling.head import LabelledLM
from align_train.training.coupled import AlignmentSettings, CoupledInputs, coupled_loss
from align_train.training.objectives import OBJECTIVES
from tests.align_train.corpus import preference_rows, sft_rows

VOCAB = 97


def padded_batch(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    lengths: Sequence[int],
    *,
    langs: Sequence[str],
    groups: Sequence[int] | None = None,
    roles: Sequence[int] | None = None,
    pairs: Sequence[int] | None = None,
) -> TokenBatch:
    """One sequence per row, right-padded after ``lengths[i]`` tokens."""
    rows, width = labels.shape
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    labels = labels.masked_fill(~real, -100)
    return TokenBatch(
        input_ids=input_ids,
        labels=labels,
        position_ids=torch.arange(width).expand(rows, width),
        attention_mask=real.long(),
        seq_ids=torch.where(real, torch.arange(rows)[:, None], -1),
        num_seqs=rows,
        seq_group=torch.tensor(groups if groups is not None else range(rows)),
        seq_langs=list(langs),
        seq_role=torch.tensor(roles if roles is not None else [0] * rows),
        pair_index=torch.tensor(pairs if pairs is not None else [-1] * rows),
        num_loss_tokens=int((labels != -100).sum()),
    )


def interleaved(batch: TokenBatch) -> TokenBatch:
    """Rows as (chosen, rejected) pairs: row 2i is chosen, row 2i + 1 its rejected completion."""
    rows = batch.num_seqs
    batch.seq_role = torch.tensor([1, 2] * (rows // 2))
    batch.pair_index = torch.arange(rows) // 2
    batch.seq_group = torch.arange(rows) // 2
    return batch


def random_batch(seed: int) -> tuple[torch.Tensor, TokenBatch]:
    """Three padded sequences of different lengths with prompt (masked) and completion tokens."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 9, VOCAB, generator=gen) * 3
    ids = torch.randint(0, VOCAB, (3, 9), generator=gen)
    labels = ids.clone()
    labels[0, :4] = -100
    labels[1, :2] = -100
    labels[1, 5] = -100
    labels[2, :6] = -100
    return logits, padded_batch(ids, labels, [9, 7, 8], langs=["en", "de", "fr"], groups=[0, 0, 1])


def preference_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three pairs in TRL's layout: rows [c0, c1, c2, r0, r1, r2], a shared prompt per pair, right padding.

    Returns input ids, attention mask and completion mask.
    """
    gen = torch.Generator().manual_seed(seed)
    prompts, chosen_lens, rejected_lens = [3, 4, 2], [4, 2, 5], [2, 5, 3]
    width = max(p + n for p, n in zip(prompts * 2, chosen_lens + rejected_lens, strict=True))
    ids = torch.randint(0, VOCAB, (6, width), generator=gen)
    ids[3:, :4] = ids[:3, :4]
    attention = torch.zeros(6, width, dtype=torch.long)
    completion = torch.zeros(6, width, dtype=torch.long)
    for row, (prompt, length) in enumerate(zip(prompts * 2, chosen_lens + rejected_lens, strict=True)):
        attention[row, : prompt + length] = 1
        completion[row, prompt : prompt + length] = 1
    return ids, attention, completion


def our_layout(ids: torch.Tensor, attention: torch.Tensor, completion: torch.Tensor) -> TokenBatch:
    """The same six sequences interleaved as the collator may emit them: c0, r0, c1, r1, c2, r2."""
    order = [0, 3, 1, 4, 2, 5]
    labels = ids.masked_fill(completion == 0, -100)[order]
    return interleaved(
        padded_batch(
            ids[order], labels, attention[order].sum(1).tolist(), langs=["en", "en", "de", "de", "fr", "fr"]
        )
    )


def forward_logits(model: LlamaForCausalLM, batch: TokenBatch) -> torch.Tensor:
    return model(**batch.model_inputs()).logits


def policy_and_reference(vocab_size: int) -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """A trainable policy and a frozen reference: randomly initialised 2-layer Llamas."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    torch.manual_seed(1)
    return policy, LlamaForCausalLM(config).eval().requires_grad_(False)


def collated(tokenizer: Any, objective: str, pack: bool) -> TokenBatch:
    rows = preference_rows(2) if objective != "sft" else sft_rows(4)
    return Collator(tokenizer, objective=objective, max_length=256, pack=pack)(ParallelBatch.of(rows))


COSINE = AlignmentSettings(loss="cosine", weight=1.0)


def objective_loss(
    model: torch.nn.Module,
    reference: LabelledLM | None,
    batch: TokenBatch,
    objective: str,
    term: AlignmentSettings = COSINE,
) -> torch.Tensor:
    """The objective plus a coupled term (weight 1), as a micro-step computes them."""
    out = model(
        **batch.labelled_inputs(),
        hidden_layer=term.hidden_layer,
        uniform_weights=objective == "sft" and not term.weighs_logps,
    )
    ref_logps = None
    if reference is not None:
        with torch.no_grad():
            ref_logps = reference(**batch.labelled_inputs()).logps
    spec = OBJECTIVES[objective]
    count = max(1, spec.count_units(batch))  # as LossScale counts a window without loss units
    result = spec.compute(out.logps, batch, reference=ref_logps, beta=0.1, count=count)
    return (
        result.loss + coupled_loss(CoupledInputs(out.logps, out.hidden), batch, term, anchor_lang="en").loss
    )
