"""The Hugging Face seq2seq backend, on tiny random Marian and NLLB (M2M100) checkpoints saved like real
ones."""

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.config import HFTranslatorConfig
from curate.stages.translate import Translate
from curate.translators import HFSeq2SeqTranslator, TranslationCache, TranslatorConfigError
from curate.translators.hf_seq2seq import model_fingerprint
from schemas import content_hash
from tests.curate.rows import row, table
from tests.curate.translation import assert_accounted, contents, rejects
from tests.curate.translators.seq2seq_models import TINY_DIMS, save_marian


@pytest.fixture(scope="module")
def marian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("marian")
    # Seed 0 with the mask tokens ruled out answers every input with two words and the end token.
    save_marian(root / "en-es", seed=0, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0})
    save_marian(root / "en-ca", seed=3, bias={"</s>": 50.0})  # ends at once: empty output
    save_marian(root / "en-gl", seed=3, bias={"gato": 50.0})  # never ends: cut at max_new_tokens
    return root


def hf_stage(model_path: str, langs: list[str], **settings: Any) -> Translate:
    config = HFTranslatorConfig(model_path=model_path, max_new_tokens=8, batch_size=2, **settings)
    return Translate(HFSeq2SeqTranslator(config), anchor_lang="en", langs=langs)


def test_hf_marian_runs_end_to_end_and_accounts_for_every_row(marian_root: Path) -> None:
    long_text = " ".join(["the cat is on the table ."] * 12)
    batch = table(
        row("g1", "en", "the cat is on the table .", "hello world ?"),
        row("g2", "en", "hello ⟦0⟧ world", "the cat"),
        row("g3", "en", long_text),
        row("g4", "es", "hola", anchor=False),
        row("g4", "en", "hello"),
        row("g5", "en", "  hello\n"),
    )
    stage = hf_stage(f"{marian_root}/{{src}}-{{tgt}}", ["es", "ca", "gl"])
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 4, "ca": 5, "gl": 5})
    new = [
        r for r in result.kept.to_pylist() if r["translator"].startswith("hf:")
    ] + result.rejected.to_pylist()
    expected = {(g, lang) for g in ("g1", "g2", "g3", "g4", "g5") for lang in ("es", "ca", "gl")} - {
        ("g4", "es")
    }
    assert sorted((r["group_id"], r["lang"]) for r in new) == sorted(expected)
    assert {r["translator"] for r in new} == {f"hf:{marian_root}/{{src}}-{{tgt}}"}

    bad = rejects(result)
    for lang in ("es", "ca", "gl"):
        assert bad["g3", lang]["reason"] == "translator_error"
        assert "input is 85 tokens, the model reads at most 64" in bad["g3", lang]["detail"]
    for group in ("g1", "g2", "g4", "g5"):
        assert bad[group, "ca"]["reason"] == "empty_output"
        assert bad[group, "gl"]["reason"] == "translator_error"
    assert "cut at max_new_tokens=8" in bad["g1", "gl"]["detail"]

    translated = contents(result, "g1", "es")
    assert all(t.strip() and "⟦" not in t for t in translated)
    assert bad["g2", "es"]["reason"] == "mask_lost" and "missing [0]" in bad["g2", "es"]["detail"]
    assert bad["g2", "es"]["raw"] == translated[0]
    assert contents(result, "g4", "es") == ["hola"]
    (edged,) = contents(result, "g5", "es")
    assert edged == f"  {translated[0]}\n"
    kept_es = [r for r in result.kept.to_pylist() if r["lang"] == "es" and not r["is_anchor"]]
    assert all(r["content_hash"] == content_hash(r["messages"]) for r in kept_es)


def test_hf_missing_pair_folder_fails_at_setup(marian_root: Path) -> None:
    with pytest.raises(TranslatorConfigError, match="which is not a folder"):
        hf_stage(f"{marian_root}/{{src}}-{{tgt}}", ["de"]).setup()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("empty folder", "holds no config.json: not a Hugging Face model folder"),
        ("no tokenizer", "holds no tokenizer (none of tokenizer.json, "),
        ("no weights", "holds no .safetensors weights"),
        ("weights cut short", "model.safetensors is damaged (its tensors need "),
        ("weights not safetensors", "model.safetensors is damaged (its header claims "),
    ],
)
def test_hf_model_folder_that_cannot_load_is_one_line_at_setup(
    marian_root: Path, tmp_path: Path, damage: str, problem: str
) -> None:
    folder = tmp_path / "en-es"
    if damage == "empty folder":
        folder.mkdir()
    else:
        shutil.copytree(marian_root / "en-es", folder)
    weights = folder / "model.safetensors"
    if damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    elif damage == "no weights":
        weights.unlink()
    elif damage == "weights cut short":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "weights not safetensors":
        weights.write_bytes(b"PK\x03\x04 a zip file, as torch.save writes")
    with pytest.raises(TranslatorConfigError) as caught:
        hf_stage(str(folder), ["es"]).setup()
    assert str(caught.value).startswith("translate.hf.model_path (en→es): ") and problem in str(caught.value)
    assert "\n" not in str(caught.value)


class CountingHF(HFSeq2SeqTranslator):
    """The real Hugging Face backend, recording the texts it is asked to translate."""

    def __init__(self, config: HFTranslatorConfig) -> None:
        super().__init__(config)
        self.sent: list[str] = []

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        self.sent += texts
        return super().translate(texts, src=src, tgt=tgt)


