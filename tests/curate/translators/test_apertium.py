"""The Apertium backend, on Debian's real apertium binary and eng-spa / eng-cat pairs."""

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.config import ApertiumTranslatorConfig
from curate.stages.translate import Translate
from curate.translators import ApertiumTranslator, TranslationCache, TranslatorConfigError
from tests.curate.rows import row, table
from tests.curate.translation import CountingApertium, contents, needs_apertium


def test_apertium_setup_names_the_missing_binary() -> None:
    translator = ApertiumTranslator(ApertiumTranslatorConfig(binary="no-such-apertium-binary"))
    with pytest.raises(TranslatorConfigError, match="apt-get install apertium apertium-eng-spa"):
        translator.setup()


@needs_apertium
def test_apertium_setup_refuses_missing_modes() -> None:
    with pytest.raises(TranslatorConfigError, match="no default Apertium mode for en→de"):
        Translate(ApertiumTranslator(ApertiumTranslatorConfig()), anchor_lang="en", langs=["de"]).setup()
    overridden = ApertiumTranslator(ApertiumTranslatorConfig(modes={"es": "eng-klingon"}))
    assert overridden.name == "apertium:es=eng-klingon"
    with pytest.raises(TranslatorConfigError, match=r"\['eng-klingon'\], which are not installed"):
        overridden.setup()


@needs_apertium
def test_apertium_batches_in_one_process_like_single_calls() -> None:
    texts = [
        "the red house",
        "I have ⟦0⟧ apples and ⟦1⟧ pears.",
        "First line.\nSecond line.\n\nNew paragraph.",
        "big dog",
        "  spaces around  ",
        "How do I undo my last commit?",
    ]
    translator = CountingApertium()
    translator.setup()
    batched = translator.translate(texts, src="en", tgt="es")
    assert translator.processes == 1
    singles = [translator.translate([t], src="en", tgt="es")[0] for t in texts]
    assert batched == singles
    assert "⟦0⟧" in batched[1] and "⟦1⟧" in batched[1] and "manzanas" in batched[1]
    assert batched[2].count("\n") == 3 and "\n\n" in batched[2]
    assert batched[0].lower() == "la casa roja"
    assert batched[4].startswith("  ") and batched[4].endswith("  ")
    assert "  " not in batched[5]  # the blanks of words Apertium drops are closed up


@needs_apertium
def test_apertium_falls_back_to_one_process_per_text_when_the_split_fails() -> None:
    texts = ["the red house", "a text that quotes the separator\n\n⟦⟦⟦0⟧⟧⟧\n\nin it", "big dog"]
    translator = CountingApertium()
    translator.setup()
    out = translator.translate(texts, src="en", tgt="es")
    assert translator.processes == 1 + len(texts)
    assert out[0].lower() == "la casa roja"
    assert "⟦⟦⟦0⟧⟧⟧" in out[1]


@needs_apertium
def test_apertium_cache_keys_on_mode_executable_and_pair_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = table(row("g1", "en", "The cat is on the table."))
    cache_path = tmp_path / "t.sqlite"

    def run(**settings: Any) -> tuple[int, str, str]:
        """Texts sent to Apertium, the es translation and the translator column."""
        translator = CountingApertium(ApertiumTranslatorConfig(**settings))
        stage = Translate(translator, anchor_lang="en", langs=["es"], cache=TranslationCache(cache_path))
        stage.setup()
        result = stage.process(batch)
        (translated,) = contents(result, "g1", "es")
        name = result.kept.filter(pa.compute.field("lang") == "es")["translator"][0].as_py()
        return sum(len(call) for call in translator.calls), translated, name

    sent, spanish, _ = run()
    assert sent == 1 and "gato" in spanish
    assert run() == (0, spanish, "apertium")
    assert run(modes={"es": "eng-spa"}) == (0, spanish, "apertium:es=eng-spa")  # the mode in force
    sent, catalan, name = run(modes={"es": "eng-cat"})
    assert (sent, name) == (1, "apertium:es=eng-cat") and "gat" in catalan

    wrapper = tmp_path / "bin" / "apertium-wrapper"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("apertium")} "$@"\n')
    wrapper.chmod(0o755)
    assert run(binary=str(wrapper))[0] == 1
    assert run(binary=str(wrapper))[0] == 0

    # Another installation of the pair's language data (here a copy elsewhere): translated afresh.
    datadir = tmp_path / "apertium"
    shutil.copytree("/usr/share/apertium/modes", datadir / "modes")
    shutil.copytree("/usr/share/apertium/apertium-eng-spa", datadir / "apertium-eng-spa")
    mode_file = datadir / "modes" / "eng-spa.mode"
    mode_file.write_text(mode_file.read_text().replace("/usr/share/apertium/", f"{datadir}/"))
    monkeypatch.setenv("APERTIUM_DATADIR", str(datadir))
    assert run() == (1, spanish, "apertium")
    assert run()[0] == 0
