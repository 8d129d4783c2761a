"""How numbers written in the data are read, the same way where answers are checked (``curate``'s
structure stage) and where they are scored (``align_train``'s evaluation)."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

# A run of digits joined by separators, with a sign when one stands right before it ("-5", "−5"; in "3-5"
# the hyphen is a range). Grouping marks that are never decimal marks (spaces, apostrophes, the Arabic
# thousands sign) only join a group of exactly three digits, so "3 4" stays two numbers.
_NUMBER = re.compile(
    r"(?P<sign>(?<!\w)[-\u2212])?"
    r"(?P<digits>\d+(?:(?:[.,\u066b]|[ \u00a0\u2009\u202f'’\u066c](?=\d{3}(?!\d)))\d+)*)"
)
_GROUPING = str.maketrans("", "", " \u00a0\u2009\u202f'’\u066c")


def read_numbers(text: str) -> list[Decimal]:
    """The numbers written in ``text``, in order, whatever the locale and script.

    "1,234.5", "1.234,5", "1 234,5" and "١٬٢٣٤٫٥" all read 1234.5; "४२" reads 42. Where both "." and ","
    appear, the last one is the decimal mark. A lone mark followed by exactly three digits ("1,234",
    "1.234") is grouping in every locale, unless the digits before it are "0" ("0.125"), so a text and its
    translation agree whichever convention each uses. Digits are any Unicode decimal digits (category Nd):
    superscripts such as "²" are not numbers.
    """
    numbers = []
    for match in _NUMBER.finditer(text):
        token = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in match["digits"])
        token = token.translate(_GROUPING).replace("\u066b", ".")
        marks = [c for c in token if c in ".,"]
        if marks:
            mark = marks[-1]
            whole, _, fraction = token.rpartition(mark)
            is_decimal = marks.count(mark) == 1 and (
                len(set(marks)) == 2 or len(fraction) != 3 or whole == "0"
            )
            token = re.sub(r"[.,]", "", whole) + "." + fraction if is_decimal else re.sub(r"[.,]", "", token)
        value = Decimal(token)
        numbers.append(-value if match["sign"] and value else value)
    return numbers
