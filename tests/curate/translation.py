"""Shared by the tests of the translate stage and of the translation backends: checks on a stage's result
and the real Apertium backend, counted."""

from __future__ import annotations

import shutil
from typing import Any

import pyarrow as pa
import pytest

from curate.config import ApertiumTranslatorConfig
from curate.stages.base import StageResult
from curate.translators import ApertiumTranslator
from schemas import validate

REASONS = {"translator_error", "mask_lost", "empty_output"}


def assert_accounted(batch: pa.Table, result: StageResult) -> None:
    """Conservation, the contract's schemas, and kept rows sorted by (group_id, lang)."""
    assert batch.num_rows + sum(result.created.values()) == result.kept.num_rows + result.rejected.num_rows
    validate(result.kept, "parallel")
    validate(result.rejected, "reject")
    keys = list(
        zip(result.kept.column("group_id").to_pylist(), result.kept.column("lang").to_pylist(), strict=True)
    )
    assert keys == sorted(keys)
    assert set(result.rejected.column("reason").to_pylist()) <= REASONS
    assert set(result.rejected.column("stage").to_pylist()) <= {"translate"}


def contents(result: StageResult, group: str, lang: str, field: str = "messages") -> list[str]:
    rows = [r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == (group, lang)]
    assert len(rows) == 1, f"no kept row ({group}, {lang})"
    return [m["content"] for m in rows[0][field]]


def rejects(result: StageResult) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["group_id"], r["lang"]): r for r in result.rejected.to_pylist()}


def _apertium_modes() -> frozenset[str]:
    if shutil.which("apertium") is None:
        return frozenset()
    return ApertiumTranslator(ApertiumTranslatorConfig()).installed_modes


needs_apertium = pytest.mark.skipif(
    not {"eng-spa", "eng-cat"} <= _apertium_modes(),
    reason="needs Debian's Apertium: apt-get install apertium apertium-eng-spa apertium-eng-cat",
)


class CountingApertium(ApertiumTranslator):
    """The real Apertium backend, counting translate() calls and apertium processes."""

    def __init__(self, config: ApertiumTranslatorConfig | None = None) -> None:
        super().__init__(config or ApertiumTranslatorConfig())
        self.calls: list[list[str]] = []
        self.processes = 0

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        self.calls.append(list(texts))
        return super().translate(texts, src=src, tgt=tgt)

    def _run(self, mode: str, text: str) -> str:
        self.processes += 1
        return super()._run(mode, text)
