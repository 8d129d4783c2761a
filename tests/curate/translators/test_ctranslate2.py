"""The CTranslate2 backend against the ``hf`` backend on the same tiny random Marian checkpoints, converted
in the test: in float32, the same greedy translations, masks, cache and rejects."""

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ctranslate2")

from curate.config import CTranslate2TranslatorConfig, HFTranslatorConfig
from curate.stages.translate import Translate
from curate.translators import CTranslate2Translator, HFSeq2SeqTranslator, TranslationCache, TranslationErrors
from curate.translators.ctranslate2 import CONVERTED_DIR
from schemas import ConfigError
from tests.curate.rows import row, table
from tests.curate.translation import assert_accounted
from tests.curate.translators.seq2seq_models import CORPUS, save_marian

SETTINGS = {"max_new_tokens": 8}
SEEDS = {"de": 0, "es": 2}  # a model per target language, weights from these seeds


@pytest.fixture(scope="module")
def opus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("opus")
    for lang, seed in SEEDS.items():  # weights large enough that outputs differ in words and length
        bias = {"⟦0⟧": -50.0, "⟦1⟧": -50.0, "</s>": 3.0}
        save_marian(root / f"en-{lang}", seed=seed, bias=bias, opus_layout=True, init_std=1.0)
    save_marian(root / "en-ca", seed=3, bias={"</s>": 50.0}, opus_layout=True)  # ends at once
    save_marian(root / "en-gl", seed=3, bias={"gato": 50.0}, opus_layout=True)  # never ends
    return root


def ct2(model_path: Path | str, **settings: Any) -> CTranslate2Translator:
    config = {"model_path": str(model_path), "compute_type": "float32"} | SETTINGS | settings
    return CTranslate2Translator(CTranslate2TranslatorConfig(**config))


def hf(model_path: Path | str) -> HFSeq2SeqTranslator:
    return HFSeq2SeqTranslator(HFTranslatorConfig(model_path=str(model_path), batch_size=3, **SETTINGS))


def outcomes(translator: HFSeq2SeqTranslator, texts: list[str]) -> list[str | None]:
    """Each text's translation, None where it failed."""
    try:
        return list(translator.translate(texts, src="en", tgt="xx"))
    except TranslationErrors as e:
        return e.results


TEXTS = [
    *CORPUS,
    "the cat",
    "hello",
    "el gato está en la mesa , hola mundo ?",
    "the the the cat cat is",
    "words it has never seen",
    "",
    " ".join(["the cat is on the table ."] * 12),  # 85 tokens: past the model's 64 positions
]


@pytest.mark.parametrize("lang", SEEDS)
def test_float32_translates_as_the_hf_backend_does(opus_root: Path, lang: str) -> None:
    """Token batches of a few texts each (8 tokens), sorted by CTranslate2, give back every output in
    its text's place."""
    model = opus_root / f"en-{lang}"
    expected = outcomes(hf(model), TEXTS)
    done = [out for out in expected if out is not None]
    assert expected[-1] is None and len(set(done)) >= 2  # ended (in different words), cut, refused
    assert outcomes(ct2(model, max_batch_tokens=8), TEXTS) == expected
    assert outcomes(ct2(model, max_batch_tokens=4096), TEXTS) == expected


def test_failures_are_those_of_the_hf_backend(opus_root: Path) -> None:
    """Too long an input, an output cut at max_new_tokens: the same texts fail, for the same reasons."""
    for name, detail in (
        ("en-gl", "translation cut at max_new_tokens=8"),
        ("en-es", "model reads at most 64"),
    ):
        errors = {}
        for translator in (hf(opus_root / name), ct2(opus_root / name)):
            with pytest.raises(TranslationErrors) as caught:
                translator.translate(TEXTS, src="en", tgt="xx")
            errors[translator.backend] = caught.value.errors
        assert errors["ctranslate2"] == errors["hf"]
        assert any(detail in error for error in errors["hf"].values())
    assert (
        outcomes(ct2(opus_root / "en-ca"), ["hello"]) == outcomes(hf(opus_root / "en-ca"), ["hello"]) == [""]
    )


