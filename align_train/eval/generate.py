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

from align_train.eval.decoding import greedy_continuations, supports_slots
from schemas import ConfigError, import_optional


def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    lookahead: int = 0,
) -> list[str]:
    """The greedy continuation of each prompt, up to its first stop token, as text.

    Decoded in slots (:mod:`align_train.eval.decoding`: a finished row hands its place to the next
    prompt, and ``lookahead`` tokens per row are drafted by prompt lookup and checked in the same step)
    where the model allows it, else with ``model.generate`` a batch at a time.
    """
    stop = stop_token_ids(model, tokenizer)
    if supports_slots(model):
        tokens = greedy_continuations(
            model,
            prompts,
            stop=stop,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            lookahead=lookahead,
        )
    else:  # longest first, so that a batch pads little
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        ordered = generate_batches(
            model,
            [prompts[i] for i in order],
            stop=stop,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            pad=tokenizer.pad_token_id,
        )
        tokens = [[] for _ in prompts]
        for i, new in zip(order, ordered, strict=True):
            tokens[i] = new
    texts = []
    for new in tokens:
        end = next((k for k, token in enumerate(new) if token in stop), len(new))
        texts.append(tokenizer.decode(new[:end], skip_special_tokens=True))
    return texts


@torch.no_grad()
def generate_batches(
    model: PreTrainedModel,
    prompts: Sequence[list[int]],
    *,
    stop: Sequence[int],
    max_new_tokens: int,
    batch_size: int,
    pad: int | None = None,
) -> list[list[int]]:
    """The greedy continuations by ``model.generate``, ``batch_size`` prompts at a time in the order given,
    left-padded; each ends at its first stop token (included) or after ``max_new_tokens`` tokens."""
    device = next(model.parameters()).device
    pad = stop[0] if pad is None else pad
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=list(stop)
    )
    out: list[list[int]] = []
    for start in track(range(0, len(prompts), batch_size), description="generate", transient=True):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
        for row in output[:, width:].tolist():
            end = next((k + 1 for k, token in enumerate(row) if token in stop), len(row))
            out.append(row[:end])
    return out


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
