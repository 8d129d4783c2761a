"""Greedy decoding over a causal LM's forward and its KV cache, for evaluation.

``model.generate`` decodes a batch until its longest answer ends: every row keeps computing after its own
stop token, and the next batch waits. Evaluation answers vary from a few tokens to ``max_new_tokens``, and
on a CPU a decoding step costs nearly as much for one row as for eight (it reads every weight once), so
most of that time is spent on rows that have already finished. Here the batch is a set of *slots*:

- a row leaves the batch (its cache rows are dropped) at its stop token, and a waiting prompt takes its
  slot, so every step decodes up to ``batch_size`` live rows until the prompts run out;
- the prompts' common prefix (the chat template's system turn) is computed once and its keys and values
  are shared by every prompt;
- rows of different lengths share one cache: each row's tokens end at the last column, earlier columns
  are padding that the attention mask hides, and each row carries its own positions, so nothing depends on
  where a row sits. Columns that no live row uses are cut off as rows leave.

With ``lookahead`` (prompt lookup decoding, Saxena 2023; ``prompt_lookup_num_tokens`` in
``transformers``), a step also drafts, per row, up to that many tokens that followed the latest earlier
occurrence of the row's last few tokens in its prompt or answer, and checks them in the same forward: a
row keeps the drafts its own greedy predictions agree with, and one predicted token more. Answers copy
their prompt's numbers and words and repeat themselves, so many drafts are kept; on a CPU a forward of a
few tokens per row costs far less than as many forwards of one (every weight is read once per forward).
Rejected drafts' columns stay in the cache, hidden by the mask.

On a CPU, attention reads a model's grouped key/value heads in place
(:data:`~align_train.modeling.attention.GROUPED_SDPA`) rather than copying the cache for every query head
at each step. The output layer runs on the positions it must predict only. The continuations are the ones
``model.generate(do_sample=False)`` gives (the same arithmetic per row; a different batch or a longer
step can change the last bits of a matmul, see docs/evaluation.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from align_train.modeling.attention import GROUPED_SDPA, grouped_heads


def supports_slots(model: PreTrainedModel) -> bool:
    """Whether :func:`greedy_continuations` can decode ``model``: a decoder-only model with sdpa or eager
    attention (which read any padding mask), whose forward takes ``position_ids`` and ``logits_to_keep``
    and whose cache is plain full attention in every layer (a sliding window counts columns, which padding
    in the middle of a row would shift)."""
    attention = model.config._attn_implementation
    if model.config.is_encoder_decoder or attention not in ("sdpa", "eager", GROUPED_SDPA):
        return False
    accepted = inspect.signature(model.forward).parameters
    if not {"position_ids", "logits_to_keep", "cache"} <= set(accepted):
        return False
    cache = DynamicCache(config=model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


class _GrowingLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views of buffers with spare columns: a step
    writes its column in place, where :class:`DynamicLayer` copies the whole layer (``torch.cat``)."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.assign(key_states, value_states)
            return self.keys, self.values
        used, new = self.keys.shape[-2], key_states.shape[-2]
        if used + new > self._keys.shape[-2]:
            self.assign(self.keys, self.values, room=new)
        self._keys[:, :, used : used + new] = key_states
        self._values[:, :, used : used + new] = value_states
        self.keys = self._keys[:, :, : used + new]
        self.values = self._values[:, :, : used + new]
        return self.keys, self.values

    def assign(self, keys: torch.Tensor, values: torch.Tensor, *, room: int = 0) -> None:
        """Hold ``keys`` and ``values`` (copied), with spare columns for ``room`` and then half as many
        again as they have (at least 32), so that growing costs a copy every so many steps only."""
        columns = keys.shape[-2] + room
        spare = max(32, columns // 2)
        self._keys = keys.new_empty((*keys.shape[:2], columns + spare, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:2], columns + spare, values.shape[-1]))
        self._keys[:, :, : keys.shape[-2]] = keys
        self._values[:, :, : values.shape[-2]] = values
        self.keys = self._keys[:, :, : keys.shape[-2]]
        self.values = self._values[:, :, : values.shape[-2]]
        self.is_initialized = True

    def cut(self, columns: int) -> None:
        """Forget the last ``columns`` columns (their buffer space is reused)."""
        used = self.keys.shape[-2] - columns
        self.keys = self._keys[:, :, :used]
        self.values = self._values[:, :, :used]


def _new_cache(model: PreTrainedModel) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [_GrowingLayer() for _ in cache.layers]
    return cache


@dataclass
class _Rows:
    """The live rows: which prompt each decodes, its tokens so far, its next position, and which cache
    columns it attends to (``mask`` ``[rows, columns]``; a row's last token is not in the cache yet)."""

    prompt: list[int] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    positions: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    cache: DynamicCache | None = None

    def __len__(self) -> int:
        return len(self.prompt)


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel,
    prompts: Sequence[list[int]],
    *,
    stop: Sequence[int],
    max_new_tokens: int,
    batch_size: int,
    lookahead: int = 0,
) -> list[list[int]]:
    """The greedy continuation of each prompt: at most ``max_new_tokens`` tokens, ending at the first
    token of ``stop`` (included). ``lookahead``: tokens drafted per row and step by prompt lookup (0: one
    token per step)."""
    device = next(model.parameters()).device
    stop_ids = set(stop)
    out: list[list[int]] = [[] for _ in prompts]
    waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[::-1]  # popped longest first
    prefix = common_prefix([prompts[i] for i in waiting])
    with grouped_heads(model):
        shared = prefill_prefix(model, prefix, device) if prefix else None
        rows = _Rows()
        while waiting or len(rows):
            if waiting and len(rows) < batch_size:
                admitted = [waiting.pop() for _ in range(min(batch_size - len(rows), len(waiting)))]
                rows = _merge(rows, _admit(model, prompts, admitted, prefix, shared, device))
            else:
                _step(model, rows, prompts, stop=stop_ids, max_new_tokens=max_new_tokens, lookahead=lookahead)
            done = [
                k
                for k, tokens in enumerate(rows.tokens)
                if len(tokens) >= max_new_tokens or tokens[-1] in stop_ids
            ]
            if done:
                for k in done:
                    out[rows.prompt[k]] = rows.tokens[k]
                rows = _drop(rows, done)
    return out


