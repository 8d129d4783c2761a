"""Protect what must not be translated: code, math, URLs, placeholders, calculator annotations.

Each protected span is replaced by a token ``⟦i⟧`` before translation and put back afterwards. The token
survives rule-based MT (Apertium), seq2seq MT and LLM translators alike; a translation that loses,
duplicates or invents a token cannot be restored and is rejected by the caller.

    "Run `pip install x` at https://a.io"  ─mask→  "Run ⟦0⟧ at ⟦1⟧"  ─translate→  "Ejecute ⟦0⟧ en ⟦1⟧"
                                            ─unmask→ "Ejecute `pip install x` en https://a.io"
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Order matters: earlier patterns win where spans overlap (a URL inside a code block stays code). Each
# pattern lists substrings one of which any match contains, so most prose skips the regex scans.
_PATTERNS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("code_block", re.compile(r"```.*?(?:```|\Z)", re.DOTALL), ("```",)),
    ("code_inline", re.compile(r"`[^`\n]+`"), ("`",)),
    ("math_display", re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]", re.DOTALL), ("$$", "\\[")),
    # ``$`` not after ``\``, ``$`` or a word character; the lookbehind comes after the ``$`` so that both
    # alternatives start with a literal and ``re`` skips ahead to the next ``\`` or ``$`` (3x faster).
    (
        "math_inline",
        re.compile(r"\\\(.+?\\\)|\$(?<![\\$\w]\$)(?=\S)[^$\n]*?(?<=\S)\$(?!\d)"),
        ("\\(", "$"),
    ),
    # Balanced parentheses stay inside a URL (wiki links); an unpaired ")" and trailing punctuation
    # belong to the sentence.
    (
        "url",
        re.compile(
            r"\b(?:https?|ftp)://(?:\([^\s()<>]*\)|[^\s<>\"'()\[\]])*(?:\([^\s()<>]*\)|[^\s<>\"'()\[\].,;:!?])"
        ),
        ("://",),
    ),
    ("calc", re.compile(r"<<[^<>\n]*>>"), ("<<",)),
    (
        "placeholder",
        re.compile(r"\{\{\s*[\w.\-]+\s*\}\}|\{[A-Za-z_][\w.\-]*\}|\{\d+\}|%\([\w]+\)[sdf]|%[sd]\b"),
        ("{", "%"),
    ),
    # A token already present in the source is protected like any span, so it cannot collide with ours.
    ("mask_token", re.compile(r"⟦\d+⟧"), ("⟦",)),
)

_ANY_NEEDED = re.compile("|".join(re.escape(n) for _, _, needs in _PATTERNS for n in needs))
_KIND_PATTERNS = tuple((kind, pattern) for kind, pattern, _ in _PATTERNS)
# The triggers again, for RE2 (one literal per scan: RE2 searches a lone literal with memchr).
_TRIGGERS = tuple(tuple(map(re.escape, needs)) for _, _, needs in _PATTERNS)
# What ``str.split()`` splits on (``str.isspace``), spelled out for RE2, whose ``\s`` is ASCII only; and,
# for RE2, a run of it that ``str.split()`` and ``" ".join`` turn into one space.
_WHITESPACE = (
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def _re2_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


_WHITESPACE_RUN = _re2_class(_WHITESPACE) + "{2,}|" + _re2_class(_WHITESPACE.replace(" ", ""))
_TOKEN = re.compile(r"⟦(\d+)⟧")


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Masked:
    """Text with protected spans replaced by ``⟦i⟧`` tokens; ``spans[i]`` is what token i stands for."""

    text: str
    spans: tuple[Span, ...]


class MaskError(ValueError):
    """A translation whose mask tokens do not match the source's (lost, duplicated or invented)."""


def protected_spans(text: str) -> list[Span]:
    """Non-overlapping protected spans of ``text``, in order of position."""
    return [Span(kind, start, end, text[start:end]) for kind, start, end in _find(text, _triggered(text))]


