"""``equivalence``: a translation must mean what its anchor means, judged by multilingual sentence embeddings.

Each translated message is compared with the anchor message at the same position (cosine of their prose,
protected spans removed); a row's ``equivalence`` is the min or mean over its messages. Cosines are facts
about one embedder: what a true translation scores depends on the model and on the language (the
multilingual USE gives a Spanish translation 0.8 and a Catalan one 0.45), so a fixed cut either keeps noise
or drops good, free translations. The decision is therefore relative to the batch, as in margin-based
bitext mining (Artetxe & Schwenk 2019, ratio margin): a translation ``x`` of anchor ``y`` is compared with
its ``k`` (``neighbours``) nearest *other* anchors of the batch, and ``y`` with its ``k`` nearest other
translations in the same language:

    margin(x, y) = cos(x, y) / ((mean of x's k nearest other anchors + mean of y's k nearest others) / 2)

    translation de of g1 ──cos──► anchor g1          0.71  (own)
                         ──cos──► 4 nearest others   0.42 0.40 0.35 0.33   mean 0.375
    anchor g1 ──cos──► 4 nearest other de rows       0.45 0.41 0.38 0.30   mean 0.385
    margin 0.71 / 0.38 = 1.87 ≥ 0.95: a translation of g1, whatever the scale of the model or language

These comparisons use one meaning vector per row (the normalised mean of its message embeddings), not
message position: conversations differ in length and roles, and templated turns (a shared system prompt)
would match other groups' turns at the same position exactly. Besides the margin (``mismatch``) a row is
rejected when a message scores under an absolute ``floor`` (garbage, ``low_similarity``), or when its
length strays from its language's (``length_ratio``): outside the fixed range, or more than ``length_z``
robust z-scores (median and MAD of the log length ratio of the batch's rows in that language, as in
Iglewicz & Hoaglin's modified z-score) from the others, which catches a translation cut in half while free
translations, longer or shorter by nature, stay.

A batch with too few groups for a row's margin (fewer than ``k`` other anchors or other translations in
its language) falls back to the embedder's absolute ``threshold`` and to "closer to another anchor of the
batch than to its own" (``mismatch``); so does ``scoring: cosine`` everywhere.

The floor, margin and threshold of an embedder are its :class:`~curate.stages.embedders.Calibration`. A
model without one (any sentence-transformers model but LaBSE, and LaBSE's floor and margin, which are not
measured here) is calibrated by :meth:`Equivalence.calibrate` from a sample of the data, label-free: the
cosines of each translation to the *other* groups' anchors are pairs known to be unrelated, and the
values are read off them (see :func:`estimate`). ``curate build`` does that once, on the first groups of
the input, before the first chunk, so that every chunk is judged alike (resumes and the Ray executor stay
byte-identical), keeps the values in ``OUT/.state/calibration.json`` and records them in the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from curate.config import EquivalenceConfig
from curate.stages.base import FilterStage, Verdict, anchor_index
from curate.stages.embedders import Calibration, Embedder, encode_unique, make_embedder
from curate.text.conversation import prose_by_row
from schemas import ConfigError

# The smallest robust scale of a language's log length ratios (a MAD of 0 when most rows have equal
# ratios, code-only rows say, would make every other row an outlier): 5% length.
_MIN_LOG_SCALE = 0.05
_MAD_TO_SD = 1.4826
# Languages a batch needs before its length check borrows strength across them (group × language fit):
# with fewer, a group's few rows explain each other and true translations turn into outliers.
_TWO_WAY_LANGS = 6


class Equivalence(FilterStage):
    """Reject translations whose meaning or length strays from the anchor's.

    Reasons, first match wins: ``length_ratio`` (prose chars outside the configured range, or a length
    outlier of its language in the batch), then ``low_similarity`` (a message under the floor, or under
    ``threshold``), then ``mismatch`` (a ratio margin under the calibration's, or, in small batches,
    closer to another group's anchor than to its own). ``equivalence`` and ``length_ratio`` are set on
    every translation; they stay null on anchors and on rows without prose (which are kept).
    """

    name = "equivalence"

    def __init__(
        self, config: EquivalenceConfig, embedder: Embedder | None = None, *, threads: int | None = None
    ) -> None:
        self.config = config
        self.embedder = embedder if embedder is not None else make_embedder(config, threads=threads)
        configured = Calibration(config.floor, config.margin, config.threshold)
        if configured.missing() != list(Calibration.VALUES):
            configured = replace(configured, source="equivalence config")
        self.calibration = configured.filled(self.embedder.calibration)

    def setup(self) -> None:
        self.embedder.setup()

    def missing(self) -> list[str]:
        """The calibration values this stage needs and does not know (estimate them with
        :meth:`calibrate`)."""
        needed = {"threshold"}
        if self.config.scoring == "margin":
            needed |= {"margin"} | ({"floor"} if self.config.threshold is None else set())
        return [name for name in self.calibration.missing() if name in needed]

    @property
    def cut(self) -> float | None:
        """The absolute cosine every translated message must reach where margins decide: the configured
        threshold, else the floor."""
        return self.config.threshold if self.config.threshold is not None else self.calibration.floor

    def calibrate(self, sample: pa.Table) -> Calibration:
        """Estimate the missing calibration values from ``sample`` (whole groups, as this stage would get
        them), label-free; the result is also this stage's calibration from now on."""
        missing = self.missing()
        if not missing:
            return self.calibration
        estimated = estimate(self._score(sample, pairs=True), self.config, keep=self.calibration)
        groups = len(set(sample.column("group_id").to_pylist()))
        estimated = Calibration(
            **{name: getattr(estimated, name) for name in missing},
            source=f"{', '.join(missing)} estimated from {groups} groups",
            estimated=tuple(missing),
            groups=groups,
        )
        self.calibration = self.calibration.filled(estimated)
        return self.calibration

    def judge(self, batch: pa.Table) -> Verdict:
        if missing := self.missing():
            msg = f"{self.name}: no {', '.join(missing)} for {self.embedder.name}: calibrate() first"
            raise RuntimeError(msg)
        scored = self._score(batch)
        reasons: list[str | None] = [None] * batch.num_rows
        details: list[str | None] = [None] * batch.num_rows
        for row in np.flatnonzero(scored.judged).tolist():
            found = self._verdict(scored, row)
            if found:
                reasons[row], details[row] = found
        return Verdict(
            reasons, details, columns={"equivalence": scored.scores, "length_ratio": scored.ratios}
        )

    def _score(self, batch: pa.Table, *, pairs: bool = False) -> _Scores:
        """Everything the verdicts (and, with ``pairs``, the calibration) need from ``batch``."""
        config = self.config
        texts = prose_by_row(batch)
        vocab: dict[str, int] = {}
        for row_texts in texts:
            for text in row_texts.values():
                vocab.setdefault(text, len(vocab))
        vectors = encode_unique(self.embedder, list(vocab), batch_size=config.batch_size)
        means = [_mean_vector(vectors, [vocab[t] for t in row_texts.values()]) for row_texts in texts]
        groups = batch.column("group_id").to_pylist()
        langs = batch.column("lang").to_pylist()
        is_anchor = batch.column("is_anchor").to_pylist()
        anchors = anchor_index(batch)
        n = batch.num_rows
        out = _Scores(n, langs)
        for row in range(n):
            if is_anchor[row]:
                continue
            anchor = anchors[groups[row]]
            anchor_chars = sum(len(t) for t in texts[anchor].values())
            if anchor_chars:
                out.ratios[row] = sum(len(t) for t in texts[row].values()) / anchor_chars
                out.ratio_checked[row] = anchor_chars >= config.min_chars_for_ratio
            where, cosines = _pair_cosines(texts[row], texts[anchor], vectors, vocab)
            if cosines:
                out.scores[row] = min(cosines) if config.aggregate == "min" else float(np.mean(cosines))
                out.worst[row] = where[int(np.argmin(cosines))]
                out.judged[row] = True
        candidates = [g for g, a in anchors.items() if means[a] is not None]
        column = {g: j for j, g in enumerate(candidates)}
        by_lang: dict[str, list[int]] = {}
        for row in np.flatnonzero(out.judged).tolist():
            if means[row] is not None and groups[row] in column:
                by_lang.setdefault(langs[row], []).append(row)
        if candidates:
            anchor_vectors = np.stack([means[anchors[g]] for g in candidates])
            for rows in by_lang.values():
                x = np.stack([means[r] for r in rows])
                own = np.array([column[groups[r]] for r in rows])
                self._margins(out, rows, x @ anchor_vectors.T, own, candidates, pairs=pairs)
        self._length_outliers(out, langs, groups)
        return out

    def _margins(
        self,
        out: _Scores,
        rows: list[int],
        sims: np.ndarray,
        own_columns: np.ndarray,
        anchor_groups: list[str],
        *,
        pairs: bool,
    ) -> None:
        """Own cosine, closest other anchor and ratio margin of the translations ``rows`` (one language),
        from their row-vector cosines ``sims`` to the batch's anchors (``own_columns[i]`` is row i's)."""
        k = self.config.neighbours
        n, m = sims.shape
        i = np.arange(n)
        at = np.array(rows)
        own = sims[i, own_columns]
        others = sims.copy()
        others[i, own_columns] = -np.inf  # each translation's own pair is no neighbour of either side
        out.own[at] = own
        if m > 1:
            best = others.argmax(axis=1)
            out.best[at] = others[i, best]
            out.best_group.update({r: anchor_groups[j] for r, j in zip(rows, best.tolist(), strict=True)})
        if pairs:
            out.other_cosines.append(others[np.isfinite(others)])
        if m - 1 < k or n - 1 < k:
            return
        # x's k nearest other anchors; each anchor's k nearest translations of other groups.
        near_x = -np.partition(-others, k - 1, axis=1)[:, :k].mean(axis=1)
        near_y = -np.partition(-others, k - 1, axis=0)[:k, :].mean(axis=0)
        near_y[n - np.bincount(own_columns, minlength=m) < k] = np.nan
        scale = (near_x[:, None] + near_y[None, :]) / 2  # translations × anchors
        own_scale = scale[i, own_columns]
        usable = ~np.isnan(own_scale)
        out.margin[at[usable]] = own[usable] / np.maximum(own_scale[usable], 1e-6)
        out.neighbourhood[at[usable]] = own_scale[usable]
        if pairs:
            mismatched = np.isfinite(others) & ~np.isnan(scale)
            out.other_margins.append(others[mismatched] / np.maximum(scale[mismatched], 1e-6))

    def _length_outliers(self, out: _Scores, langs: list[str], groups: list[str]) -> None:
        """Robust z-score of each translation's log length ratio: against the batch's other rows in its
        language where there are ``min_rows`` of them; else, in a batch of at least
        :data:`_TWO_WAY_LANGS` languages, against what its group and its language predict (median
        polish over groups × languages, so that a few groups in many languages are enough)."""
        if self.config.length_z is None:
            return
        ratios = np.array([np.nan if r is None else r for r in out.ratios], np.float64)
        by_lang: dict[str, list[int]] = {}
        for row in np.flatnonzero(out.ratio_checked & (np.nan_to_num(ratios) > 0)).tolist():
            by_lang.setdefault(langs[row], []).append(row)
        few = []
        for rows in by_lang.values():
            if len(rows) < self.config.min_rows:
                few += rows
                continue
            logs = np.log(ratios[rows])
            median = float(np.median(logs))
            scale = max(_MAD_TO_SD * float(np.median(np.abs(logs - median))), _MIN_LOG_SCALE)
            out.length_z[rows] = (logs - median) / scale
            out.length_expected[rows] = math.exp(median)
        if not few or len(by_lang) < _TWO_WAY_LANGS:
            return
        cells = [row for rows in by_lang.values() for row in rows]
        if len(cells) < self.config.min_rows:
            return
        group_ids = {g: i for i, g in enumerate(dict.fromkeys(groups[r] for r in cells))}
        lang_ids = {lang: j for j, lang in enumerate(by_lang)}
        table = np.full((len(group_ids), len(lang_ids)), np.nan)
        at = (np.array([group_ids[groups[r]] for r in cells]), np.array([lang_ids[langs[r]] for r in cells]))
        table[at] = np.log(ratios[cells])
        residuals = _median_polish(table)[at]
        g, n_langs = len(group_ids), len(lang_ids)
        shrink = math.sqrt(g * n_langs / ((g - 1) * (n_langs - 1))) if g > 1 else 1.0
        # The medians polish leaves some cells at exactly 0 (one per odd-sized row or column): they are
        # fitted, not measured, and would shrink the scale.
        spread = np.abs(residuals[np.abs(residuals) > 1e-12])
        scale = max(_MAD_TO_SD * float(np.median(spread)) * shrink if len(spread) else 0.0, _MIN_LOG_SCALE)
        position = {row: i for i, row in enumerate(cells)}
        mine = np.array([position[row] for row in few])
        out.length_z[few] = residuals[mine] / scale
        out.length_expected[few] = ratios[few] / np.exp(residuals[mine])
        out.length_by_group[few] = True

    def _verdict(self, s: _Scores, row: int) -> tuple[str, str] | None:
        config, calibration = self.config, self.calibration
        ratio = s.ratios[row]
        if s.ratio_checked[row] and ratio is not None:
            if not config.length_ratio_min <= ratio <= config.length_ratio_max:
                return (
                    "length_ratio",
                    f"{ratio:.2f} outside [{config.length_ratio_min}, {config.length_ratio_max}]",
                )
            z = s.length_z[row]
            if config.length_z is not None and not np.isnan(z) and abs(z) > config.length_z:
                expected = s.length_expected[row]
                against = (
                    f"the {expected:.2f} its group and language predict in the batch"
                    if s.length_by_group[row]
                    else f"the batch's {s.langs[row]} rows (median {expected:.2f})"
                )
                return (
                    "length_ratio",
                    f"{ratio:.2f}, {z:+.1f} robust z-scores from {against}; limit {config.length_z}",
                )
        score = s.scores[row]
        margin = s.margin[row]
        by_margin = config.scoring == "margin" and not np.isnan(margin) and calibration.margin is not None
        cut = self.cut if by_margin else calibration.threshold
        assert score is not None and cut is not None
        if score < cut:
            where = f"{s.worst[row]}: " if config.aggregate == "min" else ""
            return "low_similarity", f"{where}{config.aggregate} cosine {score:.3f} < {cut}"
        other = s.best_group.get(row)
        lead = f"cosine {s.own[row]:.3f} to its anchor"
        if by_margin:
            assert calibration.margin is not None
            if margin < calibration.margin:
                nearest = f"{s.neighbourhood[row]:.3f} to its {config.neighbours} nearest other pairs"
                best = f"; best other: the anchor of group {other!r}, {s.best[row]:.3f}" if other else ""
                return (
                    "mismatch",
                    f"ratio margin {margin:.2f} < {calibration.margin}: {lead}, {nearest}{best}",
                )
        elif other is not None and s.own[row] < s.best[row]:
            return "mismatch", f"{lead}, {s.best[row]:.3f} to the anchor of group {other!r} (a small batch)"
        return None


@dataclass
class _Scores:
    """What :meth:`Equivalence._score` measures, per row of a batch (NaN or None where it does not apply)."""

    n: int
    langs: list[str]
    scores: list[float | None] = field(init=False)
    ratios: list[float | None] = field(init=False)
    worst: list[str | None] = field(init=False)
    judged: np.ndarray = field(init=False)  # translations with prose
    ratio_checked: np.ndarray = field(init=False)  # whose anchor is long enough for the length checks
    own: np.ndarray = field(init=False)  # row-vector cosine to its anchor
    best: np.ndarray = field(init=False)  # ... and to the closest other anchor of the batch
    margin: np.ndarray = field(init=False)
    neighbourhood: np.ndarray = field(init=False)  # the margin's denominator
    length_z: np.ndarray = field(init=False)
    length_expected: np.ndarray = field(init=False)  # the ratio the z-score is taken from
    length_by_group: np.ndarray = field(init=False)  # ... predicted by group and language
    best_group: dict[int, str] = field(default_factory=dict)
    other_cosines: list[np.ndarray] = field(default_factory=list)  # for calibration: unrelated pairs
    other_margins: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.n
        self.scores, self.ratios, self.worst = [None] * n, [None] * n, [None] * n
        self.judged, self.ratio_checked, self.length_by_group = (np.zeros(n, bool) for _ in range(3))
        self.own, self.best, self.margin, self.neighbourhood, self.length_z, self.length_expected = (
            np.full(n, np.nan) for _ in range(6)
        )


def estimate(scores: _Scores, config: EquivalenceConfig, *, keep: Calibration) -> Calibration:
    """A label-free calibration from one sample batch.

    The cosines of each translation to the *other* groups' anchors are pairs known to be unrelated (in
    the batch's domain, so harder than random text). ``floor``: their first quartile, "less alike than
    three unrelated pairs in four". ``margin``: the 95th percentile of their ratio margins. ``threshold``:
    the cosine that best separates the translations the margin and floor accept from the unrelated pairs
    (largest difference of the two shares above it, Youden's J), on a 0.005 grid. Values already in
    ``keep`` are used rather than estimated where the others depend on them.
    """
    unrelated = np.concatenate(scores.other_cosines) if scores.other_cosines else np.zeros(0)
    if not len(unrelated):
        unrelated = scores.best[~np.isnan(scores.best)]
    own = scores.own[~np.isnan(scores.own)]
    if not len(unrelated) or not len(own):
        msg = (
            "equivalence: too little data to estimate the cosine scale of the embedder (it needs at least "
            "two groups with translations): set equivalence.threshold (and floor and margin), see "
            "docs/curation.md, 'Choosing thresholds for a new encoder'"
        )
        raise ConfigError(msg)
    floor = keep.floor if keep.floor is not None else round(float(np.quantile(unrelated, 0.25)), 3)
    margins = np.concatenate(scores.other_margins) if scores.other_margins else np.zeros(0)
    margin = keep.margin
    if margin is None and len(margins):
        margin = round(float(np.quantile(margins, 0.95)), 3)
    accepted = ~np.isnan(scores.own)
    if margin is not None:
        accepted &= np.isnan(scores.margin) | (scores.margin >= margin)
    cut = config.threshold if config.threshold is not None else floor
    accepted &= scores.own >= cut
    true = scores.own[accepted] if accepted.any() else own
    grid = np.arange(-1.0, 1.0001, 0.005)
    above_true = (true[None, :] >= grid[:, None]).mean(axis=1)
    above_unrelated = (unrelated[None, :] >= grid[:, None]).mean(axis=1)
    threshold = round(float(grid[int(np.argmax(above_true - above_unrelated))]), 3)
    return Calibration(floor=floor, margin=margin, threshold=threshold)


def _median_polish(table: np.ndarray, *, sweeps: int = 10) -> np.ndarray:
    """Residuals of Tukey's median polish of ``table`` (NaN where empty): what is left of each cell once
    row and column medians are taken out, alternately, ``sweeps`` times."""
    residuals = table.copy()
    filled = ~np.isnan(table)
    for _ in range(sweeps):
        for axis in (1, 0):
            has = filled.any(axis=axis)
            medians = np.zeros(residuals.shape[1 - axis])
            part = residuals[has] if axis == 1 else residuals[:, has]
            medians[has] = np.nanmedian(part, axis=axis)
            residuals = residuals - (medians[:, None] if axis == 1 else medians[None, :])
    return residuals


def _pair_cosines(
    ours: dict[str, str], theirs: dict[str, str], vectors: np.ndarray, vocab: dict[str, int]
) -> tuple[list[str], list[float]]:
    """Cosine of each translated message against the anchor's, keyed by position (``messages[i]``).

    A message with prose on one side only shares nothing with its counterpart and scores 0.
    """
    where = list(theirs) + [w for w in ours if w not in theirs]
    cosines = [
        float(vectors[vocab[ours[w]]] @ vectors[vocab[theirs[w]]]) if w in ours and w in theirs else 0.0
        for w in where
    ]
    return where, cosines


def _mean_vector(vectors: np.ndarray, ids: list[int]) -> np.ndarray | None:
    """A row's meaning vector: the normalised mean of its messages' embeddings (None without prose)."""
    if not ids:
        return None
    mean = vectors[ids].mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None
