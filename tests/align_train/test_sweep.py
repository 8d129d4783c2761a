"""``align-train sweep``: grid expansion, a small sweep that trains, evaluates, resumes and tabulates."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.config import SweepConfig
from align_train.eval.report import PREDICTIONS_FILE
from align_train.sweep import expand, run_sweep
from schemas import ConfigError
from tests import ROOT
from tests.align_train.corpus import HELD_OUT

torch.set_num_threads(1)


def sweep_config(shard_dir: Path, model_dir: Path, out: Path, **overrides: Any) -> SweepConfig:
    """Two language sets × {sft, dpo}: the dpo runs fail at start-up, the corpus has no preference rows."""
    settings: dict[str, Any] = {
        "out": out,
        "train": {
            "shards": shard_dir,
            "model": model_dir,
            "groups_per_batch": 2,
            "max_steps": 2,
            "max_length": 96,
            "lr": 3e-3,
            "holdout": 0.3,
            "log_every": 1,
        },
        "lang_sets": ["en", ["en", "de"]],
        "objectives": ["sft", "dpo"],
        "eval": {"max_new_tokens": 4, "batch_size": 8},
    }
    return SweepConfig.model_validate(settings | overrides)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_grid_expands_to_named_runs_with_validated_configs(shard_dir: Path, tmp_path: Path) -> None:
    cfg = sweep_config(shard_dir, None, tmp_path, lang_sets=["en", "en+deu", "en,de,sw"], seeds=[0, 1])
    runs = expand(cfg)
    assert len(runs) == 3 * 2 * 2
    assert runs[0].name == "langs=en__obj=sft__policy=all__seed=0"
    assert runs[-1].name == "langs=en+de+sw__obj=dpo__policy=all__seed=1"
    run = runs[4]  # en+de, sft, seed 0: seeds vary fastest, then policies, objectives, language sets
    assert run.train.out == tmp_path / run.name and run.train.langs == ["de"] and run.train.seed == 0
    assert run.eval.model == run.folder and run.eval.out == run.folder / "eval"
    assert (run.eval.data, run.eval.split, run.eval.holdout) == (shard_dir, "eval", 0.3)
    with pytest.raises(ConfigError, match="lang set de leaves out the anchor en"):
        expand(sweep_config(shard_dir, None, tmp_path, lang_sets=["de"]))
    with pytest.raises(ConfigError, match=r"run langs=en\+fr__obj=sft.*: langs fr not in"):
        expand(sweep_config(shard_dir, None, tmp_path, lang_sets=["en+fr"]))
    with pytest.raises(ValueError, match=r"train\.seed is set per run by the sweep"):
        sweep_config(shard_dir, None, tmp_path, train={"shards": shard_dir, "seed": 3})
    with pytest.raises(ValueError, match="non-empty and distinct"):
        sweep_config(shard_dir, None, tmp_path, lang_sets=["en+de", "en+deu"])
    # A number that is not finite, given as text that a float field reads ("inf"), in a run's settings.
    with pytest.raises(
        ConfigError, match=r"run langs=en__obj=sft.*: lr: must be a finite number \(got inf\)"
    ):
        expand(sweep_config(shard_dir, None, tmp_path, train={"shards": shard_dir, "lr": "inf"}))


@pytest.mark.slow
def test_sweep_runs_resumes_and_reports_failures(shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    cfg = sweep_config(shard_dir, model_dir, tmp_path)
    runs = expand(cfg)
    outcomes = run_sweep(cfg, runs)
    status = {o.run.name: o.status for o in outcomes}
    assert status == {
        "langs=en__obj=sft__policy=all__seed=0": "done",
        "langs=en__obj=dpo__policy=all__seed=0": "failed",
        "langs=en+de__obj=sft__policy=all__seed=0": "done",
        "langs=en+de__obj=dpo__policy=all__seed=0": "failed",
    }
    failed = next(o for o in outcomes if o.status == "failed")
    assert "needs preference rows" in failed.error
    assert "Traceback" in (failed.run.folder / "error.txt").read_text()

    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 2 * 3 + 2  # a row per evaluation language of the done runs, one per failed run
    seen = {(r["langs"], r["eval_lang"]): r["seen"] for r in rows if r["eval_lang"]}
    assert seen == {
        ("en", "en"): "True",
        ("en", "de"): "False",
        ("en", "sw"): "False",
        ("en+de", "en"): "True",
        ("en+de", "de"): "True",
        ("en+de", "sw"): "False",
    }
    for r in rows:
        if r["status"] == "done":
            assert 0 <= float(r["accuracy"]) <= 1 and float(r["loss"]) > 5
            assert r["num_langs"] == str(len(r["langs"].split("+")))
    assert "| langs=en+de__obj=dpo__policy=all__seed=0 | failed |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_vs_langs.png").stat().st_size > 5000

    # Training never saw a group that the evaluation scores.
    for run in runs[::2]:
        trained = {
            g
            for line in (run.folder / "data" / "rank-0.jsonl").read_text().splitlines()
            for g in json.loads(line)["group_ids"]
        }
        scored = {
            json.loads(line)["group_id"]
            for line in (run.eval.out / PREDICTIONS_FILE).read_text().splitlines()
        }
        assert scored == HELD_OUT and trained and not trained & scored

    # A second run skips the finished runs and retries the failed ones.
    done = {run.name: (run.eval.out / "metrics.json").stat().st_mtime_ns for run in runs[::2]}
    again = run_sweep(cfg, runs)
    assert [o.status for o in again] == ["cached", "failed", "cached", "failed"]
    assert {run.name: (run.eval.out / "metrics.json").stat().st_mtime_ns for run in runs[::2]} == done
    cached = [r | {"status": "done"} for r in read_csv(tmp_path / "results.csv")[:3]]
    assert cached == rows[:3]

    # Changed settings under the same out are refused per run rather than mixed in.
    changed = sweep_config(shard_dir, model_dir, tmp_path)
    changed.train["max_steps"] = 3
    outcomes = run_sweep(changed, expand(changed))
    assert outcomes[0].status == "failed" and "max_steps differ" in outcomes[0].error


def test_print_commands_writes_configs_and_runs_nothing(shard_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"train: {{shards: {shard_dir}, holdout: 0.3, max_steps: 2}}\nlang_sets: [en, en+de]\n",
        encoding="utf-8",
    )
    out = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "align_train", "sweep", str(config), "--out", str(out), "--print-commands"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    run = out / "langs=en+de__obj=sft__policy=all__seed=0"
    assert lines[1] == (
        f"torchrun --nproc_per_node 1 -m align_train {run / 'config.yaml'} && align-train eval {run / 'eval.yaml'}"
    )
    assert len(lines) == 2 and not (run / "checkpoints").exists()
    assert "holdout: 0.3" in (run / "config.yaml").read_text()
    assert "split: eval" in (run / "eval.yaml").read_text()


@pytest.mark.slow
def test_a_sweep_reads_benchmarks_side_by_side(
    shard_dir: Path, model_dir: Path, lm_eval_task_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("lm_eval", reason="the eval extra (lm-evaluation-harness) is not installed")
    eval_settings = {"max_new_tokens": 2, "tasks": ["tinymc"], "include_path": [str(lm_eval_task_dir)]}
    cfg = sweep_config(shard_dir, model_dir, tmp_path, objectives=["sft"], eval=eval_settings)
    outcomes = run_sweep(cfg, expand(cfg))
    assert [o.status for o in outcomes] == ["done", "done"]
    rows = read_csv(tmp_path / "results.csv")
    bench = {(r["langs"], r["eval_lang"]): r for r in rows if r["benchmark"] == "tinymc"}
    assert set(bench) == {(langs, lang) for langs in ("en", "en+de") for lang in ("en", "de", "es")}
    assert bench[("en+de", "de")]["seen"] == "True" and bench[("en", "de")]["seen"] == "False"
    assert all(0 <= float(r["accuracy"]) <= 1 and r["loss"] == "" for r in bench.values())
    assert {r["benchmark"] for r in rows} == {"held-out", "tinymc"}
    results = (tmp_path / "results.md").read_text()
    assert "## held-out" in results and "## tinymc" in results