def _triggered(text: str) -> list[tuple[str, re.Pattern[str]]]:
    """The patterns whose triggers ``text`` holds, in order."""
    if _ANY_NEEDED.search(text) is None:
        return []
    return [(kind, pattern) for kind, pattern, needs in _PATTERNS if any(map(text.__contains__, needs))]


def _find(text: str, patterns: Iterable[tuple[str, re.Pattern[str]]]) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` of the spans ``patterns`` protect, in order of position; plain tuples, as
    :func:`strip_protected_all` runs this on every message of a batch."""
    taken: list[tuple[str, int, int]] = []
    starts: list[int] = []  # of ``taken``, kept sorted: being disjoint, their ends are sorted too
    for kind, pattern in patterns:
        for m in pattern.finditer(text):
            start, end = m.span()
            i = bisect.bisect_left(starts, end)
            if i and taken[i - 1][2] > start:  # the last span starting before this one ends overlaps it
                continue
            starts.insert(i, start)
            taken.insert(i, (kind, start, end))
    return taken


def mask(text: str) -> Masked:
    spans = protected_spans(text)
    parts: list[str] = []
    cursor = 0
    for i, span in enumerate(spans):
        parts.append(text[cursor : span.start])
        parts.append(f"⟦{i}⟧")
        cursor = span.end
    parts.append(text[cursor:])
    return Masked("".join(parts), tuple(spans))


def unmask(translated: str, spans: tuple[Span, ...]) -> str:
    """Put protected spans back; raises :class:`MaskError` unless every token appears exactly once."""
    found = [int(m.group(1)) for m in _TOKEN.finditer(translated)]
    if sorted(found) != list(range(len(spans))):
        missing = sorted(set(range(len(spans))) - set(found))
        extra = sorted(i for i in set(found) if found.count(i) > 1 or i >= len(spans))
        msg = f"mask tokens do not match: missing {missing}, duplicated or unknown {extra}"
        raise MaskError(msg)
    return _TOKEN.sub(lambda m: spans[int(m.group(1))].text, translated)


def strip_protected(text: str) -> str:
    """The translatable prose only: what language ID and sentence embeddings should look at.

    Whitespace runs become one space (``str.split`` splits on exactly the characters ``\\s`` matches).
    """
    return " ".join(_blank(text, _triggered(text)).split())


def _blank(text: str, patterns: Iterable[tuple[str, re.Pattern[str]]]) -> str:
    """``text`` with each span ``patterns`` protect replaced by a space."""
    parts: list[str] = []
    cursor = 0
    for _, start, end in _find(text, patterns):
        parts.append(text[cursor:start])
        cursor = end
    parts.append(text[cursor:])
    return " ".join(parts)


def strip_protected_all(texts: pa.Array) -> pa.Array:
    """:func:`strip_protected` of each string, in bulk. RE2 scans find the texts holding a trigger and the
    patterns each one triggers: only those texts go through Python, and only those patterns run on them.
    RE2 collapses the whitespace too.
    """
    triggering = pc.match_substring_regex(texts, _ANY_NEEDED.pattern)
    if pc.any(triggering).as_py():
        todo = texts.filter(triggering)
        triggered = [_any_match(todo, needs) for needs in _TRIGGERS]
        blanked = [
            _blank(text, compress(_KIND_PATTERNS, hits))
            for text, hits in zip(todo.to_pylist(), np.column_stack(triggered).tolist(), strict=True)
        ]
        texts = pc.replace_with_mask(texts, triggering, pa.array(blanked, pa.string()))
    return pc.utf8_trim(pc.replace_substring_regex(texts, _WHITESPACE_RUN, " "), " ")


def _any_match(texts: pa.Array, patterns: tuple[str, ...]) -> np.ndarray:
    """Whether each text matches any of ``patterns``, one RE2 scan each."""
    return np.logical_or.reduce(
        [pc.match_substring_regex(texts, p).to_numpy(zero_copy_only=False) for p in patterns]
    )
