"""Greedy generation for evaluation: ``transformers`` on any device, or vLLM on a GPU machine.

Both take prompts as token ids (the chat template already applied by the collator), so the two backends
see exactly the same input and no tokenizer adds a second BOS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from rich.progress import track
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from schemas import ConfigError, import_optional


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """The greedy continuation of each prompt, up to its first stop token, as text.

    Prompts are batched longest first with left padding, so a batch pads little and every continuation
    starts right after its own prompt.
    """
    device = next(model.parameters()).device
    stop = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=stop
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    texts = [""] * len(prompts)
    for batch in track(batches, description="generate", transient=True):
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attention_mask[row, width - len(prompts[i]) :] = 1
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
        )
        for row, i in enumerate(batch):
            new = output[row, width:].tolist()
            end = next((k for k, token in enumerate(new) if token in stop), len(new))
            texts[i] = tokenizer.decode(new[:end], skip_special_tokens=True)
    return texts


def generate_vllm(
    model_dir: Path, prompts: Sequence[list[int]], *, max_new_tokens: int, dtype: str
) -> list[str]:
    """The same greedy continuations with vLLM."""
    vllm = import_vllm()
    llm = vllm.LLM(
        model=str(model_dir), dtype={"bf16": "bfloat16", "fp32": "float32"}.get(dtype, "auto"), seed=0
    )
    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True)
    outputs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
    return [output.outputs[0].text for output in outputs]


def import_vllm() -> ModuleType:
    """vLLM, a GPU-only optional install, imported only for ``backend='vllm'``."""
    return import_optional(
        "vllm",
        feature="backend='vllm'",
        install="pip install vllm (GPU machines), or use backend='transformers'",
    )


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's end-of-sequence token and the model's generation stop tokens (several for some
    chat models, e.g. Llama 3's ``<|eot_id|>``)."""
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        msg = (
            "the tokenizer has no eos_token and the model no generation eos_token_id: generation cannot stop"
        )
        raise ConfigError(msg)
    return list(dict.fromkeys(ids))
