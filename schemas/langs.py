"""Language codes, normalised in one place.

Every code that enters the project (config, input rows, fastText labels such as ``__label__de`` or GlotLID's
``__label__deu_Latn``) goes through :func:`normalize_lang`, so ``deu``, ``de-DE`` and ``de`` compare equal.
The canonical form is the shortest ISO 639 code, plus ``_Script`` only when the script is not the
language's default (``zh_Hans``, ``sr_Latn``); regions are dropped because parallel corpora are per language.
"""

from __future__ import annotations

from functools import lru_cache

import langcodes

from schemas.errors import UserError

_LABEL_PREFIX = "__label__"

# Individual languages that LID models (GlotLID, OpenLID, NLLB codes) emit for what users call by the
# macrolanguage code: ``swh`` is the Swahili everyone writes as ``sw``.
_MACRO = {
    "arb": "ar",
    "azj": "az",
    "cmn": "zh",
    "ekk": "et",
    "gaz": "om",
    "khk": "mn",
    "lvs": "lv",
    "npi": "ne",
    "ory": "or",
    "pes": "fa",
    "plt": "mg",
    "prs": "fa",
    "quy": "qu",
    "swh": "sw",
    "uzn": "uz",
    "ydd": "yi",
    "zsm": "ms",
    "als": "sq",
}


class UnknownLanguageError(UserError, ValueError):
    """A language code that is not a valid BCP-47 / ISO 639 code."""


@lru_cache(maxsize=4096)
def normalize_lang(code: str) -> str:
    """Return the canonical code for ``code`` (e.g. ``"deu"`` → ``"de"``, ``"zho-Hans"`` → ``"zh_Hans"``)."""
    raw = code.strip()
    if raw.startswith(_LABEL_PREFIX):
        raw = raw[len(_LABEL_PREFIX) :]
    raw = raw.replace("_", "-")
    if not raw or not langcodes.tag_is_valid(raw):
        msg = f"unknown language code {code!r}: expected an ISO 639-1/3 code with an optional script, e.g. 'de', 'sw', 'zh_Hans'"
        raise UnknownLanguageError(msg)
    lang = langcodes.Language.get(raw, normalize=True)
    if lang.language is None or lang.language == "und":
        msg = f"unknown language code {code!r}: no language subtag"
        raise UnknownLanguageError(msg)
    base = langcodes.standardize_tag(lang.language)
    base = _MACRO.get(base, base)
    script = lang.script
    if script is not None and script == langcodes.Language.get(base).maximize().script:
        script = None
    return f"{base}_{script}" if script else base


def base_lang(code: str) -> str:
    """The language without its script, for comparing against LID models that predict bare languages."""
    return normalize_lang(code).split("_", 1)[0]


def is_valid_lang(code: str) -> bool:
    try:
        normalize_lang(code)
    except UnknownLanguageError:
        return False
    return True
