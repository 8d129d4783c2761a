"""What the Hugging Face Hub reads in a ``README.md``: YAML metadata between ``---`` lines, then markdown.

Shared by the dataset card of a build (``curate.card``) and the model cards of ``align-train``
(``align_train.model_card``), so both write the Hub's vocabulary the same way.
"""

from __future__ import annotations

from typing import Any

import yaml

from schemas.errors import DataError
from schemas.langs import base_lang

CARD_FILE = "README.md"

# The Hub's licence identifiers (https://huggingface.co/docs/hub/repositories-licenses). Another name is
# written as ``license: other`` with ``license_name``, the Hub's way to state a licence it does not list.
# fmt: off
HUB_LICENSES = frozenset((
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd",
    "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
    "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0",
    "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl",
    "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql",
    "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
))
# fmt: on


def license_fields(name: str | None) -> dict[str, str]:
    """The metadata that states licence ``name``: ``license`` for one the Hub lists, ``license: other`` with
    ``license_name`` for another, ``license: unknown`` for None."""
    if name is None:
        return {"license": "unknown"}
    name = name.strip().lower()
    if name in HUB_LICENSES:
        return {"license": name}
    return {"license": "other", "license_name": name}


def hub_languages(codes: list[str]) -> list[str]:
    """``codes`` as the Hub's ``language`` field takes them: ISO 639 codes, scripts dropped, each once."""
    return list(dict.fromkeys(base_lang(code) for code in codes))


def card_text(metadata: dict[str, Any], body: str) -> str:
    """A card: ``metadata`` as YAML between ``---`` lines (in its own key order), then ``body``."""
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1 << 16)
    return f"---\n{header}---\n\n{body}"


def read_card(text: str, *, where: str) -> tuple[dict[str, Any], str]:
    """The metadata and the body of card ``text`` (read from ``where``); without metadata, ``{}``."""
    if not text.startswith("---\n"):
        return {}, text
    header, sep, body = text[4:].partition("\n---\n")
    if not sep:
        msg = f"{where}: the card's metadata has no closing '---' line"
        raise DataError(msg)
    try:
        metadata = yaml.safe_load(header) or {}
    except yaml.YAMLError as e:
        msg = f"{where}: the card's metadata is not YAML ({' '.join(str(e).split())[:200]})"
        raise DataError(msg) from e
    if not isinstance(metadata, dict):
        msg = f"{where}: the card's metadata is a {type(metadata).__name__}, not a mapping"
        raise DataError(msg)
    return metadata, body.removeprefix("\n")
