"""Bad input and misuse through the real ``curate`` CLI: a reject with a reason or one line on stderr (exit
2), never a traceback, never a silent loss; and a bug stays a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.stages.structure import Structure
from curate.writer import exclusive
from schemas import Manifest
from tests import ROOT
from tests.curate.builds import demo_input, outputs
from tests.disk import PAGE, small_disk, used_bytes

PRETRANSLATED = ROOT / "examples" / "demo_pretranslated.yaml"
DEMO = ROOT / "examples" / "demo.yaml"
PARALLEL = ROOT / "examples" / "demo" / "parallel.jsonl"


def parallel_lines(groups: int) -> list[str]:
    """The first ``groups`` groups of the pre-translated demo (every language of each)."""
    lines = PARALLEL.read_text(encoding="utf-8").splitlines()
    ids = list(dict.fromkeys(json.loads(line)["id"] for line in lines))[:groups]
    return [line for line in lines if json.loads(line)["id"] in ids]


def build(out: Path, source: Path, *extra: str, config: Path = PRETRANSLATED) -> tuple[int, str]:
    args = ["build", str(config), "--input", str(source), "--out", str(out), "--no-progress", *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]


def rejects_by_reason(out: Path) -> dict[str, list[dict]]:
    manifest = Manifest.load(out)
    found: dict[str, list[dict]] = {}
    for info in manifest.rejects:
        for row in pa.ipc.open_file(str(out / info.file)).read_all().to_pylist():
            found.setdefault(f"{row['stage']}.{row['reason']}", []).append(row)
    return found


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "parallel.jsonl"
    path.write_text("\n".join(parallel_lines(3)) + "\n", encoding="utf-8")
    return path


def test_a_deeply_nested_line_is_a_bad_json_reject_and_the_build_goes_on(small: Path, tmp_path: Path) -> None:
    source = tmp_path / "nested.jsonl"
    deep = '{"id": "deep", "lang": "en", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    source.write_text(small.read_text(encoding="utf-8") + deep + "\n", encoding="utf-8")
    code, output = build(tmp_path / "out", source)
    assert code == 0, output
    [reject] = rejects_by_reason(tmp_path / "out")["read.bad_json"]
    assert reject["detail"] == f"{source}:13: nested too deeply to parse"
    assert Manifest.load(tmp_path / "out").counts["en"].kept == 3


def test_too_long_records_and_messages_are_rejected_quickly(small: Path, tmp_path: Path) -> None:
    source = tmp_path / "long.jsonl"
    huge = {"id": "huge", "lang": "en", "messages": [{"role": "user", "content": "word " * 4_000_000}]}
    long_message = {
        "id": "long",
        "lang": "en",
        "messages": [
            {"role": "user", "content": "Why? " * 30_000},
            {"role": "assistant", "content": "Because."},
        ],
    }
    lines = [small.read_text(encoding="utf-8").rstrip("\n"), json.dumps(huge), json.dumps(long_message)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.perf_counter()
    code, output = build(tmp_path / "out", source, "--set", "equivalence.enabled=false")
    assert code == 0, output
    assert time.perf_counter() - started < 60  # a 20 MB line once stalled a build for minutes
    found = {r["group_id"] or "": r for r in rejects_by_reason(tmp_path / "out")["read.too_long"]}
    assert "over input.max_record_bytes=1,048,576" in found[""]["detail"]
    assert len(found[""]["raw"]) <= 4096 + 64
    assert (
        "messages[0] is 150,000 characters, over input.max_message_chars=100,000" in found["long"]["detail"]
    )


def test_a_corrupt_parquet_body_is_one_line_before_any_work(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in parallel_lines(3)]
    for row in rows:
        row["messages"] = json.dumps(row["messages"])  # a flat schema: one string column per field
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none")
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(4, len(data) - footer, 7):  # scramble the pages, keep the footer (schema) intact
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).names  # the footer still reads
    code, output = build(tmp_path / "out", path)
    assert code == 2
    line = one_error_line(output)
    assert str(path) in line and "cannot be read, the file is corrupt" in line
    assert not (tmp_path / "out" / "shards").exists() or not list((tmp_path / "out" / "shards").iterdir())


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_input_says_it_is_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    code, output = build(tmp_path / "out", path)
    assert code == 2
    assert f"input {path} is empty" in one_error_line(output)


def test_an_empty_parquet_file_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    code, output = build(tmp_path / "out", path)
    assert code == 2 and f"input {path} is empty" in one_error_line(output)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("langs: [de, fr\nanchor_lang: en\n", "is not valid YAML"),
        ("out: !!python/object/apply:os.system ['echo pwned']\n", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping at the top level"),
    ],
)
def test_a_broken_config_file_is_one_line(tmp_path: Path, small: Path, text: str, problem: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    code, output = build(tmp_path / "out", small, config=config)
    assert code == 2
    line = one_error_line(output)
    assert problem in line and str(config) in line
    assert not (tmp_path / "out").exists()


def test_a_broken_set_value_is_one_line(tmp_path: Path, small: Path) -> None:
    code, output = build(tmp_path / "out", small, "--set", "langs=[de,")
    assert code == 2
    assert "--set 'langs=[de,': the value is not valid YAML" in one_error_line(output)


def test_out_pointing_at_a_file_is_one_line(tmp_path: Path, small: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("not a folder", encoding="utf-8")
    code, output = build(out, small)
    assert code == 2
    assert f"--out {out} is a file" in one_error_line(output)


def test_a_second_build_into_the_same_folder_stops_naming_the_holder(tmp_path: Path, small: Path) -> None:
    out = tmp_path / "out"
    with exclusive(out):
        code, output = build(out, small)
    assert code == 2
    line = one_error_line(output)
    assert "is being written by another build (pid " in line
    code, output = build(out, small)  # the lock went with its holder
    assert code == 0, output


def test_toggling_the_report_between_a_killed_run_and_its_rerun_keeps_the_manifest(
    tmp_path: Path, small: Path
) -> None:
    out = tmp_path / "out"
    assert build(out, small, "--set", "report=false")[0] == 0
    first = outputs(out)
    (out / "manifest.json").unlink()  # as if killed after its last chunk
    assert build(out, small, "--set", "report=true", "--set", "min_keep_rate=0.9")[0] == 0
    assert outputs(out) == first
    assert (out / "report" / "report.md").is_file()


def test_a_language_below_the_keep_rate_floor_is_flagged(tmp_path: Path, small: Path) -> None:
    out = tmp_path / "out"
    code, output = build(out, small, "--set", "min_keep_rate=1.0", "--set", "equivalence.threshold=0.99")
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert warnings and all("below 100%" in line for line in warnings)
    assert any(line.startswith("warning: de kept ") for line in warnings)
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "**Warning: keep rate below the floor**" in report and "- de kept " in report


def test_an_anchor_in_another_language_takes_its_group_to_the_rejects(tmp_path: Path, small: Path) -> None:
    german = {
        "id": "not-english",
        "lang": "en",
        "messages": [
            {
                "role": "user",
                "content": "Wie viele Einwohner hat Berlin ungefähr, und seit wann ist es die Hauptstadt?",
            },
            {
                "role": "assistant",
                "content": "Berlin hat etwa 3,7 Millionen Einwohner und ist seit 1990 die Hauptstadt.",
            },
        ],
    }
    spanish = {
        **german,
        "lang": "es",
        "messages": [{**m, "content": m["content"] + " (es)"} for m in german["messages"]],
    }
    source = tmp_path / "input.jsonl"
    text = small.read_text(encoding="utf-8") + json.dumps(german) + "\n" + json.dumps(spanish) + "\n"
    source.write_text(text, encoding="utf-8")
    code, output = build(tmp_path / "out", source)
    assert code == 0, output
    found = rejects_by_reason(tmp_path / "out")
    assert [r["group_id"] for r in found["anchor_lid.wrong_lang"]] == ["not-english"]
    assert found["anchor_lid.wrong_lang"][0]["lid_lang"] == "de"
    assert [(r["group_id"], r["lang"]) for r in found["anchor_lid.anchor_rejected"]] == [
        ("not-english", "es")
    ]


def test_a_bug_in_a_stage_is_a_traceback_not_a_user_error(
    tmp_path: Path, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Structure, batch: pa.Table) -> None:
        msg = "an internal bug that happens to be a ValueError"
        raise ValueError(msg)

    monkeypatch.setattr(Structure, "judge", broken)
    args = [
        "build",
        str(PRETRANSLATED),
        "--input",
        str(small),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert not any(line.startswith("error: ") for line in result.output.splitlines())


def test_a_number_that_is_not_finite_is_refused_in_any_setting(tmp_path: Path, small: Path) -> None:
    for setting in (
        "equivalence.margin=.nan",  # once a build that inspect could not read
        "translate.openai.temperature=.inf",
        "executor.ray.stages.translate.num_cpus=.inf",
    ):
        code, output = build(tmp_path / "out", small, "--set", setting)
        assert code == 2
        key, _, value = setting.partition("=")
        assert f"{key}: must be a finite number (got {value[1:]})" in one_error_line(output)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, small: Path) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    code, output = build(out, small, "--set", "report=false")
    assert code == 0, output
    return out


def resign(out: Path, file: str, table: pa.Table) -> None:
    """Write ``table`` as ``out/file`` and record its new sha256 in the manifest, as a hand edit would."""
    path = out / file
    with pa.ipc.new_file(path, table.schema) as writer:
        writer.write_table(table)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for info in manifest["shards"] + manifest["rejects"]:
        if info["file"] == file:
            info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _messages_nulled(table: pa.Table) -> pa.Table:
    messages = pa.array([None] * table.num_rows, table.schema.field("messages").type)
    field = table.schema.field("messages").with_nullable(True)
    return table.set_column(table.schema.get_field_index("messages"), field, messages)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda t: t.drop_columns(["lid_prob"]), "column 'lid_prob': missing (expected float)"),
        (lambda t: t.drop_columns(["messages"]), "column 'messages': missing"),
        (_messages_nulled, "column 'messages', row 0: null in a required field"),
    ],
)
@pytest.mark.parametrize("command", ["inspect", "report"])
def test_inspect_and_report_name_a_signed_shard_that_breaks_the_schema(
    built: Path, tmp_path: Path, damage: Callable[[pa.Table], pa.Table], problem: str, command: str
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    first = Manifest.load(out).shards[0]
    resign(out, first.file, damage(pa.ipc.open_file(str(out / first.file)).read_all()))
    result = CliRunner().invoke(app, [command, str(out)])
    if command == "report" and damage is _messages_nulled:
        assert result.exit_code == 0, result.output  # the report reads only the score columns
        return
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert f"{out / first.file} does not follow the parallel schema: {problem}" in line


def test_inspect_names_a_shard_that_is_not_arrow(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    first = Manifest.load(out).rejects[0]
    (out / first.file).write_bytes(b"not an arrow file")
    for args in (["inspect", str(out), "--rejects"], ["report", str(out)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert f"{out / first.file} is not a readable Arrow IPC file" in one_error_line(result.output)


@pytest.mark.parametrize("edit", ["listed twice", "kept edited"])
def test_inspect_refuses_a_manifest_whose_files_or_counts_do_not_add_up(
    built: Path, tmp_path: Path, edit: str
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    if edit == "listed twice":
        manifest["shards"].append(manifest["shards"][0])
    else:
        manifest["counts"]["de"]["kept"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    for command in ("inspect", "report"):
        result = CliRunner().invoke(app, [command, str(out)])
        assert result.exit_code == 2
        assert "manifest.json is not a valid manifest: " in one_error_line(result.output)


def test_a_disk_filling_during_a_build_is_one_line_and_the_rerun_is_byte_identical(
    tmp_path: Path, small: Path
) -> None:
    args = ("--set", "write.chunk_size=1", "--set", "report=false")
    reference = tmp_path / "reference"
    assert build(reference, small, *args)[0] == 0
    with small_disk(tmp_path / "disk", used_bytes(reference) // 2) as resize:
        out = tmp_path / "disk" / "out"
        code, output = build(out, small, *args)
        assert code == 2
        line = one_error_line(output)
        assert (
            line.startswith(f"error: the disk is full: could not write {out}/") and "free some space" in line
        )
        assert not list(out.rglob(".*.tmp"))
        resize(4 * used_bytes(reference))
        code, output = build(out, small, *args)
        assert code == 0, output
        assert outputs(out) == outputs(reference)


def test_a_disk_filling_while_the_report_is_drawn_is_one_line(built: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", used_bytes(built) + 2 * PAGE) as resize:
        out = tmp_path / "disk" / "out"
        shutil.copytree(built, out)
        result = CliRunner().invoke(app, ["report", str(out)])
        assert result.exit_code == 2
        assert f"error: the disk is full: could not write {out / 'report'}" in one_error_line(result.output)
        resize(used_bytes(built) + 256 * PAGE)
        result = CliRunner().invoke(app, ["report", str(out)])
        assert result.exit_code == 0, result.output


def test_a_disk_filling_under_the_translation_cache_is_one_line_and_the_rerun_is_byte_identical(
    tmp_path: Path,
) -> None:
    source = demo_input(tmp_path, good=4)
    cache = tmp_path / "disk" / "translations.sqlite"  # the manifest records its path: the same for both
    args = ("--set", "write.chunk_size=4", "--set", "report=false", "--set", f"translate.cache={cache}")
    reference = tmp_path / "reference"
    assert build(reference, source, *args, config=DEMO)[0] == 0
    cache.unlink()
    with small_disk(tmp_path / "disk", 2 * PAGE) as resize:
        code, output = build(tmp_path / "out", source, *args, config=DEMO)
        assert code == 2
        assert f"error: the disk is full: could not write {cache}" in one_error_line(output)
        resize(256 * PAGE)
        code, output = build(tmp_path / "out", source, *args, config=DEMO)
        assert code == 0, output
    assert outputs(tmp_path / "out") == outputs(reference)


@pytest.mark.parametrize("kind", ["folder", "not SQLite"])
def test_a_translation_cache_that_is_a_folder_or_not_sqlite_is_one_line(tmp_path: Path, kind: str) -> None:
    cache = tmp_path / "cache"
    if kind == "folder":
        cache.mkdir()
    else:
        cache.write_text("translations, one per line\n", encoding="utf-8")
    source = demo_input(tmp_path, good=2)
    code, output = build(tmp_path / "out", source, "--set", f"translate.cache={cache}", config=DEMO)
    assert code == 2
    line = one_error_line(output)
    assert f"translate.cache {cache} " in line
    assert ("is a folder" if kind == "folder" else "file is not a database") in line
