"""The native span scanner (``curate/_spans.c``) against the regular expressions it implements, run by
Python's ``re``: same spans and same prose on generated text built from the characters every pattern
turns on, and on every message of the demo corpora."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curate.masking import KINDS, protected_spans, strip_protected, strip_protected_all

# The definitions, in order of precedence (as quoted in curate/_spans.c).
REFERENCE = (
    ("code_block", re.compile(r"```.*?(?:```|\Z)", re.DOTALL)),
    ("code_inline", re.compile(r"`[^`\n]+`")),
    ("math_display", re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]", re.DOTALL)),
    ("math_inline", re.compile(r"\\\(.+?\\\)|\$(?<![\\$\w]\$)(?=\S)[^$\n]*?(?<=\S)\$(?!\d)")),
    (
        "url",
        re.compile(
            r"\b(?:https?|ftp)://(?:\([^\s()<>]*\)|[^\s<>\"'()\[\]])*(?:\([^\s()<>]*\)|[^\s<>\"'()\[\].,;:!?])"
        ),
    ),
    ("calc", re.compile(r"<<[^<>\n]*>>")),
    (
        "placeholder",
        re.compile(r"\{\{\s*[\w.\-]+\s*\}\}|\{[A-Za-z_][\w.\-]*\}|\{\d+\}|%\([\w]+\)[sdf]|%[sd]\b"),
    ),
    ("mask_token", re.compile(r"⟦\d+⟧")),
)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
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


def reference_spans(text: str) -> list[tuple[str, int, int]]:
    taken: list[tuple[str, int, int]] = []
    for kind, pattern in REFERENCE:
        for m in pattern.finditer(text):
            if not any(start < m.end() and m.start() < end for _, start, end in taken):
                taken.append((kind, m.start(), m.end()))
    return sorted(taken, key=lambda span: span[1])


def reference_prose(text: str) -> str:
    parts, cursor = [], 0
    for _, start, end in reference_spans(text):
        parts.append(text[cursor:start])
        cursor = end
    parts.append(text[cursor:])
    return " ".join(" ".join(parts).split())


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


def scanned(text: str) -> list[tuple[str, int, int]]:
    return [(s.kind, s.start, s.end) for s in protected_spans(text)]


def test_kinds_are_the_reference_order() -> None:
    assert tuple(kind for kind, _ in REFERENCE) == KINDS


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
    assert scanned(text) == reference_spans(text) == [("code_inline", 8, 14), ("url", 17, 31)]
    assert strip_protected(text) == "Ünïcödé 😀"