def hf_cached_run(batch: pa.Table, cache: Path, model_path: Path | str, **settings: Any) -> int:
    """How many texts one cached run sends to the model."""
    config = {"model_path": str(model_path), "max_new_tokens": 8, "batch_size": 2} | settings
    translator = CountingHF(HFTranslatorConfig(**config))
    stage = Translate(translator, anchor_lang="en", langs=["es"], cache=TranslationCache(cache))
    stage.setup()
    stage.process(batch)
    return len(translator.sent)


def test_hf_cache_keys_on_the_model_files_and_decoding_settings(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    model = tmp_path / "models" / "en-es"
    save_marian(model, seed=0, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0})
    batch = table(row("g1", "en", "the cat is on the table .", "hello world ?"))
    cache = tmp_path / "t.sqlite"

    def sent(**settings: Any) -> int:
        return hf_cached_run(batch, cache, model, **settings)

    assert sent() == 2
    assert sent() == 0
    assert sent(batch_size=1, device="cpu") == 0  # speed, not output
    assert sent(num_beams=2) == 2
    assert sent(max_new_tokens=9) == 2

    def edit_json(name: str, **fields: Any) -> None:
        path = model / name
        path.write_text(json.dumps(json.loads(path.read_text()) | fields))

    edit_json("config.json", dropout=0.2)
    assert sent() == 2
    edit_json("tokenizer_config.json", model_max_length=64)
    assert sent() == 2
    edit_json("generation_config.json", length_penalty=0.9)
    assert sent() == 2
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    # Other weights of the same shapes (ending at once, so their empty outputs are cached too).
    save_marian(model, seed=1, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0, "</s>": 2.0})
    assert weights.stat().st_size == size
    assert sent() == 2
    assert sent() == 0

    # Notes and download caches do not count, nor does where the folder lives.
    (model / "README.md").write_text("A tiny Marian model.")
    (model / ".cache").mkdir()
    (model / ".cache" / "download.lock").write_text("")
    assert sent() == 0
    moved = tmp_path / "elsewhere" / "en-es"
    moved.parent.mkdir()
    model.rename(moved)
    assert hf_cached_run(batch, cache, f"{tmp_path}/elsewhere/{{src}}-{{tgt}}") == 0


def test_model_fingerprint_samples_large_weight_files(tmp_path: Path) -> None:
    import numpy as np

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"d_model": 16}')
    weights = folder / "model.safetensors"
    data = np.random.default_rng(0).bytes(3 << 20)
    weights.write_bytes(data)
    before = model_fingerprint(folder)
    assert model_fingerprint(folder) == before

    weights.write_bytes(np.random.default_rng(1).bytes(3 << 20))  # same size, other weights
    assert model_fingerprint(folder) != before
    weights.write_bytes(data)
    assert model_fingerprint(folder) == before
    weights.rename(folder / "pytorch_model.bin")
    assert model_fingerprint(folder) != before
    (folder / "pytorch_model.bin").rename(weights)
    weights.write_bytes(data + b"\0")
    assert model_fingerprint(folder) != before


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NLLB checkpoint: the real NLLB tokenizer class over a character vocabulary, an M2M100 model."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration
    from transformers.models.nllb.tokenization_nllb import NllbTokenizer

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("nllb")
    vocab = {
        w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz▁⟦⟧01"])
    }
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], extra_special_tokens=["eng_Latn", "spa_Latn"])
    config = M2M100Config(
        vocab_size=len(tokenizer),
        **TINY_DIMS,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_nllb_translates_with_language_codes(nllb_dir: Path) -> None:
    batch = table(row("g1", "en", "hello world", "the cat ⟦0⟧"))
    stage = hf_stage(str(nllb_dir), ["es"], lang_codes={"en": "eng_Latn", "es": "spa_Latn"})
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 1})


def test_hf_cache_keys_on_the_language_codes_the_pair_uses(nllb_dir: Path, tmp_path: Path) -> None:
    batch = table(row("g1", "en", "hello world", "the cat ⟦0⟧"))
    cache = tmp_path / "t.sqlite"
    codes = {"en": "eng_Latn", "es": "spa_Latn"}

    def sent(lang_codes: dict[str, str]) -> int:
        return hf_cached_run(batch, cache, nllb_dir, lang_codes=lang_codes, max_new_tokens=64)

    assert sent(codes) == 2
    assert sent(codes | {"de": "deu_Latn"}) == 0  # a code this pair does not use
    assert sent(codes | {"en": "spa_Latn"}) == 2
    assert sent(codes) == 0


@pytest.mark.parametrize(
    ("lang_codes", "problem"),
    [
        ({}, "multilingual m2m_100 model: set translate.hf.lang_codes"),
        ({"en": "eng_Latn"}, "lang_codes has no entry for 'es'"),
        ({"en": "eng_Latn", "es": "xyz_Latn"}, "'xyz_Latn' .* is not a token"),
    ],
)
def test_hf_nllb_language_code_mistakes_fail_at_setup(
    nllb_dir: Path, lang_codes: dict[str, str], problem: str
) -> None:
    with pytest.raises(TranslatorConfigError, match=problem):
        hf_stage(str(nllb_dir), ["es"], lang_codes=lang_codes).setup()
