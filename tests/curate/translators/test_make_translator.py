"""``translate.backend`` → a translator (curate/translators/__init__.py), and the settings each backend
needs."""

from pathlib import Path

import pytest

from curate.config import HFTranslatorConfig, OpenAITranslatorConfig, TranslateConfig
from curate.translators import HFSeq2SeqTranslator, OpenAITranslator, PretranslatedTranslator, make_translator


def test_make_translator_builds_each_backend(tmp_path: Path) -> None:
    assert isinstance(make_translator(TranslateConfig(backend="pretranslated")), PretranslatedTranslator)
    assert make_translator(TranslateConfig(backend="apertium")).name == "apertium"
    hf = make_translator(
        TranslateConfig(backend="hf", hf=HFTranslatorConfig(model_path=f"{tmp_path}/{{src}}-{{tgt}}"))
    )
    assert isinstance(hf, HFSeq2SeqTranslator)
    assert hf.path("en", "de") == f"{tmp_path}/en-de"
    openai = make_translator(TranslateConfig(backend="openai", openai=OpenAITranslatorConfig(model="qwen")))
    assert isinstance(openai, OpenAITranslator)
    assert openai.name == "openai:qwen"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (TranslateConfig(backend="hf"), "translate.hf.model_path is required"),
        (TranslateConfig(backend="hf", hf=HFTranslatorConfig(model_path="/m/{lang}")), r"uses \['lang'\]"),
        (TranslateConfig(backend="openai"), "translate.openai.model is required"),
    ],
)
def test_make_translator_refuses_incomplete_settings(config: TranslateConfig, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_translator(config)
