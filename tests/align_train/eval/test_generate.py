"""Greedy generation: batching with left padding changes nothing, and models that slot decoding cannot
serve get ``model.generate``'s continuations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from align_train.eval.decoding import supports_slots
from align_train.eval.generate import generate_batches, generate_greedy
from align_train.modeling.model import load_tokenizer

torch.set_num_threads(1)

TEXTS = ["What is 2 plus 3?", "x", "Cuánto es 7 por 8, por favor?", "The quick brown fox jumps again"]


def test_batched_generation_matches_one_prompt_at_a_time(model_dir: Path) -> None:
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    assert supports_slots(model)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=1)
    assert batched == alone
    assert len(set(batched)) > 1  # the continuation depends on the prompt, so padding could show


def test_a_sliding_window_model_generates_with_model_generate(tokenizer: Any) -> None:
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=0,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    assert not supports_slots(model)  # a window counts columns: padding inside a row would move it
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    texts = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    alone = [
        generate_batches(model, [p], stop=[tokenizer.eos_token_id], max_new_tokens=6, batch_size=1)[0]
        for p in prompts
    ]
    assert texts == [tokenizer.decode([t for t in a if t != tokenizer.eos_token_id]) for a in alone]
    assert len(set(texts)) > 1
