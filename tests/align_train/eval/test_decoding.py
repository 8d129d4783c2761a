"""Slot decoding gives ``model.generate``'s greedy continuations: prompts of different lengths with and
without a shared chat-template prefix, rows that stop early and late, more prompts than slots.

In float64 the two agree token for token: only the order of float sums differs between a batch of rows
and a row alone (about 1e-16 relative), far below the gap between a random model's two best logits.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align_train.eval.decoding import _draft, greedy_continuations, supports_slots

torch.set_num_threads(1)

QUESTIONS = [
    "What is 2 plus 3?",
    "x",
    "Cuánto es 7 por 8, por favor? Responde con un número.",
    "The quick brown fox jumps again and again over the lazy dog, how many times?",
    "Wie viel ist 12 geteilt durch 4?",
    "Combien font trois et quatre ?",
    "Name a prime number bigger than 10 and smaller than 20, and explain why it is prime.",
]


def tiny_gqa_llama(tokenizer: Any, scale: float) -> LlamaForCausalLM:
    """A tiny random Llama with grouped-query attention (4 query heads over 2 key/value heads) and an
    untied output layer, weights drawn at ``scale`` from seed 0, float64."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tie_word_embeddings=False,
        initializer_range=scale,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).double().eval()


@pytest.fixture(scope="module")
def gqa_model(tokenizer: Any) -> LlamaForCausalLM:
    """Weights 5× the usual scale make the continuations depend on the prompt; at the usual scale a
    2-layer model repeats one token whatever it reads."""
    return tiny_gqa_llama(tokenizer, 0.1)


def reference(model: LlamaForCausalLM, prompt: list[int], stop: list[int], max_new_tokens: int) -> list[int]:
    """``model.generate``'s greedy continuation of one prompt, up to its first stop token (included)."""
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop or None,
        pad_token_id=0,
    )[0, len(prompt) :].tolist()
    end = next((k + 1 for k, token in enumerate(out) if token in stop), len(out))
    return out[:end]


@pytest.mark.parametrize("lookahead", [0, 3], ids=["one-token-steps", "prompt-lookup"])
@pytest.mark.parametrize("chat", [True, False], ids=["shared-prefix", "no-prefix"])
def test_slot_decoding_matches_generate(
    gqa_model: LlamaForCausalLM, tokenizer: Any, chat: bool, lookahead: int
) -> None:
    if chat:  # the SmolLM2 template's system turn: a long shared prefix
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            for q in QUESTIONS
        ]
    else:
        texts = QUESTIONS
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(p) for p in prompts}) >= 5
    assert supports_slots(gqa_model)
    # Stop tokens drawn from the continuations without any, so that rows end at different steps.
    free = [reference(gqa_model, p, [], 12) for p in prompts]
    assert len({tuple(f) for f in free}) == len(prompts)
    stop = sorted({free[0][3], free[2][1], free[4][8], free[5][0]})
    expected = [reference(gqa_model, p, stop, 12) for p in prompts]
    lengths = sorted(len(e) for e in expected)
    assert lengths[0] < 6 and lengths[-1] == 12  # early and late stops, and rows cut at max_new_tokens
    for batch_size in (1, 3, 16):
        got = greedy_continuations(
            gqa_model, prompts, stop=stop, max_new_tokens=12, batch_size=batch_size, lookahead=lookahead
        )
        assert got == expected, batch_size


def test_prompt_lookup_keeps_drafts_and_the_greedy_answer(tokenizer: Any) -> None:
    """A small random model (weights at 2.5× the usual scale) soon repeats itself, so many drafts are its
    own predictions: the same continuations come from fewer forwards, with stops and the token limit
    falling inside a step's kept drafts."""
    model = tiny_gqa_llama(tokenizer, 0.05)
    prompts = [tokenizer(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    free = [reference(model, p, [], 30) for p in prompts]
    # Stop tokens that occur once in all the continuations, late in them, so that some rows stop early.
    stop = [row[k] for row in free for k in range(8, 30) if sum(r.count(row[k]) for r in free) == 1][:2]
    expected = [reference(model, p, stop, 30) for p in prompts]
    assert min(len(e) for e in expected) < 30 and max(len(e) for e in expected) == 30
    forwards = []
    model.register_forward_hook(lambda module, args, kwargs: forwards.append(1))
    for lookahead in (0, 1, 4, 8):
        forwards.clear()
        got = greedy_continuations(
            model, prompts, stop=stop, max_new_tokens=30, batch_size=3, lookahead=lookahead
        )
        assert got == expected, lookahead
        if lookahead == 0:
            one_token_steps = len(forwards)
        else:
            assert len(forwards) < one_token_steps * (1 if lookahead == 1 else 0.8), lookahead


def test_draft_is_what_followed_the_latest_match() -> None:
    assert _draft([5, 6, 7, 1, 5, 6, 9, 2, 5, 6], 2) == [9, 2]  # the latest "5 6", not the first
    assert _draft([1, 2, 3, 4, 2, 3], 5) == [4, 2, 3]  # shorter when the context ends
    assert _draft([8, 1, 2, 9, 7, 3, 2], 2) == [9, 7]  # no "3 2" earlier: the last token alone
    assert _draft([1, 2, 3], 4) == []
    assert _draft([1, 1, 1], 0) == []
