import re

import pytest

from curate.text.masking import (
    MASKING_VERSION,
    MaskError,
    mask,
    masking_version,
    protected_spans,
    strip_protected,
    unmask,
)
from curate.text.spans import PATTERNS


@pytest.mark.parametrize(
    ("text", "masked", "kinds"),
    [
        ("Run `pip install x` now", "Run ⟦0⟧ now", ["code_inline"]),
        ("See:\n```python\nprint('hi')\n```\nDone.", "See:\n⟦0⟧\nDone.", ["code_block"]),
        ("Unclosed ```\ncode to the end", "Unclosed ⟦0⟧", ["code_block"]),
        ("Solve $x^2 + 1 = 0$ for x.", "Solve ⟦0⟧ for x.", ["math_inline"]),
        ("So $$\\int_0^1 x\\,dx = \\frac12$$ holds", "So ⟦0⟧ holds", ["math_display"]),
        ("Both \\(a+b\\) and \\[c^2\\]", "Both ⟦0⟧ and ⟦1⟧", ["math_inline", "math_display"]),
        ("The answer is $\\boxed{42}$.", "The answer is ⟦0⟧.", ["math_inline"]),
        ("Read https://example.com/a?b=1.", "Read ⟦0⟧.", ["url"]),
        ("(see https://a.io/x), then", "(see ⟦0⟧), then", ["url"]),
        ("Wiki https://en.wikipedia.org/wiki/Foo_(bar) ok", "Wiki ⟦0⟧ ok", ["url"]),
        ("Hello {name}, {0} and {{ user.id }}", "Hello ⟦0⟧, ⟦1⟧ and ⟦2⟧", ["placeholder"] * 3),
        ("%(count)d items, %s left", "⟦0⟧ items, ⟦1⟧ left", ["placeholder"] * 2),
        ("She sold 48/2 = <<48/2=24>>24 clips.", "She sold 48/2 = ⟦0⟧24 clips.", ["calc"]),
        ("Inline `cost $x$ here` stays code", "Inline ⟦0⟧ stays code", ["code_inline"]),
        ("A literal ⟦0⟧ and `x`", "A literal ⟦0⟧ and ⟦1⟧", ["mask_token", "code_inline"]),
    ],
)
def test_mask_replaces_protected_spans_and_round_trips(text: str, masked: str, kinds: list[str]) -> None:
    m = mask(text)
    assert m.text == masked
    assert [s.kind for s in m.spans] == kinds
    assert unmask(m.text, m.spans) == text


@pytest.mark.parametrize(
    "text",
    [
        "It costs $5 and $10.",
        "Between $5-$10 a day",
        "US$5 and US$10",
        "Price $5.50, total $10",
        "10$ and 20$",
    ],
)
def test_money_is_not_math(text: str) -> None:
    assert protected_spans(text) == []
    assert mask(text).text == text


def test_money_next_to_math_masks_only_the_math() -> None:
    m = mask("Pay $5 and get $x$ free")
    assert m.text == "Pay $5 and get ⟦0⟧ free"
    assert m.spans[0].text == "$x$"


def test_url_inside_code_stays_code() -> None:
    m = mask("Try `curl https://a.io/x` now")
    assert [s.kind for s in m.spans] == ["code_inline"]


def test_unmask_accepts_reordered_tokens() -> None:
    m = mask("Set {a} before {b}.")
    assert unmask("Pon ⟦1⟧ después de ⟦0⟧.", m.spans) == "Pon {b} después de {a}."


@pytest.mark.parametrize(
    ("translated", "problem"),
    [
        ("Pon ⟦0⟧.", r"missing \[1\]"),
        ("Pon ⟦0⟧ ⟦0⟧ ⟦1⟧.", r"duplicated or unknown \[0\]"),
        ("Pon ⟦0⟧ ⟦1⟧ ⟦2⟧.", r"duplicated or unknown \[2\]"),
        ("Pon [0] y [1].", r"missing \[0, 1\]"),
    ],
)
def test_unmask_rejects_lost_duplicated_or_invented_tokens(translated: str, problem: str) -> None:
    m = mask("Set {a} before {b}.")
    with pytest.raises(MaskError, match=problem):
        unmask(translated, m.spans)


def test_text_without_spans_is_unchanged() -> None:
    m = mask("Plain prose, nothing to protect.")
    assert m.spans == ()
    assert unmask(m.text, m.spans) == "Plain prose, nothing to protect."


def test_strip_protected_keeps_prose_only() -> None:
    text = "Use `ls -la` to see https://a.io and $x^2$\n\nthen   stop."
    assert strip_protected(text) == "Use to see and then stop."


def test_masking_version_follows_the_span_grammar_and_the_token_format() -> None:
    assert masking_version() == MASKING_VERSION == masking_version(PATTERNS, token="⟦{}⟧")
    assert mask("Run `ls` now").text == "Run ⟦0⟧ now"  # the token format it names is the one used
    kinds = dict(PATTERNS)
    changed = [
        tuple((k, re.compile(r"`[^`]+`")) if k == "code_inline" else (k, p) for k, p in PATTERNS),
        tuple((k, re.compile(p.pattern)) if k == "code_block" else (k, p) for k, p in PATTERNS),  # flags
        tuple(PATTERNS[:-2] + PATTERNS[-1:]),  # placeholders no longer protected
        (("url", kinds["url"]), *(kp for kp in PATTERNS if kp[0] != "url")),  # precedence
    ]
    versions = {masking_version(patterns) for patterns in changed} | {masking_version(token="<m{}>")}
    assert len(versions) == len(changed) + 1
    assert MASKING_VERSION not in versions
