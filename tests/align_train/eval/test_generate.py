"""Greedy generation: batching with left padding changes nothing."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from align_train.eval.generate import generate_greedy
from align_train.modeling.model import load_tokenizer

torch.set_num_threads(1)


def test_batched_generation_matches_one_prompt_at_a_time(model_dir: Path) -> None:
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    texts = ["What is 2 plus 3?", "x", "Cuánto es 7 por 8, por favor?", "The quick brown fox jumps again"]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=1)
    assert batched == alone
    assert len(set(batched)) > 1  # the continuation depends on the prompt, so padding could show