def test_the_stage_masks_and_rejects_as_with_the_hf_backend(opus_root: Path) -> None:
    batch = table(
        row("g1", "en", "the cat is on the table .", "hello world ?"),
        row("g2", "en", "hello ⟦0⟧ world", "the cat"),
        row("g3", "en", "  hello\n"),
    )
    template = f"{opus_root}/{{src}}-{{tgt}}"
    seen = {}
    for translator in (hf(template), ct2(template)):
        stage = Translate(translator, anchor_lang="en", langs=["es", "ca", "gl"])
        stage.setup()
        result = stage.process(batch)
        assert_accounted(batch, result)
        assert result.created == Counter({"es": 3, "ca": 3, "gl": 3})
        kept = [
            (r["group_id"], r["lang"], r["messages"]) for r in result.kept.to_pylist() if not r["is_anchor"]
        ]
        rejected = [(r["group_id"], r["lang"], r["reason"], r["raw"]) for r in result.rejected.to_pylist()]
        seen[translator.backend] = (sorted(kept, key=str), sorted(rejected, key=str))
    assert seen["ctranslate2"] == seen["hf"]
    _, rejected = seen["hf"]
    assert {reason for *_, reason, _ in rejected} >= {"empty_output", "translator_error", "mask_lost"}


def test_converts_once_and_again_when_the_model_changes(opus_root: Path, tmp_path: Path) -> None:
    model = tmp_path / "en-es"
    save_marian(model, seed=0, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0}, opus_layout=True)
    ct2(model).check_pair("en", "es")
    weights = model / CONVERTED_DIR / "model.bin"
    converted = weights.stat().st_mtime_ns
    ct2(model).check_pair("en", "es")
    assert weights.stat().st_mtime_ns == converted
    save_marian(model, seed=1, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0}, opus_layout=True)
    fresh = ct2(model)
    assert outcomes(fresh, TEXTS[:6]) == outcomes(hf(model), TEXTS[:6])
    assert weights.stat().st_mtime_ns != converted

    elsewhere = tmp_path / "converted" / "{src}-{tgt}"
    ct2(model, converted_path=str(elsewhere)).check_pair("en", "es")
    assert (tmp_path / "converted" / "en-es" / "model.bin").is_file()


def test_cache_keys_on_the_compute_type(opus_root: Path, tmp_path: Path) -> None:
    batch = table(row("g1", "en", "the cat is on the table .", "hello world ?"))
    cache = tmp_path / "t.sqlite"

    def sent(**settings: Any) -> int:
        translator = ct2(opus_root / "en-ca", **settings)  # empty outputs: cached, then rejected
        texts: list[str] = []
        translate = translator.translate

        def counting(batch_texts: list[str], *, src: str, tgt: str) -> list[str]:
            texts.extend(batch_texts)
            return translate(batch_texts, src=src, tgt=tgt)

        translator.translate = counting  # type: ignore[method-assign]
        stage = Translate(translator, anchor_lang="en", langs=["es"], cache=TranslationCache(cache))
        stage.setup()
        stage.process(batch)
        return len(texts)

    assert sent() == 2
    assert sent() == 0
    assert sent(max_batch_tokens=16) == 0  # speed, not output
    assert sent(compute_type="int8") == 2
    assert sent(compute_type="auto") == 0  # int8 on a CPU


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"compute_type": "float16"}, "compute_type='float16' needs a GPU"),
        ({"device": "tpu"}, "device='tpu' is invalid"),
        ({"converted_path": "/tmp/{model}"}, r"converted_path '/tmp/\{model\}' uses \['model'\]"),
        ({"model_path": None}, "translate.ctranslate2.model_path is required"),
    ],
)
def test_settings_it_cannot_run_are_refused(settings: dict[str, Any], message: str) -> None:
    config = {"model_path": "models/{src}-{tgt}"} | settings
    with pytest.raises(ConfigError, match=message):
        CTranslate2Translator(CTranslate2TranslatorConfig(**config))
