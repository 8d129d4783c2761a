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

The rows' common prefix (the chat template's system turn: 24 of the 89 tokens of an average row of the
batch-alignment experiment) is computed once and its keys and values shared by every batch, where the
model's cache allows it (:func:`~align_train.eval.decoding.supports_slots`): a row's padding then sits
between the prefix and its own tokens, hidden by the attention mask, and its positions go on from the
prefix's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from rich.progress import track
from transformers import DynamicCache, PreTrainedModel

from align_train.data.batch import IGNORE_INDEX, ParallelBatch
from align_train.data.collator import Collator
from align_train.eval.decoding import common_prefix, expand_cache, prefill_prefix, supports_slots
from align_train.modeling.attention import grouped_heads


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
    model: PreTrainedModel,
    collator: Collator,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    share_prefix: bool = True,
) -> list[ReferenceScore]:
    """The :class:`ReferenceScore` of each row (a preference row whose ``chosen`` is the reference)."""
    sequences = [_tokens(collator, row) for row in rows]
    return score_tokens(model, sequences, batch_size=batch_size, share_prefix=share_prefix)


@torch.no_grad()
def score_tokens(
    model: PreTrainedModel, sequences: Sequence[LabelledTokens], *, batch_size: int, share_prefix: bool = True
) -> list[ReferenceScore]:
    """The :class:`ReferenceScore` of each sequence's labelled tokens, batched by length; with
    ``share_prefix`` (where the model allows it) the sequences' common prefix is computed once."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    prefix = _unlabelled_prefix(sequences) if share_prefix and supports_slots(model) else []
    out = [ReferenceScore(0.0, 0, False)] * len(sequences)
    with grouped_heads(model):
        shared = prefill_prefix(model, prefix, device) if prefix else None
        for batch in track(batches, description="loss", transient=True):
            scores = _score(model, [sequences[i] for i in batch], device, keeps_logits, prefix, shared)
            for i, score in zip(batch, scores, strict=True):
                out[i] = score
    return out


def _unlabelled_prefix(sequences: Sequence[LabelledTokens]) -> list[int]:
    """The sequences' common token prefix, short of the position before each one's first labelled token
    (whose logits score that token)."""
    prefix = common_prefix([s.input_ids for s in sequences])
    first = min(
        (
            next((t for t, label in enumerate(s.labels) if label != IGNORE_INDEX), len(s.labels))
            for s in sequences
        ),
        default=0,
    )
    return prefix[: max(0, first - 1)]


def _tokens(collator: Collator, row: dict[str, Any]) -> LabelledTokens:
    tokens = collator(ParallelBatch.of([row]))
    return LabelledTokens(tokens.input_ids[0].tolist(), tokens.labels[0].tolist())


def _score(
    model: PreTrainedModel,
    sequences: list[LabelledTokens],
    device: torch.device,
    keeps_logits: bool,
    prefix: list[int],
    shared: DynamicCache | None,
) -> list[ReferenceScore]:
    """One batch, left-padded after the shared ``prefix`` (whose keys and values are ``shared``): every
    answer ends at the last column."""
    skip = len(prefix)
    width = max(len(s.input_ids) for s in sequences) - skip
    shape = (len(sequences), width)
    input_ids = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), skip + width), dtype=torch.long)
    attention_mask[:, :skip] = 1
    position_ids = torch.zeros(shape, dtype=torch.long)
    first_label = width
    for r, s in enumerate(sequences):
        n = len(s.input_ids) - skip
        input_ids[r, width - n :] = torch.tensor(s.input_ids[skip:])
        labels[r, width - n :] = torch.tensor(s.labels[skip:])
        attention_mask[r, skip + width - n :] = 1
        position_ids[r, width - n :] = torch.arange(skip, skip + n)
        labelled = [t for t, label in enumerate(s.labels[skip:]) if label != IGNORE_INDEX]
        if labelled:
            first_label = min(first_label, width - n + labelled[0])
    # Position t predicts the token at t + 1: the logits from column first_label − 1 on are needed.
    keep = max(width - first_label + 1, 1)
    inputs: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "position_ids": position_ids.to(device),
        "use_cache": shared is not None,
    }
    if shared is not None:
        inputs["cache"] = expand_cache(model, shared, len(sequences), room=width)
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
