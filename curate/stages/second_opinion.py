"""A second language ID model, asked only where fastText's reading is torn between a row's language and one
other language (see :mod:`curate.stages.lid`).

lid.176 confuses close relatives one way (Galician read as Portuguese, Slovene as Croatian); Google's CLD3
(``cld3-py``: Apache-2.0, a 1.4 MB neural model inside the wheel, 107 languages) was trained on other data
and errs elsewhere, so where the two models disagree on which of two languages a text is, the second one
decides. It reads the same text lid.176 read (protected spans and letterless tokens removed).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from schemas import UnknownLanguageError, import_optional, normalize_lang

# CLD3 reads at most this many bytes of a text; a row is rarely longer, and its start is enough.
_MAX_BYTES = 4096


class Readings(NamedTuple):
    """One language (None where the model names none we know) and its probability per text."""

    langs: list[str | None]
    probs: np.ndarray


class Cld3:
    """CLD3's top language per text."""

    name = "cld3"

    def __init__(self) -> None:
        self._model: Any = None

    def setup(self) -> None:
        gcld3 = import_optional("gcld3", feature="lid.second_opinion 'cld3'", install="pip install cld3-py")
        self._model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=_MAX_BYTES)

    def read(self, texts: list[str]) -> Readings:
        if self._model is None:
            msg = f"{self.name}: setup() must run before read()"
            raise RuntimeError(msg)
        found = [self._model.FindLanguage(text) for text in texts]
        langs = [_lang(r.language) for r in found]
        return Readings(langs, np.array([r.probability for r in found], np.float64))


def _lang(code: str) -> str | None:
    try:
        return normalize_lang(code.replace("-", "_"))
    except UnknownLanguageError:
        return None


def make_second_opinion(name: str | None) -> Cld3 | None:
    """The model ``lid.second_opinion`` names, or None."""
    return Cld3() if name == "cld3" else None
