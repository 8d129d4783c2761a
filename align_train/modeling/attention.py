"""Variable-length attention for packed and padded batches, on PyTorch's own SDPA kernels.

Hugging Face turns a packed row (``position_ids`` restarting at 0) into a block-diagonal ``[T × T]`` mask,
and a padded batch into a padding mask. Either mask makes SDPA compute the whole square of every row and,
on a GPU, leaves FlashAttention for a kernel that reads the mask. Here each sequence gets attention of
its own instead: the batch's sequences are gathered into a few length buckets (:class:`Segments`), each
bucket runs one causal SDPA call without a mask (FlashAttention on a GPU, the blocked causal kernel on a
CPU), and the outputs are scattered back. The work is the sum of the sequences' squares, not the rows',
and the result is the same attention.

The layout is built once per batch on the CPU by the collator and reaches every layer as a keyword
argument of the model's forward, so no layer waits on the GPU to find where sequences start. Called
without one, the attention reads the sequences from ``position_ids`` as transformers does.

Registered with transformers as :data:`VARLEN_SDPA`. With a padding mask or a KV cache (generation) it
is plain ``sdpa``; sliding-window, soft-capped, sink or bidirectional attention is refused, not
approximated (:func:`align_train.modeling.capabilities.choose_attention` then keeps the model's own
attention).

:data:`GROUPED_SDPA` is ``sdpa`` for masked attention on a CPU with grouped key/value heads (GQA), the
case of evaluation's padded and cached batches. There transformers copies every key/value head once per
query head of its group (``repeat_kv``) before each call, which for a decoding step of several tokens means
copying the whole cache in every layer; PyTorch's CPU kernel reads the grouped heads itself
(``enable_gqa``), with the same result. On a GPU, SDPA with a mask and ``enable_gqa`` leaves the fused
kernels, so everything else goes to ``sdpa`` as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, find_packed_sequence_indices, sdpa_mask

from align_train.data.batch import Segments

VARLEN_SDPA = "varlen_sdpa"
"""The ``attn_implementation`` name of :func:`varlen_sdpa_forward`."""
GROUPED_SDPA = "grouped_sdpa"
"""The ``attn_implementation`` name of :func:`grouped_sdpa_forward`."""

_REFUSED = ("sliding_window", "softcap", "s_aux")


def segments_of_positions(position_ids: torch.Tensor) -> Segments:
    """The layout read from ``position_ids`` as transformers reads packed rows: a sequence starts wherever
    a position does not follow on from the one before it."""
    ids = find_packed_sequence_indices(position_ids)
    if ids is None:  # one sequence a row
        ids = torch.zeros_like(position_ids)
    return Segments.of(ids + torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * ids.shape[1])


@torch.compiler.disable  # a compiled layer breaks its graph here: the buckets change from batch to batch
def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    segments: Segments | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each sequence: ``query`` ``[B, H, T, D]`` in, ``[B, T, H, D]`` out."""
    for name in _REFUSED:
        if kwargs.get(name) is not None:
            msg = f"{VARLEN_SDPA} does not implement {name}: use attention 'sdpa' for this model"
            raise NotImplementedError(msg)
    if not kwargs.pop("is_causal", getattr(module, "is_causal", True)):
        msg = f"{VARLEN_SDPA} is causal attention only: use attention 'sdpa' for this model"
        raise NotImplementedError(msg)
    rows, heads, width, _ = query.shape
    if attention_mask is not None or key.shape[2] != width or width == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if segments is None:
        if position_ids is None:
            return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)
        segments = segments_of_positions(position_ids.expand(rows, -1))  # models may pass them unexpanded

    def by_bucket(states: torch.Tensor) -> list[torch.Tensor]:
        flat = states.transpose(1, 2).reshape(rows * width, states.shape[1], states.shape[3])
        parts = flat.index_select(0, segments.gather).split([n * length for n, length in segments.buckets])
        return [
            part.view(n, length, *part.shape[1:]).transpose(1, 2)
            for part, (n, length) in zip(parts, segments.buckets, strict=True)
        ]

    outputs = [
        sdpa_attention_forward(module, q, k, v, None, is_causal=True, **kwargs)[0].flatten(0, 1)
        for q, k, v in zip(by_bucket(query), by_bucket(key), by_bucket(value), strict=True)
    ]
    out = torch.cat(outputs).index_select(0, segments.scatter)
    return out.view(rows, width, heads, value.shape[3]), None


def varlen_sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: object,
) -> torch.Tensor | None:
    """No mask where :func:`varlen_sdpa_forward` finds the sequences itself (no padding mask, no cache);
    sdpa's mask otherwise. Skipping it spares building a ``[rows × T × T]`` tensor per batch."""
    if attention_mask is None and q_length == kv_length and q_offset == 0 and kv_offset == 0:
        return None
    return sdpa_mask(
        batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask, **kwargs
    )


def grouped_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """``sdpa``, with a mask on a CPU reading grouped key/value heads in place: ``query`` ``[B, H, T, D]``
    and ``key`` / ``value`` ``[B, H / groups, S, D]`` in, ``[B, T, H, D]`` out."""
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    if (
        not grouped
        or attention_mask is None
        or query.shape[2] == 1  # transformers folds the query heads onto their key/value head then
        or query.device.type != "cpu"
        or any(kwargs.get(name) is not None for name in ("softcap", "s_aux", "position_bias"))
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def grouped_heads(model: torch.nn.Module) -> Iterator[None]:
    """``model`` on :data:`GROUPED_SDPA` for the duration, if its attention is ``sdpa`` (otherwise as it
    is)."""
    own = model.config._attn_implementation
    if own != "sdpa":
        yield
        return
    register()
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation(own)


def register() -> None:
    """Make :data:`VARLEN_SDPA` and :data:`GROUPED_SDPA` valid ``attn_implementation`` names in this
    process (idempotent)."""
    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_forward)
    AttentionMaskInterface.register(VARLEN_SDPA, varlen_sdpa_mask)
    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_forward)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
