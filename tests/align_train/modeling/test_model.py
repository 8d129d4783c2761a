"""Models of a run: activation checkpointing (same loss and gradients, layers recomputed) and compiled
layers (same loss and gradients, one compile for every batch length)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from align_train.data.batch import ParallelBatch
from align_train.data.collator import Collator
from align_train.modeling.capabilities import choose_attention
from align_train.modeling.head import LabelledLM
from align_train.modeling.model import compile_layers, enable_activation_checkpointing
from schemas import ConfigError
from tests.align_train.corpus import sft_rows

torch.set_num_threads(1)


def lora(model: LlamaForCausalLM) -> Any:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(model, LoraConfig(r=2, lora_dropout=0.3, target_modules=["q_proj", "v_proj"]))


def counted(forward: Any, calls: list[int]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return forward(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("adapters", [False, True], ids=["full", "lora"])
def test_activation_checkpointing_recomputes_layers_and_keeps_loss_and_gradients(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], adapters: bool
) -> None:
    batch = Collator(tokenizer, objective="sft", max_length=256, pack=True)(ParallelBatch.of(sft_rows(4)))
    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(smol_models[0]).train()
        if adapters:  # LoRA dropout: the recomputed layers must draw the same masks
            model = lora(model)
        if checkpointing:
            enable_activation_checkpointing(model)
        calls = []
        # Count the MLP forwards (module hooks do not run when a checkpoint recomputes).
        for layer in model.get_decoder().layers if not adapters else model.get_base_model().model.layers:
            layer.mlp.forward = counted(layer.mlp.forward, calls)
        torch.manual_seed(1)
        labelled = LabelledLM(model, chunk_tokens=32)
        out = labelled(**batch.labelled_inputs(), uniform_weights=True)
        loss = -out.logps.sums.sum() / batch.num_loss_tokens
        forward_calls = len(calls)
        loss.backward()
        grads = {n: p.grad for n, p in labelled.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads, forward_calls, len(calls) - forward_calls))
    (loss, grads, forward, recomputed), (loss_ac, grads_ac, forward_ac, recomputed_ac) = results
    assert (forward, recomputed) == (2, 0)
    assert (forward_ac, recomputed_ac) == (2, 2)  # each layer ran again in the backward pass
    torch.testing.assert_close(loss_ac, loss, rtol=0, atol=0)
    assert grads.keys() == grads_ac.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ac[name], grad, rtol=1e-6, atol=1e-8, msg=name)


def test_activation_checkpointing_refuses_a_model_without_it(
    smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM],
) -> None:
    model = copy.deepcopy(smol_models[0])
    model.supports_gradient_checkpointing = False
    with pytest.raises(ConfigError, match="does not support it: set it to false"):
        enable_activation_checkpointing(model)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_compiled_layers_keep_loss_and_gradients_and_compile_once(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], checkpointing: bool
) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    eager = copy.deepcopy(smol_models[0]).train()
    choose_attention("auto", eager, is_main=False)
    if checkpointing:
        enable_activation_checkpointing(eager)
    compiled = copy.deepcopy(eager)
    compile_layers(compiled)
    collator = Collator(tokenizer, objective="sft", max_length=256, pack=True, one_row=True)
    graphs = []
    for rows in (4, 6, 3):  # three batch lengths
        batch = collator(ParallelBatch.of(sft_rows(rows)))
        results = []
        for model in (eager, compiled):
            model.zero_grad()
            labelled = LabelledLM(model, chunk_tokens=32)
            loss = -labelled(**batch.labelled_inputs(), uniform_weights=True).logps.sums.sum()
            loss.backward()
            results.append((loss.detach(), [p.grad for p in model.parameters()]))
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        (loss, grads), (loss_compiled, grads_compiled) = results
        # float32, fused kernels summing in other orders: rounding-level differences only.
        torch.testing.assert_close(loss_compiled, loss, rtol=1e-5, atol=1e-5)
        for got, expected in zip(grads_compiled, grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert graphs[0] > 0
    assert graphs[1:] == graphs[:1] * 2  # the later lengths reused the first compile
