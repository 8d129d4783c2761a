"""Input that already carries every translation (long-form parallel data)."""

from __future__ import annotations

from typing import Any


class PretranslatedTranslator:
    """The input already holds every translation: :class:`Translate` creates no rows with this backend."""

    name = "pretranslated"
    translates = False

    def setup(self) -> None:
        """Nothing to load."""

    def check_pair(self, src: str, tgt: str) -> None:
        """Every pair is fine: missing languages are simply missing."""

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        return {"backend": "pretranslated"}

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        msg = "translate.backend='pretranslated' translates nothing: pick apertium, hf or openai to translate"
        raise RuntimeError(msg)
