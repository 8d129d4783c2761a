"""Which attention, batch layout and output layer a model runs, each probed on the model itself."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pytest
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from align_train.modeling.attention import VARLEN_SDPA
from align_train.modeling.capabilities import (
    Capabilities,
    choose,
    choose_head,
    choose_packing,
    chunked_head_is_exact,
    packing_is_exact,
)
from align_train.modeling.head import default_chunk_tokens
from schemas import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class IgnoresPositions(LlamaForCausalLM):
    """A model whose attention never sees packed position ids, like a backend without packing support."""

    def forward(self, *args: Any, position_ids: Any = None, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)


class ScaledLogits(LlamaForCausalLM):
    """A model that post-processes its logits (as Cohere scales and Gemma soft-caps them)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().forward(*args, **kwargs)
        out.logits = 0.5 * out.logits  # as Cohere scales its logits
        return out


@pytest.mark.parametrize("pack", ["auto", True, False])
def test_packing_is_used_only_where_the_model_computes_it_exactly(
    model_dir: Path, pack: bool | Literal["auto"]
) -> None:
    supported = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    unsupported = IgnoresPositions.from_pretrained(model_dir, use_safetensors=True)
    assert packing_is_exact(supported) and not packing_is_exact(unsupported)
    assert choose_packing(pack, supported, is_main=False) is (pack is not False)
    if pack is True:
        with pytest.raises(ConfigError, match="ignores packed position_ids"):
            choose_packing(pack, unsupported, is_main=False)
    else:
        assert choose_packing(pack, unsupported, is_main=False) is False


def test_the_chunked_head_is_used_only_where_the_logits_are_a_linear_layer(
    smol_models: tuple[LlamaForCausalLM, LlamaForCausalLM],
) -> None:
    from peft import LoraConfig, get_peft_model

    plain = smol_models[0]
    assert chunked_head_is_exact(plain)
    assert choose_head(plain, chunk_tokens=None, is_main=False) == default_chunk_tokens(
        plain.config.vocab_size
    )
    assert choose_head(plain, chunk_tokens=32, is_main=False) == 32
    capped = ScaledLogits(plain.config)
    capped.load_state_dict(plain.state_dict())
    assert not chunked_head_is_exact(capped)
    assert choose_head(capped, chunk_tokens=32, is_main=False) is None
    lora_head = get_peft_model(copy.deepcopy(plain), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert choose_head(lora_head, chunk_tokens=32, is_main=False) is None
    lora = get_peft_model(copy.deepcopy(plain), LoraConfig(r=2, target_modules=["q_proj"]))
    assert choose_head(lora, chunk_tokens=32, is_main=False) == 32
    assert default_chunk_tokens(49152) == 1365 and default_chunk_tokens(10**7) == 64


def test_choose_decides_attention_then_layout_then_output_layer(
    model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    vocab = model.config.vocab_size
    chosen = choose(model, attention="auto", pack="auto", chunk_tokens=None, is_main=True)
    assert chosen == Capabilities(VARLEN_SDPA, True, default_chunk_tokens(vocab))
    assert chosen.one_row and model.config._attn_implementation == VARLEN_SDPA
    assert capsys.readouterr().out == ""
    # Under a mask, packed rows stay rows: one long row would cost its length squared.
    masked = choose(model, attention="sdpa", pack=True, chunk_tokens=32, is_main=False)
    assert masked == Capabilities("sdpa", True, 32) and not masked.one_row
    assert model.config._attn_implementation == "sdpa"
    # A model that drops position ids would let packed sequences see each other: its batches are padded.
    blind = IgnoresPositions.from_pretrained(model_dir, use_safetensors=True)
    padded = choose(blind, attention="auto", pack="auto", chunk_tokens=None, is_main=True)
    assert padded == Capabilities(VARLEN_SDPA, False, default_chunk_tokens(vocab)) and not padded.one_row
    assert "batches are padded" in capsys.readouterr().out
    capped = ScaledLogits.from_pretrained(model_dir, use_safetensors=True)
    assert choose(capped, attention="auto", pack=False, chunk_tokens=32, is_main=False).chunk_tokens is None