def common_prefix(prompts: Sequence[list[int]]) -> list[int]:
    """The longest token prefix that every prompt shares, short of the last token of the shortest (each
    prompt keeps a token of its own to compute, whose logits give its first new token)."""
    if not prompts:
        return []
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = next((k for k in range(n) if p[k] != first[k]), n)
    return list(first[:n])


def prefill_prefix(model: PreTrainedModel, prefix: list[int], device: torch.device) -> DynamicCache:
    cache = _new_cache(model)
    ids = torch.tensor([prefix], device=device)
    model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return cache


def expand_cache(model: PreTrainedModel, shared: DynamicCache, rows: int, *, room: int) -> DynamicCache:
    """A cache of ``rows`` rows, each starting with ``shared``'s one row of keys and values, with spare
    columns for ``room`` more."""
    cache = _new_cache(model)
    for layer, source in zip(cache.layers, shared.layers, strict=True):
        layer.assign(source.keys.expand(rows, -1, -1, -1), source.values.expand(rows, -1, -1, -1), room=room)
    return cache


def _admit(
    model: PreTrainedModel,
    prompts: Sequence[list[int]],
    admitted: list[int],
    prefix: list[int],
    shared: DynamicCache | None,
    device: torch.device,
) -> _Rows:
    """New rows for ``admitted`` prompts: their tokens after the shared prefix, left-padded and computed
    together over the prefix's cache, and their first new token."""
    suffixes = [prompts[i][len(prefix) :] for i in admitted]
    width = max(len(s) for s in suffixes)
    n = len(admitted)
    ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, len(prefix) + width), dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    mask[:, : len(prefix)] = 1
    for r, s in enumerate(suffixes):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, len(prefix) + width - len(s) :] = 1
        positions[r, width - len(s) :] = torch.arange(len(prefix), len(prefix) + len(s))
    cache = _new_cache(model) if shared is None else expand_cache(model, shared, n, room=width)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits
    first = logits[:, -1].argmax(dim=-1).tolist()
    return _Rows(
        prompt=admitted,
        tokens=[[t] for t in first],
        positions=torch.tensor([len(p) for p in (prompts[i] for i in admitted)], device=device),
        mask=mask.to(device),
        cache=cache,
    )


