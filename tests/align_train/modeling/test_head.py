"""The output layer on labelled positions in chunks: the same log-probabilities, losses and gradients as the
full logits, without ever holding them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaForCausalLM

from align_train.data.batch import ParallelBatch
from align_train.data.collator import Collator
from align_train.modeling.head import LabelledLM, labelled_logps
from align_train.modeling.logps import scored_positions
from tests.align_train.corpus import sft_rows
from tests.align_train.token_batches import collated, objective_loss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("uniform_weights", [False, True], ids=["recomputed", "in-forward"])
@pytest.mark.parametrize("upstream_kind", ["per-position", "token-mean"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_labelled_logps_match_log_softmax_and_its_gradients(
    chunk: int, upstream_kind: str, uniform_weights: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=gen, requires_grad=True)
    head = torch.nn.Linear(5, 11)
    targets = torch.randint(0, 11, (7,), generator=gen)
    # DPO weighs each position by its sequence's term; SFT's token mean weighs them alike.
    upstream = torch.randn(7, generator=gen) if upstream_kind == "per-position" else torch.full((7,), -1 / 7)

    got = labelled_logps(
        hidden, head.weight, head.bias, targets, chunk_tokens=chunk, uniform_weights=uniform_weights
    )
    (got * upstream).sum().backward()
    grads = [hidden.grad, head.weight.grad, head.bias.grad]
    hidden.grad = head.weight.grad = head.bias.grad = None
    expected = torch.log_softmax(head(hidden), dim=-1).gather(1, targets[:, None]).squeeze(1)
    (expected * upstream).sum().backward()

    torch.testing.assert_close(got, expected)
    for ours, reference in zip(grads, [hidden.grad, head.weight.grad, head.bias.grad], strict=True):
        torch.testing.assert_close(ours, reference)


def test_labelled_logps_pass_gradcheck_in_float64() -> None:
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    head = torch.nn.Linear(4, 6, dtype=torch.float64)
    targets = torch.randint(0, 6, (5,), generator=gen)

    def logps(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return labelled_logps(h, weight, bias, targets, chunk_tokens=2).double()

    weight = head.weight.detach().clone().requires_grad_(True)
    bias = head.bias.detach().clone().requires_grad_(True)
    # The function keeps its softmax in float32, so the check is to float32 precision.
    assert torch.autograd.gradcheck(logps, (hidden, weight, bias), eps=1e-3, atol=1e-3, rtol=1e-2)


class CountMatmuls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("uniform_weights", "backward_matmuls"), [(False, 3 * 3), (True, 0)])
def test_gradients_of_a_token_mean_are_computed_in_the_forward_pass(
    uniform_weights: bool, backward_matmuls: int
) -> None:
    hidden = torch.randn(7, 5, requires_grad=True)
    head = torch.nn.Linear(5, 11, bias=False)
    logps = labelled_logps(
        hidden, head.weight, None, torch.arange(7), chunk_tokens=3, uniform_weights=uniform_weights
    )
    with CountMatmuls() as counter:
        (-logps.mean()).backward()
    # Recomputed: per chunk of 3 rows, the logits, then the gradients of hidden and weight.
    assert counter.count == backward_matmuls


def test_a_frozen_output_layer_gets_no_gradient_and_no_work() -> None:
    hidden = torch.randn(4, 3, requires_grad=True)
    head = torch.nn.Linear(3, 8, bias=False).requires_grad_(False)
    labelled_logps(hidden, head.weight, None, torch.tensor([1, 2, 3, 4]), chunk_tokens=2).sum().backward()
    assert head.weight.grad is None and hidden.grad is not None


@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("objective", ["sft", "dpo", "orpo"])
def test_chunked_losses_and_gradients_equal_the_full_logits(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], objective: str, pack: bool
) -> None:
    policy, frozen = smol_models
    batch = collated(tokenizer, objective, pack)
    results = []
    for chunk_tokens in (None, 16):  # today's path (full logits), then chunks of 16 labelled positions
        model = LabelledLM(copy.deepcopy(policy), chunk_tokens=chunk_tokens)
        reference = LabelledLM(frozen, chunk_tokens=chunk_tokens) if objective == "dpo" else None
        loss = objective_loss(model, reference, batch, objective)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (full, full_grads), (chunked, chunked_grads) = results
    assert batch.num_loss_tokens > 16  # several chunks
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    assert full_grads.keys() == chunked_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert full_grads["lm.model.embed_tokens.weight"].abs().sum() > 0


def test_chunked_lora_gradients_equal_the_full_logits(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    from peft import LoraConfig, get_peft_model

    batch = collated(tokenizer, "sft", pack=True)
    grads = []
    for chunk_tokens in (None, 16):
        torch.manual_seed(0)
        peft_model = get_peft_model(
            copy.deepcopy(smol_models[0]),
            LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        model = LabelledLM(peft_model, chunk_tokens=chunk_tokens)
        objective_loss(model, None, batch, "sft").backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all("lora_" in name for name in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-7, msg=name)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


def test_the_full_logits_never_exist(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    batch = collated(tokenizer, "sft", pack=True)
    vocab = len(tokenizer)
    tokens = batch.input_ids.numel()
    largest = {}
    largest_parameter = max(p.numel() for p in smol_models[0].parameters())  # the embedding, vocab × 64
    for chunk_tokens in (None, 16):
        model = LabelledLM(copy.deepcopy(smol_models[0]), chunk_tokens=chunk_tokens)
        with LargestTensor() as tracker:
            objective_loss(model, None, batch, "sft").backward()
        largest[chunk_tokens] = tracker.numel
    assert largest[None] >= tokens * vocab  # today's path: logits of every position
    # Chunked: nothing larger than one chunk's logits (16 × vocab) or a parameter's gradient.
    assert largest[16] == max(16 * vocab, largest_parameter) < tokens * vocab / 4


def test_a_batch_without_labels_still_gives_the_output_layer_a_gradient(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    batch = Collator(tokenizer, objective="sft", max_length=8)(ParallelBatch.of(sft_rows(2)))
    assert batch.num_loss_tokens == 0
    model = LabelledLM(copy.deepcopy(smol_models[0]), chunk_tokens=16)
    loss = objective_loss(model, None, batch, "sft")
    loss.backward()  # DDP needs every parameter in the graph, even with nothing to learn
    assert loss.item() == 0.0
    assert model.lm.lm_head.weight.grad is not None


def test_chunked_logps_are_the_models_own_cross_entropy(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM]
) -> None:
    batch = collated(tokenizer, "sft", pack=True)
    assert batch.input_ids.shape[0] > 1  # packed into several rows of max_length
    chunked = LabelledLM(smol_models[0], chunk_tokens=7)(**batch.labelled_inputs()).logps
    assert chunked.sums.dtype == torch.float32
    logits = smol_models[0](**batch.model_inputs()).logits
    scored, targets, _ = scored_positions(batch.labels, batch.seq_ids)
    expected = F.cross_entropy(logits[:, :-1][scored], targets)
    torch.testing.assert_close(-chunked.sums.sum() / chunked.counts.sum(), expected, rtol=1e-5, atol=1e-6)
    assert int(chunked.counts.sum()) == batch.num_loss_tokens
