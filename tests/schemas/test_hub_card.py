"""``schemas.hub_card``: card metadata in the Hub's vocabulary, written and read back."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from schemas import DataError
from schemas.hub_card import card_text, hub_languages, license_fields, read_card


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        (None, {"license": "unknown"}),
        ("Apache-2.0", {"license": "apache-2.0"}),
        ("llama3.1", {"license": "llama3.1"}),
        ("acme-1.0", {"license": "other", "license_name": "acme-1.0"}),
    ],
)
def test_license_fields(name: str | None, fields: dict[str, str]) -> None:
    assert license_fields(name) == fields


def test_hub_languages_drop_scripts_and_repeats() -> None:
    assert hub_languages(["en", "zh_Hans", "zh_Hant", "sr_Latn", "sw"]) == ["en", "zh", "sr", "sw"]


def test_a_card_reads_back_as_written_and_as_huggingface_hub_reads_it() -> None:
    metadata = {"language": ["en", "ca"], "tags": ["polyalign"], "note": "a → b: 'quoted'"}
    text = card_text(metadata, "# Title\n\nBody.\n")
    assert read_card(text, where="README.md") == (metadata, "# Title\n\nBody.\n")
    parsed = ModelCard(text)
    assert parsed.data.to_dict() == metadata
    assert parsed.text.strip() == "# Title\n\nBody."


def test_a_card_without_metadata_is_all_body() -> None:
    assert read_card("# Title\n", where="README.md") == ({}, "# Title\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nlanguage: [en\n---\nbody", "is not YAML"),
        ("---\n- en\n---\nbody", "is a list, not a mapping"),
        ("---\nlanguage: en\nbody", "no closing '---' line"),
    ],
)
def test_a_broken_card_is_a_data_error_naming_the_file(text: str, problem: str) -> None:
    with pytest.raises(DataError, match=f"^x/README.md: .*{problem}"):
        read_card(text, where="x/README.md")
