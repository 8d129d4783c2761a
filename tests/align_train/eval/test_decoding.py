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

from align_train.eval.decoding import greedy_continuations, supports_slots

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


@pytest.fixture(scope="module")
def gqa_model(tokenizer: Any) -> LlamaForCausalLM:
    """A tiny random Llama with grouped-query attention (4 query heads over 2 key/value heads), float64.

    Weights 5× the usual scale and an untied output layer make its continuations depend on the prompt; at
    the usual scale a 2-layer model repeats one token whatever it reads."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).double().eval()


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


@pytest.mark.parametrize("chat", [True, False], ids=["shared-prefix", "no-prefix"])
def test_slot_decoding_matches_generate(gqa_model: LlamaForCausalLM, tokenizer: Any, chat: bool) -> None:
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
        got = greedy_continuations(gqa_model, prompts, stop=stop, max_new_tokens=12, batch_size=batch_size)
        assert got == expected, batch_size
