"""Variable-length attention: the same hidden states, losses and gradients as Hugging Face's masked sdpa, with
every SDPA call causal, unmasked and no longer than a sequence; plain sdpa where a mask or a cache is given."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.integrations import sdpa_attention

from align_train.data.batch import BUCKET_RATIO, Segments
from align_train.modeling.attention import (
    GROUPED_SDPA,
    VARLEN_SDPA,
    grouped_heads,
    register,
    segments_of_positions,
)
from align_train.modeling.capabilities import choose_attention
from align_train.modeling.head import LabelledLM
from schemas import ConfigError
from tests.align_train.token_batches import collated, objective_loss

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 40


def layout(seed: int, *, packed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``seq_ids`` and ``position_ids`` of three rows: sequences of 1-15 tokens packed one after another
    (positions restart, the tail is padding), or one sequence a row, right-padded."""
    gen = torch.Generator().manual_seed(seed)
    seq_ids = torch.full((3, WIDTH), -1)
    positions = torch.arange(WIDTH).repeat(3, 1)
    seq = 0
    for row in range(3):
        at = 0
        while True:
            n = int(torch.randint(1, 16, (1,), generator=gen))
            if at + n > WIDTH or (not packed and at > 0):
                break
            seq_ids[row, at : at + n] = seq
            positions[row, at : at + n] = torch.arange(n)
            seq, at = seq + 1, at + n
        if packed:
            positions[row, at:] = torch.arange(WIDTH - at)
    return seq_ids, positions


SHAPE = {
    "vocab_size": 97,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "intermediate_size": 128,
}


def gqa_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SHAPE, max_position_embeddings=256)).double()


@pytest.mark.parametrize("seed", range(4))
def test_segments_gather_each_sequence_once_in_buckets_it_nearly_fills(seed: int) -> None:
    seq_ids, _ = layout(seed, packed=True)
    segments = Segments.of(seq_ids)
    flat = seq_ids.reshape(-1)
    sizes = [n * length for n, length in segments.buckets]
    assert segments.gather.numel() == sum(sizes)
    real = (flat >= 0).nonzero().squeeze(1)
    # Every real token comes back from the slot it was gathered into.
    assert torch.equal(segments.gather[segments.scatter[real]], real)
    lengths = torch.bincount(flat[real])
    got = []
    for part, (n, length) in zip(segments.gather.split(sizes), segments.buckets, strict=True):
        for slots in part.view(n, length):
            ids = flat[slots]
            got.append(int(lengths[ids[0]]))
            assert (ids == ids[0]).all()  # one sequence a slot row, padded with its own first token
            assert lengths[ids[0]] * BUCKET_RATIO >= length
    assert sorted(got) == sorted(lengths.tolist())


def test_positions_give_the_layout_transformers_reads() -> None:
    seq_ids, positions = layout(0, packed=True)
    from_positions = segments_of_positions(positions)
    # Read from positions, the padding tail of a row is a sequence of its own; the real sequences agree.
    real = (seq_ids.reshape(-1) >= 0).nonzero().squeeze(1)
    slots = from_positions.scatter[real]
    assert torch.equal(from_positions.gather[slots], real)


def hidden_and_grads(model: LlamaForCausalLM, seq_ids: torch.Tensor, **inputs: Any) -> list[torch.Tensor]:
    model.zero_grad()
    gen = torch.Generator().manual_seed(1)
    device = seq_ids.device
    ids = torch.randint(0, 97, seq_ids.shape, generator=gen).to(device)
    hidden = model.model(input_ids=ids, use_cache=False, **inputs).last_hidden_state[seq_ids >= 0]
    weights = torch.randn(hidden.shape, generator=gen, dtype=torch.float64).to(device, hidden.dtype)
    (hidden * weights).sum().backward()
    return [hidden.detach()] + [p.grad for p in model.model.parameters()]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("with_layout", [True, False], ids=["layout", "from-positions"])