def _step(
    model: PreTrainedModel,
    rows: _Rows,
    prompts: Sequence[list[int]],
    *,
    stop: set[int],
    max_new_tokens: int,
    lookahead: int,
) -> None:
    """One token more for every live row, or more where its drafted tokens are its greedy predictions.

    Each row's last token and its drafts go in one forward, right-padded to the longest draft; the row
    keeps the drafts that match the predictions before them, and the prediction after the last one kept
    (at its first stop token, or ``max_new_tokens``, it ends). The columns of the drafts it does not keep
    are hidden from later steps, and columns that no row keeps are cut off.
    """
    assert rows.mask is not None and rows.positions is not None and rows.cache is not None
    device = rows.mask.device
    drafts = [
        _draft(prompts[p] + tokens, min(lookahead, max_new_tokens - len(tokens) - 1)) if lookahead else []
        for p, tokens in zip(rows.prompt, rows.tokens, strict=True)
    ]
    width = 1 + max(len(d) for d in drafts)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (tokens, draft) in enumerate(zip(rows.tokens, drafts, strict=True)):
        ids[r, : 1 + len(draft)] = torch.tensor([tokens[-1], *draft])
    offsets = torch.arange(width, device=device)
    sizes = torch.tensor([1 + len(d) for d in drafts], device=device)
    rows.mask = torch.cat([rows.mask, (offsets < sizes[:, None]).to(rows.mask.dtype)], dim=1)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=rows.mask,
        position_ids=rows.positions[:, None] + offsets,
        cache=rows.cache,
        use_cache=True,
        logits_to_keep=width,
    ).logits
    kept = []
    for tokens, draft, predicted in zip(rows.tokens, drafts, logits.argmax(dim=-1).tolist(), strict=True):
        n = next((k for k, token in enumerate(draft) if token != predicted[k]), len(draft))
        kept.append(1 + n)
        for token in predicted[: n + 1]:  # the drafts kept are the predictions themselves
            tokens.append(token)
            if token in stop or len(tokens) >= max_new_tokens:
                break
    if width > 1:
        used = torch.tensor(kept, device=device)
        rows.mask[:, -width:] = (offsets < used[:, None]).to(rows.mask.dtype)
        unused = width - max(kept)
        if unused:
            rows.mask = rows.mask[:, :-unused]
            for layer in rows.cache.layers:
                layer.cut(unused)
        rows.positions = rows.positions + used
    else:
        rows.positions = rows.positions + 1


def _draft(context: list[int], size: int, *, ngram: int = 3) -> list[int]:
    """Up to ``size`` tokens that followed the latest earlier occurrence of the context's last ``ngram``
    tokens (or, failing that, fewer of them, down to one): the prompt lookup draft."""
    if size <= 0:
        return []
    for n in range(min(ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start] == tail[0] and context[start : start + n] == tail:
                return context[start + n : start + n + size]
    return []


def _merge(old: _Rows, new: _Rows) -> _Rows:
    """One batch of both sets of rows: the narrower cache padded on the left to the wider's columns."""
    if not len(old):
        return new
    assert old.mask is not None and new.mask is not None and old.cache and new.cache
    assert old.positions is not None and new.positions is not None
    width = max(old.mask.shape[1], new.mask.shape[1])
    for a, b in zip(old.cache.layers, new.cache.layers, strict=True):
        a.assign(
            torch.cat([_pad_left(a.keys, width), _pad_left(b.keys, width)]),
            torch.cat([_pad_left(a.values, width), _pad_left(b.values, width)]),
        )
    return _Rows(
        prompt=old.prompt + new.prompt,
        tokens=old.tokens + new.tokens,
        positions=torch.cat([old.positions, new.positions]),
        mask=torch.cat([_pad_left(old.mask, width), _pad_left(new.mask, width)]),
        cache=old.cache,
    )


def _drop(rows: _Rows, done: list[int]) -> _Rows:
    """The rows without ``done``, and without the leading columns that none of them attends to."""
    keep = [k for k in range(len(rows)) if k not in set(done)]
    if not keep:
        return _Rows()
    assert rows.mask is not None and rows.positions is not None and rows.cache is not None
    index = torch.tensor(keep, device=rows.mask.device)
    mask = rows.mask[index]
    start = int(mask.any(dim=0).long().argmax())
    for layer in rows.cache.layers:
        layer.assign(layer.keys[index, :, start:], layer.values[index, :, start:])
    return _Rows(
        prompt=[rows.prompt[k] for k in keep],
        tokens=[rows.tokens[k] for k in keep],
        positions=rows.positions[index],
        mask=mask[:, start:],
        cache=rows.cache,
    )


def _pad_left(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` (mask ``[rows, columns]`` or keys ``[rows, heads, columns, dim]``) with zero columns in front
    up to ``width`` columns."""
    dim = 1 if x.dim() == 2 else 2
    missing = width - x.shape[dim]
    if not missing:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
