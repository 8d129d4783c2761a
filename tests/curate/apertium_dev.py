"""A dev set in every language Apertium translates English into on Debian, short texts and long, with
planted faults: what language ID and equivalence are tuned and checked on beyond the UDHR dev set.

Two sources, each judged as a corpus of its own (``curate build``'s stages on pre-translated input):

``problems``  the 200 word problems of ``tests/data/wordproblems``: question, worked answer and wrong
              worked answer as one preference row (prompt, chosen, rejected), as the experiment builds
              them. Apertium's Spanish, Catalan, Galician and Esperanto are the clean rows; its
              Serbo-Croatian, which leaves English words in every problem ("How many jabuka biti in the
              košara?"), is planted under ``hr``, ``sr`` and ``bs`` as the ``mixed`` fault.
``udhr``      the 57 UDHR paragraphs of ``tests/data/udhr`` in the same languages plus ``hr``, ``sr``,
              ``bs``, one assistant message each; 18 of them are under 100 characters.

A share ``rate`` of the clean rows, chosen by a stable hash, is replaced by a fault:

================ =========================================================================================
``untranslated`` the English text itself
``related_lang`` the same text in a close relative that is another language, one a translator drifts
                 into: among the problems Spanish, Catalan and Galician under each other; in the UDHR
                 Catalan, Galician or Portuguese under ``es``, Spanish under ``ca``, Portuguese or Spanish
                 under ``gl``, Slovene under ``hr``, ``sr`` and ``bs``
``neighbour_lang`` a smaller relative that language ID models read as the target (Asturian under ``es``,
                 Occitan under ``ca``, Ido under ``eo``): reported, with no goal, as in the UDHR dev set
``wrong_lang``   the same text in an unrelated language: Esperanto under the Romance languages and the
                 reverse among the problems; in the UDHR German, Dutch, Polish, Indonesian or Swedish
``misaligned``   another unit's text in the right language
================ =========================================================================================

Problems p000-p099 and the UDHR's preamble and articles 1-15 are the *tune* part, where settings may be
chosen; problems p100-p199 and articles 16-30 are *held out* and only checked.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests import ROOT
from tests.curate import udhr

PROBLEMS = ROOT / "tests" / "data" / "wordproblems" / "wordproblems.jsonl"
ANCHOR = "en"
LANGS = ("es", "ca", "gl", "eo", "hr", "sr", "bs")  # every language Apertium translates English into
PROBLEM_LANGS = ("es", "ca", "gl", "eo")  # where Apertium's output of the problems is a translation
MIXED_LANGS = ("hr", "sr", "bs")  # where it is the ``mixed`` fault
FIELDS = ("prompt", "chosen", "rejected")
SOURCES = ("problems", "udhr")
FAULTS = ("untranslated", "related_lang", "wrong_lang", "misaligned")  # each with a goal
KINDS = ("clean", *FAULTS, "neighbour_lang", "mixed")
PARTS = ("tune", "held-out")
TUNE_PROBLEMS = 100
SHORT_CHARS = 100  # a UDHR paragraph under this many characters (in English) counts as short
# Close relatives that are other languages (the extract's extra versions), and unrelated languages.
RELATED = {
    "problems": {"es": ("ca", "gl"), "ca": ("es", "gl"), "gl": ("es", "ca")},
    "udhr": {
        "es": ("ca", "gl", "pt"),
        "ca": ("es",),
        "gl": ("pt", "es"),
        "hr": ("sl",),
        "sr": ("sl",),
        "bs": ("sl",),
    },
}
# Smaller relatives lid.176 and CLD3 both read as the target language (neither knows Asturian or
# Occitan well; Ido reads as Esperanto): no language ID here can reject them.
NEIGHBOURS = {"es": ("ast",), "ca": ("oc",), "eo": ("io",)}
UNRELATED = {
    "problems": {"es": ("eo",), "ca": ("eo",), "gl": ("eo",), "eo": ("es", "ca", "gl")},
    "udhr": dict.fromkeys(LANGS, ("de", "nl", "pl", "id", "sv")),
}
UDHR_LANGS = (ANCHOR, *LANGS, "pt", "ast", "oc", "io", "sl", "de", "nl", "pl", "id", "sv")


@dataclass(frozen=True)
class Row:
    """One translation of the dev set: its texts (prompt, chosen, rejected; or one paragraph) and what
    they are: ``clean``, or the fault planted, made from ``origin`` (a language or another unit)."""

    source: str
    unit: str
    lang: str
    kind: str
    texts: tuple[str, ...]
    origin: str
    part: str
    short: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.unit, self.lang


def load_problems(path: Path = PROBLEMS) -> dict[str, dict[str, tuple[str, ...]]]:
    """unit → language (``hbs`` for Apertium's Serbo-Croatian) → (prompt, chosen, rejected)."""
    units: dict[str, dict[str, tuple[str, ...]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        units.setdefault(record["unit"], {})[record["lang"]] = tuple(record[f] for f in FIELDS)
    return units


def load_udhr() -> dict[str, dict[str, tuple[str, ...]]]:
    """unit → language → (paragraph,): the UDHR extract in the languages this set uses."""
    return {
        unit: {lang: (text,) for lang, text in texts.items()}
        for unit, texts in udhr.load_extract(langs=UDHR_LANGS).items()
    }


def _draw(*key: object) -> float:
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(options: Sequence[str], *key: object) -> str:
    return options[int(_draw(*key) * len(options))]


def _part(source: str, unit: str) -> str:
    index = int(unit[1:4]) if source == "problems" else int(unit[1:3])
    tune = index < TUNE_PROBLEMS if source == "problems" else index in udhr.TUNE_ARTICLES
    return PARTS[0] if tune else PARTS[1]


def plant_faults(
    source: str, units: dict[str, dict[str, tuple[str, ...]]], *, rate: float = 0.3, seed: int = 0
) -> list[Row]:
    """Every translation of ``units`` (from ``source``), a share ``rate`` of the clean ones replaced by a
    fault drawn uniformly among :data:`FAULTS` that apply; the same ``seed`` gives the same set."""
    names = list(units)
    rows = []
    for unit, texts in units.items():
        part = _part(source, unit)
        short = source == "problems" or len(texts[ANCHOR][0]) < SHORT_CHARS
        for lang in LANGS:
            if source == "problems" and lang in MIXED_LANGS:
                rows.append(Row(source, unit, lang, "mixed", texts["hbs"], "hbs", part, short))
                continue
            text, kind, origin = texts[lang], "clean", lang
            if _draw(seed, source, "fault", unit, lang) < rate:
                substitutes = {
                    "related_lang": [x for x in RELATED[source].get(lang, ()) if x in texts],
                    "wrong_lang": [x for x in UNRELATED[source][lang] if x in texts],
                    "neighbour_lang": [x for x in NEIGHBOURS.get(lang, ()) if x in texts],
                }
                others = [u for u in names if u != unit and lang in units[u] and _part(source, u) == part]
                kinds = [k for k in (*FAULTS, "neighbour_lang") if substitutes.get(k, True)]
                kind = _pick(kinds, seed, source, "kind", unit, lang)
                if kind == "untranslated":
                    origin = ANCHOR
                elif kind == "misaligned":
                    origin = _pick(others, seed, source, "unit", unit, lang)
                else:
                    origin = _pick(substitutes[kind], seed, source, unit, lang)
                text = units[origin][lang] if kind == "misaligned" else texts[origin]
            rows.append(Row(source, unit, lang, kind, text, origin, part, short))
    return rows


def write_parallel(units: dict[str, dict[str, tuple[str, ...]]], rows: Sequence[Row], path: Path) -> Path:
    """``rows`` with their English anchors as ``curate build`` parallel input: a preference row per
    problem and language, a one-message row per UDHR paragraph and language."""

    def line(unit: str, lang: str, texts: tuple[str, ...]) -> str:
        record: dict[str, object] = {"id": unit, "lang": lang}
        if len(texts) == len(FIELDS):
            record |= {"task": "math", **dict(zip(FIELDS, texts, strict=True))}
        else:
            record |= {"task": "udhr", "messages": [{"role": "assistant", "content": texts[0]}]}
        return json.dumps(record, ensure_ascii=False)

    anchors = [line(unit, ANCHOR, texts[ANCHOR]) for unit, texts in units.items()]
    path.write_text("\n".join([*anchors, *(line(r.unit, r.lang, r.texts) for r in rows)]) + "\n", "utf-8")
    return path


@dataclass
class Tally:
    """Rows and rows that ended right (clean kept, fault rejected) per (source, part, lang, kind), and the
    reasons of each."""

    rows: Counter[tuple[str, str, str, str]]
    right: Counter[tuple[str, str, str, str]]
    reasons: dict[tuple[str, str, str, str], Counter[str]]

    def count(
        self,
        kind: str,
        *,
        sources: Iterable[str] = SOURCES,
        parts: Iterable[str] = PARTS,
        langs: Iterable[str] = LANGS,
    ) -> tuple[int, int]:
        """(rows that ended right, rows) of ``kind`` over the sources, parts and languages named."""
        keys = [(s, p, lang, kind) for s in sources for p in parts for lang in langs]
        return sum(self.right[k] for k in keys), sum(self.rows[k] for k in keys)

    def rate(self, kind: str, **where: Iterable[str]) -> float:
        right, n = self.count(kind, **where)
        return right / n if n else float("nan")

    def why(self, kind: str, **where: Iterable[str]) -> Counter[str]:
        """How the rows of ``kind`` ended: ``stage.reason`` or ``kept``."""
        out: Counter[str] = Counter()
        keys = [
            (s, p, lang, kind)
            for s in where.get("sources", SOURCES)
            for p in where.get("parts", PARTS)
            for lang in where.get("langs", LANGS)
        ]
        for key in keys:
            out.update(self.reasons.get(key, Counter()))
        return out


def tally(rows: Iterable[Row], outcome: dict[tuple[str, str], str | None], *, seed: object = "") -> Tally:
    """How ``rows`` ended in ``outcome`` (:func:`tests.curate.udhr.judge`'s, keys prefixed with
    ``seed/`` when given)."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    right: Counter[tuple[str, str, str, str]] = Counter()
    reasons: dict[tuple[str, str, str, str], Counter[str]] = {}
    return _add(Tally(counts, right, reasons), rows, outcome, seed=seed)


def _add(into: Tally, rows: Iterable[Row], outcome: dict, *, seed: object) -> Tally:
    for row in rows:
        unit = f"{seed}/{row.unit}" if seed != "" else row.unit
        reason = outcome[(unit, row.lang)]
        key = (row.source, row.part, row.lang, row.kind)
        into.rows[key] += 1
        into.right[key] += (reason is None) == (row.kind == "clean")
        into.reasons.setdefault(key, Counter())[reason or "kept"] += 1
    return into


def merge(tallies: Iterable[Tally]) -> Tally:
    out = Tally(Counter(), Counter(), {})
    for t in tallies:
        out.rows.update(t.rows)
        out.right.update(t.right)
        for key, reasons in t.reasons.items():
            out.reasons.setdefault(key, Counter()).update(reasons)
    return out
