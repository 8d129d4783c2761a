"""A dev set of real parallel text with planted faults: the UDHR extract of ``tests/data/udhr``.

Every target-language paragraph of the extract is a *clean* translation of its English anchor (made by
people, freely, long before this project). :func:`plant_faults` replaces a share of them, chosen by a
stable hash, by one of the faults the filters exist for:

================== =======================================================================================
``wrong_lang``     the same paragraph in an unrelated language of the extract (German under ``es``)
``related_lang``   the same paragraph in a closely related but different language (Spanish under ``ca``,
                   Galician under ``pt``, Swedish under ``nb``); only where the extract has one
``neighbour_lang`` the same in a neighbour LID models read as the target (Malay under ``id``, Danish
                   under ``nb``): reported, with no goal
``misaligned``     the paragraph of another article, in the right language
``truncated``      the translation cut at a word boundary to 30-60% of its length
``untranslated``   the English paragraph itself
================== =======================================================================================

:func:`judge` runs the stages ``curate build`` runs on pre-translated input (anchor_lid, structure, lid,
equivalence: :func:`curate.build.make_stages`) over the chunks :func:`curate.readers.read_chunks` makes of
the planted set, and :func:`tally` counts, per part and kind, how many rows ended as they should: clean
rows kept, faults rejected (by any stage). Articles 0-15 (the preamble's clauses and articles 1-15) are
the *tune* part, where settings may be chosen; articles 16-30 are *held out* and only checked.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from curate.config import BuildConfig
from curate.executors.base import run_chunk
from curate.readers import read_chunks
from curate.stages.base import Stage
from tests import ROOT

EXTRACT = ROOT / "tests" / "data" / "udhr" / "udhr.jsonl"
ANCHOR = "en"
# The languages whose translations the multilingual Universal Sentence Encoder (the offline default
# embedder) separates from unrelated text: on this extract a true translation's cosine has a median of
# 0.45 (ca) to 0.82 (ru, pt), against about 0.1 for any paragraph in Bosnian, Croatian, Serbian, Danish,
# Norwegian or Swedish, where a translation scores like an unrelated paragraph. Goals on meaning
# (misaligned, truncated) are measured on these; the others check language ID.
ENCODED = ("es", "ca", "gl", "pt", "fr", "it", "de", "nl", "pl", "ru", "id", "ms")
# The languages of this dev set; the extract holds a few more for the Apertium dev set
# (``tests/curate/apertium_dev.py``).
LANGS = (ANCHOR, *ENCODED, "hr", "bs", "sr", "nb", "da", "sv")
FAULTS = ("wrong_lang", "related_lang", "neighbour_lang", "misaligned", "truncated", "untranslated")
KINDS = ("clean", *FAULTS)
LID_FAULTS = ("wrong_lang", "related_lang", "neighbour_lang", "untranslated")  # what language ID can see
TUNE_ARTICLES = range(16)  # the preamble (0) and articles 1-15; 16-30 are held out
PARTS = ("tune", "held-out")

# A different language close enough to pass for the target in a hurried look: what a mislabelled file
# of a neighbour gives. Language ID must reject it while keeping the target's own text, which it often
# reads as the neighbour.
RELATED = {
    "es": ("ca", "pt", "gl"),
    "ca": ("es",),
    "gl": ("pt", "es"),
    "pt": ("es", "gl"),
    "nb": ("sv",),
    "da": ("sv",),
    "sv": ("da", "nb"),
}
# Neighbours language ID reads as each other both ways, so that keeping the target's own text means
# accepting them: lid.176 reads 48 of the 57 Malay paragraphs as Indonesian, and Bokmål and Danish
# paragraphs as each other. Planted and reported as ``neighbour_lang``, with no goal. Bosnian, Croatian
# and Serbian are not planted in each other's place at all: the versions differ mostly by the
# ekavian/ijekavian reflex and a few words.
NEIGHBOURS = {"id": ("ms",), "ms": ("id",), "nb": ("da",), "da": ("nb",)}
# The languages of each family in the extract: a wrong-language substitute comes from another family.
FAMILIES = (
    {"es", "ca", "gl", "pt", "fr", "it"},
    {"de", "nl", "nb", "da", "sv", "en"},
    {"pl", "ru", "hr", "bs", "sr"},
    {"id", "ms"},
)


@dataclass(frozen=True)
class DevRow:
    """One translation of the dev set: ``kind`` is ``clean`` or the fault planted, ``source`` what the
    text was made from (a language, or another unit for ``misaligned``)."""

    unit: str
    article: int
    lang: str
    kind: str
    text: str
    source: str

    @property
    def part(self) -> str:
        return PARTS[0] if self.article in TUNE_ARTICLES else PARTS[1]


def load_extract(path: Path = EXTRACT, *, langs: Iterable[str] = LANGS) -> dict[str, dict[str, str]]:
    """unit → language → paragraph, in the extract's order, for the languages ``langs``."""
    wanted = set(langs)
    units: dict[str, dict[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["lang"] in wanted:
            units.setdefault(record["unit"], {})[record["lang"]] = record["text"]
    return units


def _draw(*key: object) -> float:
    """A stable number in [0, 1) for ``key``."""
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(options: Sequence[str], *key: object) -> str:
    return options[int(_draw(*key) * len(options))]


def _article(unit: str) -> int:
    return int(unit[1:3])


def truncate(text: str, fraction: float) -> str:
    """``text`` cut at the last word boundary at or before ``fraction`` of its length (one word at least)."""
    end = max(1, int(len(text) * fraction))
    cut = text[:end]
    if end < len(text) and not text[end].isspace() and " " in cut.strip():
        cut = cut.rsplit(" ", 1)[0]  # the last word was cut through
    return cut.rstrip(" ,;:")


def snippets(units: dict[str, dict[str, str]], *, chars: int = 60) -> dict[str, dict[str, str]]:
    """Each paragraph's first words, up to ``chars`` characters: short texts, as chat turns often are, for
    language ID (they are not translations of each other's snippets, so not for equivalence)."""
    return {
        unit: {lang: truncate(text, min(1.0, chars / len(text))) for lang, text in texts.items()}
        for unit, texts in units.items()
    }


def plant_faults(
    units: dict[str, dict[str, str]],
    *,
    langs: Iterable[str] | None = None,
    kinds: Sequence[str] = FAULTS,
    rate: float = 0.2,
    seed: int = 0,
) -> list[DevRow]:
    """Every translation of ``units`` (in ``langs``, default all), a share ``rate`` of them replaced by a
    fault, the kind drawn uniformly among ``kinds`` that apply; the same ``seed`` gives the same set."""
    names = list(units)
    targets = [lang for lang in next(iter(units.values())) if lang != ANCHOR]
    targets = [lang for lang in targets if langs is None or lang in set(langs)]
    rows = []
    for unit, texts in units.items():
        article = _article(unit)
        for lang in targets:
            if lang not in texts:
                continue
            text, kind, source = texts[lang], "clean", lang
            if _draw(seed, "fault", unit, lang) < rate:
                family = next(f for f in FAMILIES if lang in f)
                unrelated = [x for x in texts if x != ANCHOR and x not in family]
                related = [x for x in RELATED.get(lang, ()) if x in texts]
                neighbours = [x for x in NEIGHBOURS.get(lang, ()) if x in texts]
                others = [u for u in names if _article(u) != article and lang in units[u]]
                applies = {"related_lang": bool(related), "neighbour_lang": bool(neighbours)}
                options = [k for k in kinds if applies.get(k, True)]
                kind = _pick(options, seed, "kind", unit, lang) if options else "clean"
                if kind == "clean":
                    pass
                elif kind == "wrong_lang":
                    source = _pick(unrelated, seed, "lang", unit, lang)
                    text = texts[source]
                elif kind in applies:
                    source = _pick(
                        related if kind == "related_lang" else neighbours, seed, "lang", unit, lang
                    )
                    text = texts[source]
                elif kind == "misaligned":
                    source = _pick(others, seed, "unit", unit, lang)
                    text = units[source][lang]
                elif kind == "truncated":
                    text = truncate(text, 0.3 + 0.3 * _draw(seed, "cut", unit, lang))
                else:
                    source, text = ANCHOR, texts[ANCHOR]
            rows.append(DevRow(unit, article, lang, kind, text, source))
    return rows


def write_parallel(units: dict[str, dict[str, str]], rows: Sequence[DevRow], path: Path) -> Path:
    """``rows`` with their English anchors as ``curate build`` parallel input: one row per
    unit and language, holding one assistant message."""

    def line(unit: str, lang: str, text: str) -> str:
        messages = [{"role": "assistant", "content": text}]
        return json.dumps(
            {"id": unit, "lang": lang, "task": "udhr", "messages": messages}, ensure_ascii=False
        )

    anchors = [line(unit, ANCHOR, texts[ANCHOR]) for unit, texts in units.items()]
    path.write_text("\n".join([*anchors, *(line(r.unit, r.lang, r.text) for r in rows)]) + "\n", "utf-8")
    return path


def config(path: Path, langs: Sequence[str], *, chunk_size: int, **sections: dict) -> BuildConfig:
    """The build configuration of the dev set: pre-translated input, defaults elsewhere, ``sections``
    overriding (``equivalence={"threshold": 0.4}``)."""
    return BuildConfig.model_validate(
        {
            "inputs": [path],
            "out": path.parent / "out",
            "anchor_lang": ANCHOR,
            "langs": list(langs),
            "translate": {"backend": "pretranslated"},
            "write": {"chunk_size": chunk_size},
            **sections,
        }
    )


def judge(config: BuildConfig, stages: Sequence[Stage]) -> dict[tuple[str, str], str | None]:
    """(unit, lang) → ``stage.reason`` of the row's reject, or None where it was kept; ``stages`` set up."""
    outcome: dict[tuple[str, str], str | None] = {}
    chunks = read_chunks(
        config.inputs,
        config=config.input,
        anchor_lang=config.anchor_lang,
        langs=config.langs,
        chunk_size=config.write.chunk_size,
        dedup=config.dedup,
    )
    for chunk in chunks:
        state = run_chunk(stages, chunk)
        kept = state.rows
        for key in zip(kept.column("group_id").to_pylist(), kept.column("lang").to_pylist(), strict=True):
            outcome[key] = None
        for rejects in state.rejected:
            for group, lang, stage, reason in zip(
                *(rejects.column(c).to_pylist() for c in ("group_id", "lang", "stage", "reason")), strict=True
            ):
                outcome[(group, lang)] = f"{stage}.{reason}"
    return outcome


@dataclass
class Tally:
    """Per (part, kind): rows, rows that ended right (clean kept, fault rejected), and the reasons."""

    rows: Counter[tuple[str, str]]
    right: Counter[tuple[str, str]]
    reasons: dict[tuple[str, str], Counter[str]]

    def rate(self, part: str | None, kind: str) -> float:
        parts = PARTS if part is None else (part,)
        n = sum(self.rows[(p, kind)] for p in parts)
        return sum(self.right[(p, kind)] for p in parts) / n if n else float("nan")

    def count(self, part: str | None, kind: str) -> tuple[int, int]:
        parts = PARTS if part is None else (part,)
        return sum(self.right[(p, kind)] for p in parts), sum(self.rows[(p, kind)] for p in parts)


def tally(
    rows: Sequence[DevRow], outcome: dict[tuple[str, str], str | None], *, langs: Iterable[str] | None = None
) -> Tally:
    """How ``rows`` (those in ``langs``, default all) ended in ``outcome`` (from :func:`judge`)."""
    wanted = None if langs is None else set(langs)
    rows = [row for row in rows if wanted is None or row.lang in wanted]
    counts: Counter[tuple[str, str]] = Counter()
    right: Counter[tuple[str, str]] = Counter()
    reasons: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        key = (row.part, row.kind)
        reason = outcome[(row.unit, row.lang)]
        counts[key] += 1
        right[key] += (reason is None) == (row.kind == "clean")
        reasons.setdefault(key, Counter())[reason or "kept"] += 1
    return Tally(counts, right, reasons)
