"""The reference answer's log-likelihood, and whether it is the model's greedy answer, in one forward pass.

Every held-out row gets the loss of its reference answer given its prompt. The same pass also says whether
the reference is the model's greedy continuation: the most likely token at every answer position is the
reference's token there (lm-evaluation-harness's ``is_greedy`` of a loglikelihood request). With
``scoring: loglikelihood`` that is the row's accuracy, and no answer is generated.

Rows are tokenised one by one by the training :class:`Collator` (so the loss is the one SFT minimises, on
the answer's tokens only), sorted by length and batched with left padding: every row's answer ends at the
last column, so the model's output layer runs on the last columns only (``logits_to_keep``), as many as
the longest answer of the batch needs, instead of on every prompt token. The model's own forward computes
those logits, whatever its output layer does (soft-capping, scaling).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from rich.progress import track
from transformers import PreTrainedModel

from align_train.data.batch import IGNORE_INDEX, ParallelBatch
from align_train.data.collator import Collator


class ReferenceScore(NamedTuple):
    """Negative log-likelihood of a reference answer given its prompt, summed over its ``tokens`` tokens,
    and whether every one of those tokens is the model's most likely token there (``greedy``)."""

    nll: float
    tokens: int
    greedy: bool


class LabelledTokens(NamedTuple):
    """One sequence's tokens and its labels: a token id where the answer is, ``IGNORE_INDEX`` elsewhere."""

    input_ids: list[int]
    labels: list[int]


def reference_scores(
    model: PreTrainedModel, collator: Collator, rows: Sequence[dict[str, Any]], *, batch_size: int
) -> list[ReferenceScore]:
    """The :class:`ReferenceScore` of each row (a preference row whose ``chosen`` is the reference)."""
    return score_tokens(model, [_tokens(collator, row) for row in rows], batch_size=batch_size)


@torch.no_grad()
def score_tokens(
    model: PreTrainedModel, sequences: Sequence[LabelledTokens], *, batch_size: int
) -> list[ReferenceScore]:
    """The :class:`ReferenceScore` of each sequence's labelled tokens, batched by length."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    out = [ReferenceScore(0.0, 0, False)] * len(sequences)
    for batch in track(batches, description="loss", transient=True):
        for i, score in zip(
            batch, _score(model, [sequences[i] for i in batch], device, keeps_logits), strict=True
        ):
            out[i] = score
    return out


def _tokens(collator: Collator, row: dict[str, Any]) -> LabelledTokens:
    tokens = collator(ParallelBatch.of([row]))
    return LabelledTokens(tokens.input_ids[0].tolist(), tokens.labels[0].tolist())


def _score(
    model: PreTrainedModel, sequences: list[LabelledTokens], device: torch.device, keeps_logits: bool
) -> list[ReferenceScore]:
    """One batch, left-padded: every answer ends at the last column."""
    width = max(len(s.input_ids) for s in sequences)
    shape = (len(sequences), width)
    input_ids = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    first_label = width
    for r, s in enumerate(sequences):
        n = len(s.input_ids)
        input_ids[r, width - n :] = torch.tensor(s.input_ids)
        labels[r, width - n :] = torch.tensor(s.labels)
        attention_mask[r, width - n :] = 1
        position_ids[r, width - n :] = torch.arange(n)
        labelled = [t for t, label in enumerate(s.labels) if label != IGNORE_INDEX]
        if labelled:
            first_label = min(first_label, width - n + labelled[0])
    # Position t predicts the token at t + 1: the logits from column first_label − 1 on are needed.
    keep = max(width - first_label + 1, 1)
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": position_ids.to(device),
        "use_cache": False,
    }
    logits = model(**inputs, logits_to_keep=keep).logits if keeps_logits else model(**inputs).logits
    logits = logits[:, -keep:-1] if keep > 1 else logits[:, :0]
    targets = labels[:, width - keep + 1 :].to(device)
    scored = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits[scored].float(), dim=-1)
    wanted = targets[scored]
    token_logps = logps.gather(1, wanted[:, None]).squeeze(1)
    hits = logps.argmax(dim=-1) == wanted
    owners = torch.arange(len(sequences), device=device)[:, None].expand_as(scored)[scored]
    sums = token_logps.new_zeros(len(sequences)).index_add(0, owners, token_logps)
    misses = torch.zeros(len(sequences), dtype=torch.long, device=device).index_add(0, owners, (~hits).long())
    counts = scored.sum(dim=1)
    return [
        ReferenceScore(-total, count, count > 0 and miss == 0)
        for total, count, miss in zip(sums.tolist(), counts.tolist(), misses.tolist(), strict=True)
    ]
