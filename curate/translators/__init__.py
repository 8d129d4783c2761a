"""Translation backends: ``translate.backend`` names one of them."""

from __future__ import annotations

from collections.abc import Callable

from curate.config import TranslateConfig
from curate.translators.apertium import ApertiumTranslator
from curate.translators.base import TranslationErrors, Translator, TranslatorConfigError
from curate.translators.cache import TranslationCache
from curate.translators.ctranslate2 import CTranslate2Translator
from curate.translators.hf_seq2seq import HFSeq2SeqTranslator
from curate.translators.openai_compat import CleartextKeyWarning, OpenAITranslator
from curate.translators.pretranslated import PretranslatedTranslator

_BACKENDS: dict[str, Callable[[TranslateConfig], Translator]] = {
    "pretranslated": lambda config: PretranslatedTranslator(),
    "apertium": lambda config: ApertiumTranslator(config.apertium),
    "hf": lambda config: HFSeq2SeqTranslator(config.hf),
    "ctranslate2": lambda config: CTranslate2Translator(config.ctranslate2),
    "openai": lambda config: OpenAITranslator(config.openai),
}


def make_translator(config: TranslateConfig) -> Translator:
    return _BACKENDS[config.backend](config)


__all__ = [
    "ApertiumTranslator",
    "CTranslate2Translator",
    "CleartextKeyWarning",
    "HFSeq2SeqTranslator",
    "OpenAITranslator",
    "PretranslatedTranslator",
    "TranslationCache",
    "TranslationErrors",
    "Translator",
    "TranslatorConfigError",
    "make_translator",
]