def test_varlen_equals_masked_sdpa_with_gradients(packed: bool, with_layout: bool) -> None:
    register()
    seq_ids, positions = layout(2, packed=packed)
    model = gqa_llama()
    mask = None if packed else (seq_ids >= 0).long()
    expected = hidden_and_grads(model, seq_ids, position_ids=positions, attention_mask=mask)
    model.set_attn_implementation(VARLEN_SDPA)
    # Without a layout a right-padded row is one sequence, padding included: causal, so no real token sees it.
    segments = Segments.of(seq_ids) if with_layout else None
    got = hidden_and_grads(model, seq_ids, position_ids=positions, segments=segments)
    # float64 and the same arithmetic up to summation order: differences are rounding, ~1e-15.
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_every_attention_call_is_causal_unmasked_and_one_sequence_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register()
    seq_ids, positions = layout(3, packed=True)
    model = gqa_llama()
    model.set_attn_implementation(VARLEN_SDPA)
    calls: list[tuple[int, bool, bool]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(
        query: torch.Tensor, *args: Any, attn_mask: Any = None, is_causal: bool = False, **kw: Any
    ) -> Any:
        calls.append((query.shape[-2], attn_mask is None, is_causal))
        return sdpa(query, *args, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    hidden_and_grads(model, seq_ids, position_ids=positions, segments=Segments.of(seq_ids))
    longest = int(torch.bincount(seq_ids[seq_ids >= 0]).max())
    assert calls
    assert all(unmasked and (causal or length == 1) for length, unmasked, causal in calls)
    assert max(length for length, _, _ in calls) == longest < WIDTH


@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("objective", ["sft", "dpo", "orpo"])
def test_objective_losses_and_gradients_equal_masked_sdpa(
    tokenizer: Any, smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM], objective: str, pack: bool
) -> None:
    policy, frozen = smol_models
    batch = collated(tokenizer, objective, pack)
    assert batch.segments is not None
    results = []
    for attention in ("sdpa", VARLEN_SDPA):
        model = LabelledLM(copy.deepcopy(policy), chunk_tokens=16)
        reference_lm = copy.deepcopy(frozen)
        for lm in (model.lm, reference_lm):
            choose_attention(attention, lm, is_main=False)
        reference = LabelledLM(reference_lm, chunk_tokens=16) if objective == "dpo" else None
        loss = objective_loss(model, reference, batch, objective)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss_sdpa, grads_sdpa), (loss_varlen, grads_varlen) = results
    # float32: the two paths sum the same products in other orders.
    torch.testing.assert_close(loss_varlen, loss_sdpa, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_varlen, grads_sdpa, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_generation_with_padding_and_a_cache_is_sdpa_s() -> None:
    register()
    model = gqa_llama().float().eval()
    prompts = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    expected = model.generate(input_ids=prompts, attention_mask=mask, **settings)
    model.set_attn_implementation(VARLEN_SDPA)
    assert torch.equal(model.generate(input_ids=prompts, attention_mask=mask, **settings), expected)


def test_grouped_sdpa_reads_the_grouped_heads_in_place_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A padded prompt batch and then three tokens a row over its cache, as evaluation's decoder runs them:
    GROUPED_SDPA gives sdpa's logits without one copy of the key/value heads (repeat_kv)."""
    copies = []
    real = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *a: copies.append(1) or real(*a))
    model = gqa_llama().eval()
    gen = torch.Generator().manual_seed(5)
    prompts, steps = torch.randint(0, 97, (2, 6), generator=gen), torch.randint(0, 97, (2, 3), generator=gen)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)

    def logits() -> torch.Tensor:
        cache = DynamicCache(config=model.config)
        first = model(input_ids=prompts, attention_mask=mask, position_ids=positions, cache=cache)
        step_mask = torch.cat([mask, torch.ones(2, 3, dtype=mask.dtype)], dim=1)
        step_positions = positions[:, -1:] + 1 + torch.arange(3)
        then = model(input_ids=steps, attention_mask=step_mask, position_ids=step_positions, cache=cache)
        return torch.cat([first.logits, then.logits], dim=1)

    with torch.no_grad():
        expected = logits()
        assert copies  # sdpa copies the heads for a masked call of several tokens
        copies.clear()
        with grouped_heads(model):
            assert model.config._attn_implementation == GROUPED_SDPA
            got = logits()
    assert not copies and model.config._attn_implementation == "sdpa"
    # float64: the kernel sums the same products per head, in an order that may differ by a few ulps.
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def sliding_qwen2() -> Qwen2ForCausalLM:
    config = Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    return Qwen2ForCausalLM(config)


def test_auto_takes_varlen_where_exact_and_keeps_the_models_own_elsewhere(
    capsys: pytest.CaptureFixture,
) -> None:
    assert choose_attention("auto", gqa_llama().float(), is_main=True) == VARLEN_SDPA
    sliding = sliding_qwen2()
    assert choose_attention("auto", sliding, is_main=True) == "sdpa"
    assert sliding.config._attn_implementation == "sdpa"
    assert "varlen_sdpa does not implement sliding_window" in capsys.readouterr().out


def test_an_explicit_attention_this_model_cannot_run_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sliding_window"):
        choose_attention(VARLEN_SDPA, sliding_qwen2(), is_main=False)
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed")
    with pytest.raises(ConfigError, match="flash_attention_2"):
        choose_attention("flash_attention_2", gqa_llama().float(), is_main=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlashAttention needs a GPU")
def test_on_a_gpu_every_bucket_runs_flash_attention_in_bf16() -> None:
    """The point of the layout: unmasked causal calls that FlashAttention takes (it raises otherwise)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    register()
    seq_ids, positions = layout(5, packed=True)
    model = gqa_llama().cuda().to(torch.bfloat16)
    inputs = {"position_ids": positions.cuda()}
    expected = hidden_and_grads(model, seq_ids.cuda(), **inputs)  # the mask: efficient or math kernel
    model.set_attn_implementation(VARLEN_SDPA)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        got = hidden_and_grads(model, seq_ids.cuda(), **inputs, segments=Segments.of(seq_ids).to("cuda"))
    # bf16 keeps 8 significant bits (eps 2^-8): two layers of rounding leave a few eps of relative error.
    for ours, theirs in zip(got, expected, strict=True):
        error = (ours.float() - theirs.float()).norm() / theirs.float().norm()
        assert error < 4 * 2**-8
