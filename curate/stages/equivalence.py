"""``equivalence``: a translation must mean what its anchor means, judged by multilingual sentence embeddings.

Each translated message is compared with the anchor message at the same position (cosine of their prose,
protected spans removed); a row's ``equivalence`` is the min or mean over its messages. Cosines are facts
about one embedder, so every :class:`Embedder` carries its own ``default_threshold`` (None where its scale
is unknown: then ``equivalence.threshold`` must be set, and the stage refuses to start without it), and a
label-free check compares each translation with the other groups' anchors in the same batch:

    translation de of g1 ──cos──► anchor g1   0.71   (own)
                         ──cos──► anchor g2   0.78   (best other)   →  mismatch: not above its own anchor

That comparison uses one meaning vector per row (the normalised mean of its message embeddings), not
message position: conversations differ in length and roles, and templated turns (a shared system prompt,
"Use the tool.") would match other groups' turns at the same position exactly and drown the signal. The
row's own score in this check is the same row-vector cosine, so both sides are measured alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.config import EquivalenceConfig
from curate.stages.base import FilterStage, Verdict, anchor_index
from curate.stages.embedders import Embedder, encode_unique, make_embedder
from curate.text.conversation import prose_by_row
from schemas import ConfigError


class Equivalence(FilterStage):
    """Reject translations whose meaning or length strays from the anchor's.

    Reasons, first match wins: ``length_ratio`` (prose chars outside the configured range), then
    ``low_similarity`` (score below the threshold), then ``mismatch`` (closer to another group's anchor).
    ``equivalence`` and ``length_ratio`` are set on every translation; they stay null on anchors and on
    rows without prose (which are kept).
    """

    name = "equivalence"

    def __init__(self, config: EquivalenceConfig, embedder: Embedder | None = None) -> None:
        self.config = config
        self.embedder = embedder if embedder is not None else make_embedder(config)
        self.threshold = _threshold(config, self.embedder)

    def setup(self) -> None:
        self.embedder.setup()

    def judge(self, batch: pa.Table) -> Verdict:
        texts = prose_by_row(batch)
        vocab: dict[str, int] = {}
        for row_texts in texts:
            for text in row_texts.values():
                vocab.setdefault(text, len(vocab))
        vectors = encode_unique(self.embedder, list(vocab), batch_size=self.config.batch_size)
        means = [_mean_vector(vectors, [vocab[t] for t in row_texts.values()]) for row_texts in texts]

        groups = batch.column("group_id").to_pylist()
        is_anchor = batch.column("is_anchor").to_pylist()
        anchors = anchor_index(batch)
        best_other = self._best_other_anchor(means, groups, is_anchor, anchors)
        scores: list[float | None] = [None] * batch.num_rows
        ratios: list[float | None] = [None] * batch.num_rows
        reasons: list[str | None] = [None] * batch.num_rows
        details: list[str | None] = [None] * batch.num_rows
        for row, group in enumerate(groups):
            if is_anchor[row]:
                continue
            anchor = anchors[group]
            where, cosines = _pair_cosines(texts[row], texts[anchor], vectors, vocab)
            anchor_chars = sum(len(t) for t in texts[anchor].values())
            if anchor_chars:
                ratios[row] = sum(len(t) for t in texts[row].values()) / anchor_chars
            if not cosines:
                continue
            scores[row] = min(cosines) if self.config.aggregate == "min" else float(np.mean(cosines))
            found = self._verdict(
                score=scores[row],
                ratio=ratios[row] if anchor_chars >= self.config.min_chars_for_ratio else None,
                worst=where[int(np.argmin(cosines))],
                own=_cosine(means[row], means[anchor]),
                other=best_other[row],
            )
            if found:
                reasons[row], details[row] = found
        return Verdict(reasons, details, columns={"equivalence": scores, "length_ratio": ratios})

    def _best_other_anchor(
        self,
        means: list[np.ndarray | None],
        groups: list[str],
        is_anchor: list[bool],
        anchors: dict[str, int],
    ) -> list[tuple[float, str] | None]:
        """Per translation, the highest cosine against another group's anchor and that group's id."""
        best: list[tuple[float, str] | None] = [None] * len(means)
        candidates = [(g, a) for g, a in anchors.items() if means[a] is not None]
        rows = [r for r, m in enumerate(means) if m is not None and not is_anchor[r]]
        if self.config.margin is None or len(candidates) < 2 or not rows:
            return best
        sims = np.stack([means[r] for r in rows]) @ np.stack([means[a] for _, a in candidates]).T
        own = np.array([[groups[r] == g for g, _ in candidates] for r in rows])
        sims[own] = -np.inf
        for i, r in enumerate(rows):
            j = int(np.argmax(sims[i]))
            best[r] = (float(sims[i, j]), candidates[j][0])
        return best

    def _verdict(
        self,
        *,
        score: float,
        ratio: float | None,
        worst: str,
        own: float | None,
        other: tuple[float, str] | None,
    ) -> tuple[str, str] | None:
        config = self.config
        if ratio is not None and not config.length_ratio_min <= ratio <= config.length_ratio_max:
            return (
                "length_ratio",
                f"{ratio:.2f} outside [{config.length_ratio_min}, {config.length_ratio_max}]",
            )
        if score < self.threshold:
            where = f"{worst}: " if config.aggregate == "min" else ""
            return "low_similarity", f"{where}{config.aggregate} cosine {score:.3f} < {self.threshold}"
        if config.margin is not None and own is not None and other and own - other[0] < config.margin:
            lead = f"cosine {own:.3f} to its anchor, {other[0]:.3f} to the anchor of group {other[1]!r}"
            return "mismatch", f"{lead} (margin {config.margin})"
        return None


def _threshold(config: EquivalenceConfig, embedder: Embedder) -> float:
    """The configured threshold, else the embedder's own; an embedder of unknown scale needs one set."""
    if config.threshold is not None:
        return config.threshold
    if embedder.default_threshold is not None:
        return embedder.default_threshold
    msg = (
        f"equivalence.threshold is not set and the cosine scale of {embedder.name} is unknown (only LaBSE "
        "and the USE backend have a default): set equivalence.threshold between the scores of true "
        "translations and of mismatched pairs in a small trial build, see docs/curation.md, "
        "'Choosing a threshold for a new encoder'"
    )
    raise ConfigError(msg)


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


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(a @ b)
