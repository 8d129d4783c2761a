"""Which attention kernel, batch layout and output layer a model runs: decided here, by running the model.

Each choice is checked on the model itself, on a few random tokens, rather than read from its class:

- attention (:func:`choose_attention`): :data:`~align_train.modeling.attention.VARLEN_SDPA` where it gives the
  logits of the model's own attention, else the model's own;
- packing (:func:`choose_packing`): several sequences a row where the model computes a packed sequence as
  it computes it alone, else padding;
- output layer (:func:`choose_head`): the labelled-only chunked head of :mod:`align_train.modeling.head` where
  the logits are a plain linear layer on the last hidden state, else the full logits.

:func:`choose` makes the three in that order (packing is probed under the attention chosen) and returns
them as :class:`Capabilities`; the kernels themselves live in :mod:`align_train.modeling.attention` and
:mod:`align_train.modeling.head`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

from align_train.choices import Attention
from align_train.data.batch import Segments
from align_train.modeling.attention import VARLEN_SDPA, register
from align_train.modeling.head import causal_lm, default_chunk_tokens
from schemas import ConfigError


class Capabilities(NamedTuple):
    """What a model runs in this process: its attention, packed or padded batches, and the ``chunk_tokens``
    of :class:`~align_train.modeling.head.LabelledLM` (None: the full logits)."""

    attention: str
    pack: bool
    chunk_tokens: int | None

    @property
    def one_row(self) -> bool:
        """Every sequence of a batch in one row: packing under :data:`VARLEN_SDPA`, whose cost is the
        sequences' squares whatever the rows (see :class:`~align_train.data.collator.Collator`)."""
        return self.pack and self.attention == VARLEN_SDPA


def choose(
    model: nn.Module,
    *,
    attention: Attention,
    pack: bool | Literal["auto"],
    chunk_tokens: int | None,
    is_main: bool,
) -> Capabilities:
    """Set ``model``'s attention and decide its batch layout and output layer, from the settings of a run
    (``attention``, ``pack``, ``loss_chunk_tokens``). ``model`` is a peft model or a causal LM, unsharded:
    a no-grad forward through FSDP2 breaks it."""
    chosen = choose_attention(attention, model, is_main=is_main)
    packed = choose_packing(pack, model, is_main=is_main)
    return Capabilities(chosen, packed, choose_head(model, chunk_tokens=chunk_tokens, is_main=is_main))


@torch.no_grad()
def packing_is_exact(model: torch.nn.Module) -> bool:
    """Whether ``model`` computes a packed sequence exactly as it computes it alone.

    Packing relies on the attention implementation reading restarting ``position_ids`` as sequence
    boundaries (Hugging Face's sdpa, eager and flex paths build a block-diagonal mask from them;
    :data:`VARLEN_SDPA` and flash-attention attend within each sequence). An architecture or kernel that
    ignores them would silently attend across sequences, so two random sequences are run packed and alone
    and their logits compared.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(model.config.vocab_size, (1, n), generator=generator) for n in (5, 7))
    packed_ids = torch.cat([first, second], dim=1).to(device)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(device)
    training = model.training
    model.eval()
    try:
        packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits[0, 5:]
        alone = model(input_ids=second.to(device), use_cache=False).logits[0]
    finally:
        model.train(training)
    return torch.allclose(packed.float(), alone.float(), atol=1e-4, rtol=1e-3)


@torch.no_grad()
def _varlen_is_exact(model: PreTrainedModel, own: str) -> bool:
    """Whether :data:`VARLEN_SDPA` gives ``model`` the logits its own attention gives, on two random
    sequences padded into one batch (the padding is where a mask would have mattered)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (2, 7), generator=generator).to(device)
    seq_ids = torch.tensor([[0] * 7, [1] * 5 + [-1] * 2])
    segments = Segments.of(seq_ids).to(device)
    seq_ids = seq_ids.to(device)
    training = model.training
    model.eval()
    try:
        model.set_attn_implementation(own)
        mask = (seq_ids >= 0).long().to(device)
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[seq_ids >= 0]
        model.set_attn_implementation(VARLEN_SDPA)
        got = model(input_ids=ids, segments=segments, use_cache=False).logits[seq_ids >= 0]
    finally:
        model.train(training)
    return torch.allclose(got.float(), expected.float(), atol=1e-4, rtol=1e-3)


