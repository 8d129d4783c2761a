"""Protect what must not be translated: code, math, URLs, placeholders, calculator annotations.

Each protected span is replaced by a token ``⟦i⟧`` before translation and put back afterwards. The token
survives rule-based MT (Apertium), seq2seq MT and LLM translators alike; a translation that loses,
duplicates or invents a token cannot be restored and is rejected by the caller.

    "Run `pip install x` at https://a.io"  ─mask→  "Run ⟦0⟧ at ⟦1⟧"  ─translate→  "Ejecute ⟦0⟧ en ⟦1⟧"
                                            ─unmask→ "Ejecute `pip install x` en https://a.io"
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.text import spans as grammar
from curate.text.spans import KINDS, PATTERNS
from schemas import canonical_json

TOKEN = "⟦{}⟧"  # span i becomes TOKEN.format(i)
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
    found = grammar.native.spans(text) if grammar.native is not None else grammar.find(text)
    return [Span(KINDS[kind], start, end, text[start:end]) for kind, start, end in found]


def mask(text: str) -> Masked:
    spans = protected_spans(text)
    parts: list[str] = []
    cursor = 0
    for i, span in enumerate(spans):
        parts.append(text[cursor : span.start])
        parts.append(TOKEN.format(i))
        cursor = span.end
    parts.append(text[cursor:])
    return Masked("".join(parts), tuple(spans))


def masking_version(patterns: Sequence[tuple[str, re.Pattern[str]]] = PATTERNS, *, token: str = TOKEN) -> str:
    """A short hash of how text is masked: the span grammar (kinds, expressions, flags, precedence) and the
    token format. Translations cached under another version were made from differently masked text."""
    spec = {
        "spans": [[kind, pattern.pattern, pattern.flags] for kind, pattern in patterns],
        "token": token,
        "token_re": _TOKEN.pattern,
    }
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()[:16]


MASKING_VERSION = masking_version()


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
    """The translatable prose only: what language ID and sentence embeddings should look at. Each
    protected span and each whitespace run (``str.isspace``) becomes one space; the ends are trimmed."""
    return strip_protected_all(pa.array([text], pa.string())).texts[0].as_py()


class Stripped(NamedTuple):
    texts: pa.Array
    chars: np.ndarray  # the length of each text in characters (0 for null)


def strip_protected_all(texts: pa.Array) -> Stripped:
    """:func:`strip_protected` of each string of an Arrow ``string``/``large_string`` array, in one
    native pass over its buffers; nulls stay null."""
    if grammar.native is None:
        texts_out = [None if t is None else grammar.prose(t) for t in texts.to_pylist()]
        chars = np.array([0 if t is None else len(t) for t in texts_out], np.int64)
        return Stripped(pa.array(texts_out, texts.type), chars)
    filled = texts.fill_null("") if texts.null_count else texts
    _, offsets, data = filled.buffers()
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    starts = np.frombuffer(offsets, width, len(filled) + 1, filled.offset * np.dtype(width).itemsize)
    out_offsets, out_data, chars = grammar.native.strip(starts, data if data is not None else b"")
    buffers = [None, pa.py_buffer(out_offsets), pa.py_buffer(out_data)]
    stripped = pa.Array.from_buffers(texts.type, len(filled), buffers)
    if texts.null_count:
        stripped = pc.if_else(texts.is_valid(), stripped, pa.scalar(None, texts.type))
    return Stripped(stripped, np.frombuffer(chars, np.int64))
