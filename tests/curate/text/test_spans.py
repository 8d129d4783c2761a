"""The native span scanner (``curate/text/_spans.c``) against the grammar it implements
(``curate.text.spans``, run by Python's ``re``): same spans and same prose on generated text built from the
characters every pattern turns on, and on every message of the demo corpora. The grammar is also what runs
where the scanner was not built: that path must give the same results."""

from __future__ import annotations

import json
import random
import sys

import pyarrow as pa
import pytest

from curate.text import spans
from curate.text.masking import KINDS, protected_spans, strip_protected, strip_protected_all
from tests import ROOT

reference_spans = spans.find
reference_prose = spans.prose

DEMO = ROOT / "examples" / "demo"
SPACES = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]
# Pieces the generator strings together: every literal of the patterns, characters at the edges of
# their classes (Unicode word characters, digits and spaces, punctuation a URL may not end with).
PIECES = [
    *"`$\\()[]{}<>%:/.,;:!?\"'_-sdfx7 \n",
    *SPACES[:8],
    "```",
    "$$",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "<<",
    ">>",
    "{{",
    "}}",
    "%(",
    ")s",
    "http://",
    "https://",
    "ftp://",
    "⟦",
    "⟧",
    "é",
    "ß",
    "٣",  # an Arabic-Indic digit: \d and \w in Python's re
    "²",  # a digit for isdigit but not \d
    "中",
    "\u0301",  # a combining accent: not \w
    "😀",
    "\x00",
    "a.b",
    "(x)",
    "abc",
]


def generated(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(PIECES, k=rng.randint(0, 24))) for _ in range(n)]


def demo_messages() -> list[str]:
    texts = []
    for path in sorted(DEMO.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # the demo's deliberately broken lines
                continue
            for value in record.values() if isinstance(record, dict) else ():
                for message in value if isinstance(value, list) else [value]:
                    content = message.get("content") if isinstance(message, dict) else message
                    if isinstance(content, str):
                        texts.append(content)
    return texts


def scanned(text: str) -> list[tuple[int, int, int]]:
    return [(KINDS.index(s.kind), s.start, s.end) for s in protected_spans(text)]


def test_the_native_scanner_is_built() -> None:
    # Installs with a C compiler (as CI's) must build it: everything below would otherwise compare the
    # grammar with itself.
    assert spans.native is not None


def test_kinds_are_the_grammar_order() -> None:
    assert tuple(kind for kind, _ in spans.PATTERNS) == KINDS


def assert_prose_matches(texts: list[str]) -> None:
    stripped = strip_protected_all(pa.array(texts))
    want = [reference_prose(t) for t in texts]
    assert stripped.texts.to_pylist() == want
    assert stripped.chars.tolist() == [len(t) for t in want]


@pytest.mark.parametrize("seed", range(4))
def test_generated_text_matches_the_reference(seed: int) -> None:
    texts = generated(5000, seed)
    assert [scanned(t) for t in texts] == [reference_spans(t) for t in texts]
    assert_prose_matches(texts)


def test_demo_messages_match_the_reference() -> None:
    texts = demo_messages()
    assert len(texts) > 500
    assert sum(bool(reference_spans(t)) for t in texts) > 100  # the corpus exercises the patterns
    assert [scanned(t) for t in texts] == [reference_spans(t) for t in texts]
    assert_prose_matches(texts)


def test_every_unicode_space_separates_prose() -> None:
    texts = [f"a{space}b{space}" for space in SPACES] + ["a\u200bb", "a\x00b", f" {SPACES[-1]}x"]
    assert_prose_matches(texts)


def test_sliced_large_and_null_input() -> None:
    texts = pa.array(["skip", "Use `x`  now", None, "", "$y$ only", "tail"], pa.large_string())
    stripped = strip_protected_all(texts.slice(1, 4))
    assert stripped.texts.to_pylist() == ["Use now", None, "", "only"]
    assert stripped.chars.tolist() == [7, 0, 0, 4]
    assert strip_protected_all(texts.slice(1, 4)).texts.type == pa.large_string()
    assert strip_protected_all(pa.array([], pa.string())).texts.to_pylist() == []


def test_positions_count_characters_not_bytes() -> None:
    text = "Ünïcödé `code` 😀 https://a.io/é"
    assert (
        scanned(text)
        == reference_spans(text)
        == [(KINDS.index("code_inline"), 8, 14), (KINDS.index("url"), 17, 31)]
    )
    assert strip_protected(text) == "Ünïcödé 😀"


def test_without_the_native_scanner_the_grammar_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [*generated(500, 9), *demo_messages()[:300]]
    native = [scanned(t) for t in texts], strip_protected_all(pa.array(texts, pa.large_string()))
    monkeypatch.setattr(spans, "native", None)
    assert [scanned(t) for t in texts] == native[0]
    fallback = strip_protected_all(pa.array(texts, pa.large_string()))
    assert fallback.texts.equals(native[1].texts)
    assert fallback.chars.tolist() == native[1].chars.tolist()
