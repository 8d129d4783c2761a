"""The grammar of protected spans: what must never be translated or judged as prose, as Python regexes.

This module is the specification. ``curate/text/_spans.c`` implements the same expressions natively (one
pass over the UTF-8 buffers of an Arrow array, the GIL released) and runs whenever it was built at
install; the test suite checks it against :data:`PATTERNS` on generated and real text. Where no C
compiler was at hand the extension is skipped and :func:`find` and :func:`prose` below run instead: the
same spans and prose, several times slower.

Kinds, in order of precedence (where spans overlap, the earlier kind wins: a URL inside a code block stays
code):

    code_block    ```.*?(?:```|\\Z)  (across lines)
    code_inline   `[^`\\n]+`
    math_display  $$...$$ or \\[...\\]  (across lines)
    math_inline   \\(...\\) or $...$ where the opening $ follows no \\, $ or word character, neither end
                  touches whitespace and no digit follows (so "$5 and $10" is money, not math)
    url           http(s)/ftp URLs; balanced parentheses stay inside, trailing punctuation does not
    calc          <<...>>  (GSM8K calculator annotations)
    placeholder   {{ name }}, {name}, {0}, %(name)s, %s, %d
    mask_token    ⟦0⟧: a token already in the source is protected like any span, so ours cannot collide
"""

from __future__ import annotations

import re
import warnings
from types import ModuleType

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
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
KINDS: tuple[str, ...] = tuple(kind for kind, _ in PATTERNS)


def find(text: str) -> list[tuple[int, int, int]]:
    """``(kind, start, end)`` of each protected span of ``text`` by the expressions, in order of position;
    ``kind`` indexes :data:`KINDS`."""
    taken: list[tuple[int, int, int]] = []
    for kind, (_, pattern) in enumerate(PATTERNS):
        for m in pattern.finditer(text):
            if not any(start < m.end() and m.start() < end for _, start, end in taken):
                taken.append((kind, m.start(), m.end()))
    return sorted(taken, key=lambda span: span[1])


def prose(text: str) -> str:
    """``text`` with each protected span and each whitespace run (``str.isspace``) made one space, trimmed."""
    parts, cursor = [], 0
    for _, start, end in find(text):
        parts.append(text[cursor:start])
        cursor = end
    parts.append(text[cursor:])
    return " ".join(" ".join(parts).split())


def _load_native() -> ModuleType | None:
    try:
        from curate.text import _spans
    except ImportError:
        warnings.warn(
            "curate.text._spans was not built (no C compiler at install): protected spans are found with "
            "Python's re, several times slower; reinstall with a C compiler and the Python headers",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _spans


# The native scanner, or None where it was not built.
native = _load_native()
