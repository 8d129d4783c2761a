"""The output layer on labelled positions only, in chunks: log-probabilities of the labels without logits.

A causal LM's forward ends with the output layer on every position: ``[tokens × vocab]`` logits (49k to
256k entries per token), kept in float32 for the loss and again for its gradient. Every objective here
needs only ``log p(label)`` at the positions whose next token carries a label, about a third of a chat
batch's tokens (prompts, system turns and padding carry none). :class:`LabelledLM` therefore runs the model
body once, gathers the hidden states of those positions, and computes their log-probabilities a chunk of
positions at a time::

    body ──► hidden [B, T, H] ──► positions t with a label at t + 1 ──► h [N, H]
                                                                          │ chunks of ``chunk_tokens``
                                                                          ▼
              log p(label) [N] = (h W^T + b)[label] − logsumexp(h W^T + b)    (float32, one chunk at a time)

The backward pass recomputes each chunk's logits from the saved ``h`` and the per-position logsumexp
(:class:`_LabelledLogps`), so the largest tensor the loss ever holds is one chunk's logits, whatever the
batch: a chunk of ``chunk_tokens × vocab`` float32 values instead of ``tokens × vocab`` several times over.
The result is the same per-token log-probability as the full logits give (float tolerance), and so are the
losses and gradients of every objective (``tests/align_train/modeling/test_head.py``).

The output layer must be a plain ``nn.Linear`` on the last hidden state, as in every decoder-only model of
transformers that does not post-process its logits. :func:`align_train.modeling.capabilities.choose_head`
checks that on the model itself (logit soft-capping or scaling would break it) and otherwise keeps the
full-logits path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from align_train.data.batch import Segments, TokenBatch
from align_train.modeling.attention import VARLEN_SDPA
from align_train.modeling.logps import SeqLogps, scored_positions, sequence_logps

CHUNK_BYTES = 256 * 2**20
"""Default size of one chunk's float32 logits: 1365 positions at a 49k vocabulary, 512 at 128k."""


