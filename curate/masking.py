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
from dataclasses import dataclass

# Order matters: earlier patterns win where spans overlap (a URL inside a code block stays code). Each
# pattern lists substrings one of which any match contains, so most prose skips the regex scans.
_PATTERNS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("code_block", re.compile(r"```.*?(?:```|\Z)", re.DOTALL), ("```",)),
    ("code_inline", re.compile(r"`[^`\n]+`"), ("`",)),
    ("math_display", re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]", re.DOTALL), ("$$", "\\[")),
    (
        "math_inline",
        re.compile(r"\\\(.+?\\\)|(?<![\\$\w])\$(?=\S)[^$\n]*?(?<=\S)\$(?!\d)"),
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
    taken: list[Span] = []
    if _ANY_NEEDED.search(text) is None:
        return taken
    starts: list[int] = []  # of ``taken``, kept sorted: being disjoint, their ends are sorted too
    for kind, pattern, needs in _PATTERNS:
        if not any(n in text for n in needs):
            continue
        for m in pattern.finditer(text):
            start, end = m.span()
            i = bisect.bisect_left(starts, end)
            if i and taken[i - 1].end > start:  # the last span starting before this one ends overlaps it
                continue
            starts.insert(i, start)
            taken.insert(i, Span(kind, start, end, m.group(0)))
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
    spans = protected_spans(text)
    parts: list[str] = []
    cursor = 0
    for span in spans:
        parts.append(text[cursor : span.start])
        parts.append(" ")
        cursor = span.end
    parts.append(text[cursor:])
    return " ".join("".join(parts).split())