def choose_attention(setting: Attention, model: torch.nn.Module, *, is_main: bool) -> str:
    """Set the attention kernel of ``model`` (a peft model or a causal LM) and return its name.

    ``auto`` takes :data:`VARLEN_SDPA` when it computes this model as the model's own attention does
    (checked, and refused by architectures it does not implement), else keeps the model's own.
    """
    base = causal_lm(model)
    own = base.config._attn_implementation
    register()
    if setting != "auto":
        try:
            base.set_attn_implementation(setting)
            exact = setting != VARLEN_SDPA or _varlen_is_exact(base, own)
        except (ImportError, ValueError, TypeError, NotImplementedError) as e:
            raise ConfigError(
                f"attention={setting!r} cannot run this model: {' '.join(str(e).split())}"
            ) from e
        if not exact:
            msg = f"attention={setting!r} does not compute this model as its own {own!r} attention does"
            raise ConfigError(msg)
        return setting
    try:
        exact, why = _varlen_is_exact(base, own), "it does not give this model's logits"
    except (TypeError, NotImplementedError) as e:  # TypeError: a forward that takes no layout argument
        exact, why = False, str(e).split(":")[0]
    if not exact and is_main:
        print(f"note: {VARLEN_SDPA} is not used ({why}); this model keeps its {own!r} attention")
    base.set_attn_implementation(VARLEN_SDPA if exact else own)
    return base.config._attn_implementation


def choose_packing(setting: bool | Literal["auto"], model: torch.nn.Module, *, is_main: bool) -> bool:
    """Pack when asked and the model computes packed sequences exactly; ``auto`` falls back to padding."""
    if setting is False:
        return False
    if packing_is_exact(model):
        return True
    if setting is True:
        msg = (
            "pack=true, but this model's attention ignores packed position_ids (sequences would attend to "
            "each other): use pack=auto or pack=false"
        )
        raise ConfigError(msg)
    if is_main:
        print("note: this model's attention does not support packed sequences; batches are padded")
    return False


@torch.no_grad()
def chunked_head_is_exact(model: nn.Module) -> bool:
    """Whether ``model``'s logits are its output layer (an ``nn.Linear``) applied to its last hidden state.

    Checked on two random sequences, as :func:`packing_is_exact` checks packing: a model
    that scales or soft-caps its logits after the output layer would otherwise get a different loss.
    """
    base = causal_lm(model)
    head = base.get_output_embeddings()
    if type(head) is not nn.Linear:  # e.g. LoRA on the output layer: a module of its own
        return False
    device = head.weight.device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(base.config.vocab_size, (2, 6), generator=generator).to(device)
    training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids, use_cache=False).logits
        hidden = base.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    finally:
        model.train(training)
    return torch.allclose(head(hidden).float(), logits.float(), atol=1e-4, rtol=1e-3)


def choose_head(model: nn.Module, *, chunk_tokens: int | None, is_main: bool) -> int | None:
    """The ``chunk_tokens`` of :class:`LabelledLM` for ``model``: the configured count (None = the default
    for its vocabulary) when its output layer can run on labelled positions alone, else None (full logits)."""
    if not chunked_head_is_exact(model):
        if is_main:
            print(
                "note: this model's logits are not a plain linear output layer on its last hidden state; "
                "the loss runs on the full logits"
            )
        return None
    vocab_size = causal_lm(model).get_output_embeddings().out_features
    return chunk_tokens or default_chunk_tokens(vocab_size)
