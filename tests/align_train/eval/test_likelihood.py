"""The reference answer's loss and ``is_greedy`` in one pass: the same numbers as the full logits and as
lm-evaluation-harness's loglikelihood requests, on the tiny model over the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.data.batch import IGNORE_INDEX, ParallelBatch
from align_train.data.collator import Collator
from align_train.eval.evaluate import load_for_eval
from align_train.eval.likelihood import LabelledTokens, reference_scores, score_tokens
from align_train.modeling.logps import sequence_logps

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(model_dir: Path) -> tuple[Any, Any]:
    return load_for_eval(model_dir, base_model=None)


def answer(prompt: list[int], continuation: list[int]) -> LabelledTokens:
    return LabelledTokens(prompt + continuation, [IGNORE_INDEX] * len(prompt) + continuation)


def test_scores_match_lm_eval_loglikelihood(tiny: tuple[Any, Any]) -> None:
    """Sum of log-probabilities and ``is_greedy`` as lm-eval's ``HFLM`` computes them for the same tokens:
    for the model's own greedy continuations (greedy), for them with one token changed (not greedy), and
    for text continuations, in batches of mixed lengths."""
    from lm_eval.models.huggingface import HFLM

    tokenizer, model = tiny
    prompts = [
        tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in ["What is 2 plus 3?", "x", "Cuánto es 7 por 8, por favor?", "The quick brown fox"]
    ]
    cases = []
    for prompt in prompts:
        greedy = model.generate(
            input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=5, pad_token_id=0
        )[0, len(prompt) :].tolist()
        changed = [*greedy[:2], (greedy[2] + 1) % len(tokenizer), *greedy[3:]]
        text = tokenizer(" The answer is 5.", add_special_tokens=False)["input_ids"]
        cases += [(prompt, greedy), (prompt, changed), (prompt, text)]
    ours = score_tokens(model, [answer(p, c) for p, c in cases], batch_size=4)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, device="cpu")
    theirs = lm._loglikelihood_tokens([(("", ""), p, c) for p, c in cases], disable_tqdm=True)
    assert [s.greedy for s in ours] == [greedy for _, greedy in theirs]
    assert [s.greedy for s in ours] == [True, False, False] * len(prompts)
    for score, (logp, _), (_, continuation) in zip(ours, theirs, cases, strict=True):
        assert score.tokens == len(continuation)
        assert -score.nll == pytest.approx(logp, rel=1e-5, abs=1e-4)


def test_reference_loss_is_the_training_loss_on_full_logits(tiny: tuple[Any, Any]) -> None:
    """Rows tokenised by the collator one by one, batched by length with left padding and scored on the
    answer positions only: the loss that ``sequence_logps`` gives on the collator's padded batch."""
    tokenizer, model = tiny
    collator = Collator(tokenizer, objective="sft", max_length=2048)
    rows = [
        {
            "group_id": f"g{i}",
            "lang": "en",
            "kind": "preference",
            "messages": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": reply}],
            "rejected": None,
        }
        for i, (question, reply) in enumerate(
            [
                ("What is 2 plus 3?", "2 + 3 = 5. The answer is 5."),
                ("x", "y"),
                ("Cuánto es 7 por 8?", "7 × 8 = 56. La respuesta es 56, claro, sin duda alguna."),
            ]
        )
    ]
    scores = reference_scores(model, collator, rows, batch_size=2)
    batch = collator(ParallelBatch.of(rows))
    with torch.no_grad():
        logps = sequence_logps(
            model(**batch.model_inputs()).logits, batch.labels, batch.seq_ids, batch.num_seqs
        )
    assert [s.tokens for s in scores] == logps.counts.tolist()
    assert [s.nll for s in scores] == pytest.approx((-logps.sums).tolist(), rel=1e-5)
    assert not any(s.greedy for s in scores)  # a random model does not answer these


def test_a_shared_prefix_is_computed_once_with_the_same_scores(tiny: tuple[Any, Any]) -> None:
    """Rows that share a system turn: scored over the prefix's cache, the loss and ``is_greedy`` of each
    row are those of the whole row computed in one piece (``share_prefix=False``), for the model's
    own greedy answers and for changed ones, in batches of mixed lengths."""
    import align_train.eval.likelihood as likelihood

    tokenizer, model = tiny
    system = tokenizer("You are a careful assistant. Answer in one line.\n", add_special_tokens=False)
    prompts = [
        system["input_ids"] + tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in ["What is 2 plus 3?", "x", "Cuánto es 7 por 8, por favor?"]
    ]
    sequences = []
    for prompt in prompts:
        greedy = model.generate(
            input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=4, pad_token_id=0
        )[0, len(prompt) :].tolist()
        sequences += [answer(prompt, greedy), answer(prompt, [*greedy[:1], (greedy[1] + 1) % len(tokenizer)])]
    assert len(likelihood._unlabelled_prefix(sequences)) == len(system["input_ids"])
    shared = score_tokens(model, sequences, batch_size=4)
    whole = score_tokens(model, sequences, batch_size=4, share_prefix=False)
    assert [s.greedy for s in shared] == [s.greedy for s in whole] == [True, False] * len(prompts)
    assert [s.tokens for s in shared] == [s.tokens for s in whole]
    assert [s.nll for s in shared] == pytest.approx([s.nll for s in whole], rel=1e-5, abs=1e-4)