def default_chunk_tokens(vocab_size: int) -> int:
    """Positions per chunk whose float32 logits fit in :data:`CHUNK_BYTES` (at least 64)."""
    return max(64, CHUNK_BYTES // (4 * vocab_size))


def causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face model of ``model`` (of a peft model, its base model with the adapters injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class _LabelledLogps(torch.autograd.Function):
    """``log softmax(h W^T + b)[target]`` per row of ``h``, a chunk of rows at a time.

    Saves ``h``, the weights and each row's logsumexp; the backward pass recomputes a chunk's logits and
    turns them into ``∂ log p / ∂ logits = onehot(target) − softmax`` in place, so no more than one chunk of
    logits lives at any time. Under CUDA autocast the matmuls run in the autocast dtype in both passes
    (``custom_fwd``/``custom_bwd``) and the softmax in float32.

    With ``grads_now`` the forward pass also computes the gradients of ``Σ log p`` (every position weighted
    1) while it holds each chunk's softmax, as fused linear cross-entropy kernels do: one matmul and two
    passes over the logits fewer. They are right whenever the loss weighs every position alike (SFT's
    token mean: the backward pass only scales them); a backward pass with unequal weights (DPO, ORPO)
    recomputes instead, so the result is exact either way.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
        grads_now: bool,
    ) -> torch.Tensor:
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grads_now = grads_now and (need_hidden or need_weight or need_bias)
        logps = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logps)
        unit = _Grads.empty(hidden, weight, bias, need_hidden, need_weight, need_bias) if grads_now else None
        for start in range(0, len(targets), chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight, bias).float()
            target_logits = logits.gather(1, targets[rows, None]).squeeze(1)
            # logsumexp in the logits' own buffer: max, exp(x − max), sum; the buffer ends as exp(x − max).
            top = logits.amax(dim=-1, keepdim=True)
            total = logits.sub_(top).exp_().sum(dim=-1, keepdim=True)
            lse[rows] = (top + total.log()).squeeze(1)
            logps[rows] = target_logits - lse[rows]
            if unit is not None:
                # softmax − onehot = −∂ log p / ∂ logits, then through the layer.
                logits.div_(total).scatter_add_(
                    1, targets[rows, None], logits.new_full((len(logits), 1), -1.0)
                )
                unit.subtract(rows, logits, hidden[rows], weight)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk = chunk
        ctx.unit = unit
        return logps

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        unit: _Grads | None = ctx.unit
        ctx.unit = None
        if unit is not None and len(grad) and bool((grad == grad[0]).all()):
            return (*unit.scaled(grad[0], hidden, weight, bias), None, None, None)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grads = _Grads.empty(hidden, weight, bias, need_hidden, need_weight, need_bias)
        grad = grad.float()
        for start in range(0, len(targets), ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            # g_i (softmax − onehot) = −g_i ∂ log p_i / ∂ logits, built in the logits' buffer.
            scores = F.linear(hidden[rows], weight, bias).float()
            scores.sub_(lse[rows, None]).exp_().mul_(grad[rows, None])
            scores.scatter_add_(1, targets[rows, None], -grad[rows, None])
            grads.subtract(rows, scores, hidden[rows], weight)
        return (*grads.scaled(None, hidden, weight, bias), None, None, None)


class _Grads:
    """Gradients of the hidden states, weight and bias of the output layer, accumulated chunk by chunk."""

    def __init__(self, hidden: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None):
        self.hidden, self.weight, self.bias = hidden, weight, bias

    @classmethod
    def empty(
        cls,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        need_hidden: bool,
        need_weight: bool,
        need_bias: bool,
    ) -> _Grads:
        return cls(
            torch.empty_like(hidden, dtype=torch.float32) if need_hidden else None,
            torch.zeros_like(weight, dtype=torch.float32) if need_weight else None,
            torch.zeros_like(bias, dtype=torch.float32) if need_bias and bias is not None else None,
        )

    def subtract(self, rows: slice, scores: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> None:
        """Add ``−scores`` (the gradient w.r.t. a chunk's logits, negated) through the layer."""
        if self.hidden is not None:
            self.hidden[rows] = -(scores.to(weight.dtype) @ weight).float()
        if self.weight is not None:
            self.weight -= scores.T.to(h.dtype) @ h
        if self.bias is not None:
            self.bias -= scores.sum(0)

    def scaled(
        self,
        factor: torch.Tensor | None,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The gradients times ``factor`` (None: as they are), in the dtypes of their inputs."""
        out = []
        for grad, like in ((self.hidden, hidden), (self.weight, weight), (self.bias, bias)):
            if grad is None or like is None:
                out.append(None)
                continue
            out.append((grad if factor is None else grad * factor).to(like.dtype))
        return out[0], out[1], out[2]


def labelled_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_tokens: int,
    uniform_weights: bool = False,
) -> torch.Tensor:
    """``log softmax(hidden W^T + b)[targets]`` per row of ``hidden`` ([N, H]) in float32, ``chunk_tokens``
    rows at a time in both passes.

    ``uniform_weights`` says that the loss will weigh every row alike (a token mean): the gradients are
    then computed in the forward pass (see :class:`_LabelledLogps`), which is faster; they stay exact if
    the loss turns out otherwise.
    """
    if chunk_tokens < 1:
        msg = f"chunk_tokens={chunk_tokens} is invalid: expected at least 1"
        raise ValueError(msg)
    return _LabelledLogps.apply(hidden, weight, bias, targets, chunk_tokens, uniform_weights)


class LabelledOutput(NamedTuple):
    """What :class:`LabelledLM` returns: the label log-probabilities per sequence and, when asked, one
    layer's hidden states ``[batch, time, hidden]`` for a coupled term (:mod:`align_train.training.coupled`)."""

    logps: SeqLogps
    hidden: torch.Tensor | None


class LabelledLM(nn.Module):
    """A causal LM (Hugging Face, or a peft model around one) whose forward returns :class:`LabelledOutput`.

    With ``chunk_tokens`` set, the output layer runs on labelled positions only, in chunks of that many
    positions (see the module docstring); with ``chunk_tokens=None`` the model's own forward computes the
    full logits and :func:`~align_train.modeling.logps.sequence_logps` reads them (the path for models whose
    output layer :func:`~align_train.modeling.capabilities.choose_head` refuses). The wrapped model is
    ``self.lm``: DDP and FSDP2 wrap this module, so that the body and the output layer run inside one forward
    of the wrapped module.
    """

    def __init__(self, lm: nn.Module, *, chunk_tokens: int | None) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_tokens = chunk_tokens

    @property
    def causal_lm(self) -> nn.Module:
        return causal_lm(self.lm)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        seq_ids: torch.Tensor,
        num_seqs: int,
        segments: Segments | None = None,
        hidden_layer: int | None = None,
        uniform_weights: bool = False,
    ) -> LabelledOutput:
        """Label log-probabilities per sequence; ``uniform_weights`` as in :func:`labelled_logps` (the
        objective knows whether its loss is a token mean).

        ``hidden_layer`` also returns that entry of the model's ``hidden_states`` (0 the embeddings, -1 the
        last layer after the final norm, the input of the output layer).

        Under :data:`~align_train.modeling.attention.VARLEN_SDPA` attention, ``segments`` replaces the padding
        mask: each sequence attends within itself, so right padding needs no mask.
        """
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": attention_mask,
            "use_cache": False,
        }
        if segments is not None and self.causal_lm.config._attn_implementation == VARLEN_SDPA:
            inputs.update(attention_mask=None, segments=segments)
        if self.chunk_tokens is None:
            out = self.lm(**inputs, output_hidden_states=hidden_layer is not None)
            hidden = None if hidden_layer is None else out.hidden_states[hidden_layer]
            return LabelledOutput(sequence_logps(out.logits, labels, seq_ids, num_seqs), hidden)
        model = self.causal_lm
        # Only an inner layer needs the decoder to keep every layer's output.
        body = model.get_decoder()(**inputs, output_hidden_states=hidden_layer not in (None, -1))
        hidden = body.last_hidden_state
        scored, targets, owners = scored_positions(labels, seq_ids)
        head = model.get_output_embeddings()
        token_logps = labelled_logps(
            hidden[:, :-1][scored],
            head.weight,
            head.bias,
            targets,
            chunk_tokens=self.chunk_tokens,
            uniform_weights=uniform_weights,
        )
        logps = SeqLogps.of_tokens(token_logps, owners, num_seqs)
        if hidden_layer is None:
            return LabelledOutput(logps, None)
        return LabelledOutput(logps, hidden if hidden_layer == -1 else body.hidden_states[hidden_layer])

    def batch_forward(self, batch: TokenBatch, *, hidden_layer: int | None = None) -> LabelledOutput:
        """:meth:`forward` on a :class:`TokenBatch` (call the wrapped module with ``**batch.labelled_inputs()``
        to go through DDP or FSDP2)."""
        return self(**batch.labelled_inputs(), hidden_layer=hidden_layer)
