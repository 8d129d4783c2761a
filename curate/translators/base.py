"""What every translation backend implements, and the errors through which it reports failures.

A failure that concerns only some texts of a batch is raised as :class:`TranslationErrors` carrying the
other results, so that only the rows using those texts are rejected; any other exception fails every text
of the call. :class:`TranslatorConfigError` is the user's to fix (binary, model, mode or language code
missing) and ends the build.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol

from schemas import ConfigError


class TranslatorConfigError(ConfigError):
    """A backend that cannot run as configured (binary, model, mode or language code missing).

    A user mistake, not bad data: :class:`Translate` lets it end the run instead of rejecting rows.
    """


class TranslationErrors(RuntimeError):
    """Some texts of a batch failed: ``results[i]`` is None exactly where ``errors[i]`` says why."""

    def __init__(self, results: list[str | None], errors: dict[int, str]) -> None:
        first = errors[min(errors)]
        super().__init__(f"{len(errors)} of {len(results)} texts failed, e.g. text {min(errors)}: {first}")
        self.results = results
        self.errors = errors


class Translator(Protocol):
    """A translation backend; ``name`` identifies it in the ``translator`` column.

    ``translates`` is False only for input that already holds its translations: the translate stage
    then creates no rows, and a missing language is simply missing.
    """

    name: str
    translates: ClassVar[bool]

    def setup(self) -> None:
        """Load models or open connections, failing early on a missing binary, model or server setting."""

    def check_pair(self, src: str, tgt: str) -> None:
        """Raise :class:`TranslatorConfigError` unless ``src`` → ``tgt`` can be translated."""

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        """Everything besides the text that decides this backend's output for ``src`` → ``tgt`` (model,
        endpoint, prompt, decoding settings), as JSON values: the translation cache keys on it, so that
        changing any of them translates afresh. Called after :meth:`setup`, where the model is."""

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        """Translate ``texts`` in order; raise :class:`TranslationErrors` when only some fail."""


def translate_each(translate_one: Callable[[str], str], texts: list[str], *, workers: int = 1) -> list[str]:
    """Translate texts one at a time (``workers`` in parallel), collecting per-text failures."""

    def attempt(text: str) -> tuple[str | None, str | None]:
        try:
            return translate_one(text), None
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    if workers > 1 and len(texts) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(texts))) as pool:
            outcomes = list(pool.map(attempt, texts))
    else:
        outcomes = [attempt(t) for t in texts]
    errors = {i: error for i, (_, error) in enumerate(outcomes) if error is not None}
    results = [out for out, _ in outcomes]
    if errors:
        raise TranslationErrors(results, errors)
    return [out for out in results if out is not None]
