"""Helpers shared by the end-to-end build tests: the demo input, the build command line, its outputs and
its dataset card."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from schemas.hub_card import HUB_LICENSES
from tests import ROOT

DEMO = ROOT / "examples" / "demo"
BAD_LINES = 14  # the demo source ends with its deliberately bad lines


def demo_input(folder: Path, good: int) -> Path:
    """The first ``good`` demo rows plus every deliberately bad line, to keep a run short, and one repeat of
    the first row under another id (a ``dedup.exact`` reject)."""
    lines = (DEMO / "source.jsonl").read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    repeat = json.dumps({**first, "id": f"{first['id']}-again"}).encode() + b"\n"
    path = folder / "source.jsonl"
    path.write_bytes(b"".join([*lines[:good], repeat, *lines[-BAD_LINES:]]))
    return path


def build_args(out: Path, source: Path, *extra: str, chunk_size: int) -> list[str]:
    """``curate build`` of the demo config on ``source``, as CLI arguments."""
    return [
        "build",
        str(ROOT / "examples" / "demo.yaml"),
        "--input",
        str(source),
        "--out",
        str(out),
        "--set",
        f"write.chunk_size={chunk_size}",
        "--no-progress",
        *extra,
    ]


def outputs(out: Path) -> dict[str, bytes]:
    """Every file a build delivers: shards, rejects, the manifest and the dataset card."""
    paths = [
        *out.glob("shards/*.arrow"),
        *out.glob("rejects/*.arrow"),
        out / "manifest.json",
        out / "README.md",
    ]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(paths)}


def hub_vocabulary(name: str) -> set[str]:
    """One of the Hub's vocabularies (``languages.json``, ``size_categories.json``...), from ``datasets``."""
    return set(json.loads(resources.files("datasets.utils.resources").joinpath(name).read_text()))


def validate_card(card: str) -> DatasetCard:
    """A dataset card parsed by ``huggingface_hub``, its metadata checked against the Hub's vocabularies and
    its configs read as ``load_dataset`` reads them. (The Hub's own validation is a request to the Hub.)"""
    parsed = DatasetCard(card)
    data = parsed.data
    assert set(data.language) <= hub_vocabulary("languages.json")
    assert set(data.size_categories) <= hub_vocabulary("size_categories.json")
    assert set(data.multilinguality) <= hub_vocabulary("multilingualities.json")
    assert data.task_categories == ["text-generation"]
    assert data.license in HUB_LICENSES
    assert (data.license == "other") == ("license_name" in data.to_dict())
    assert MetadataConfigs.from_dataset_card_data(data).get_default_config_name() == "default"
    return parsed
