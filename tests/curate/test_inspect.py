"""``curate inspect`` through the CLI on a real build of the shipped pre-translated demo (planted bad rows)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from curate.cli import app
from schemas import Manifest
from tests import ROOT

pytestmark = pytest.mark.slow

# The rule above each shown row: "──── pg-007 [de] lid.wrong_lang ────".
TITLE = re.compile(r"─ (\S+) \[(\w+)\] (\w+\.\w+) ─")


@pytest.fixture(scope="module")
def parallel_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "parallel"
    result = CliRunner().invoke(
        app, ["build", str(ROOT / "examples" / "demo_pretranslated.yaml"), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return out


def rejects_of(out: Path) -> list[dict[str, Any]]:
    return [
        row
        for info in Manifest.load(out).rejects
        for row in pa.ipc.open_file(str(out / info.file)).read_all().to_pylist()
    ]


def inspect(out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["inspect", str(out), *args])
    return result.exit_code, result.output


def shown(output: str) -> list[tuple[str, str, str]]:
    """(group, lang, stage.reason) of each reject shown, in order."""
    return [m.groups() for m in map(TITLE.search, output.splitlines()) if m]


def flat(output: str) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(output.split())


def test_rejects_shows_every_reject_with_its_reason_detail_and_messages(parallel_build: Path) -> None:
    rejects = rejects_of(parallel_build)
    code, output = inspect(parallel_build, "--rejects", "--rows", "10")
    assert code == 0, output
    expected = [(r["group_id"], r["lang"] or "und", f"{r['stage']}.{r['reason']}") for r in rejects]
    assert shown(output) == expected
    text = flat(output)
    wrong_lang = next(r for r in rejects if r["reason"] == "wrong_lang")
    assert f"detail: {wrong_lang['detail']}" in text
    assert "user: In una classe di 60 studenti, il 60% va a scuola a piedi." in text
    # A line that never became a row (an unknown language code) shows the start of its raw text.
    unknown = next(r for r in rejects if r["reason"] == "unknown_lang")
    assert unknown["messages"] is None
    assert f"raw: {unknown['raw'][:40]}" in text
    assert "pretranslated" not in text  # no kept row is shown


def test_rejects_filter_by_reason_and_language(parallel_build: Path) -> None:
    def reasons(*args: str) -> list[tuple[str, str, str]]:
        code, output = inspect(parallel_build, "--rejects", *args)
        assert code == 0, output
        return shown(output)

    assert reasons("--reason", "wrong_lang") == [("pg-007", "de", "lid.wrong_lang")]
    assert reasons("--reason", "lid.wrong_lang") == [("pg-007", "de", "lid.wrong_lang")]
    both = {("pg-007", "de", "lid.wrong_lang"), ("pg-010", "fr", "structure.code_changed")}
    assert set(reasons("--reason", "wrong_lang", "--reason", "structure.code_changed")) == both
    assert set(reasons("--reason", "wrong_lang,code_changed")) == both
    missing = [("pg-027", lang, "read.missing_anchor") for lang in ("es", "de", "fr")]
    assert reasons("--reason", "missing_anchor") == missing
    assert reasons("--reason", "missing_anchor", "--lang", "fr", "--lang", "DE") == [missing[1], missing[2]]
    assert reasons("--reason", "missing_anchor", "--lang", "de,fr") == [missing[1], missing[2]]
    assert reasons("--lang", "und") == [("pg-017", "und", "read.unknown_lang")]
    de = reasons("--lang", "de", "--rows", "2")
    assert len(de) == 2 and {lang for _, lang, _ in de} == {"de"}

    code, output = inspect(parallel_build, "--rejects", "--reason", "wrong_lang", "--lang", "es")
    assert code == 0 and shown(output) == [] and "no rejected rows match" in output


def test_rejects_name_what_exists_for_unknown_reasons_and_languages(parallel_build: Path) -> None:
    manifest = Manifest.load(parallel_build)
    reasons = sorted({r for c in manifest.counts.values() for r in c.rejected})
    code, output = inspect(parallel_build, "--rejects", "--reason", "wrong_lang,nope")
    assert code == 2
    assert output == (
        f"error: --reason 'nope' matches no reject of this build; its reasons are {', '.join(reasons)}\n"
    )
    code, output = inspect(parallel_build, "--rejects", "--lang", "sw")
    assert code == 2
    assert output == "error: --lang 'sw' is not a language of this build; it has en, es, de, fr, it, und\n"
    code, output = inspect(parallel_build, "--reason", "wrong_lang")
    assert (code, output) == (2, "error: --reason picks rejected rows: add --rejects\n")


def test_kept_rows_by_language(parallel_build: Path) -> None:
    code, output = inspect(parallel_build, "--lang", "de", "--rows", "3")
    assert code == 0, output
    titles = [line for line in output.splitlines() if "─ pg-" in line]
    assert len(titles) == 3 and all(" [de] pretranslated " in t for t in titles)
