"""Damaged corpora and checkpoints through the real ``align-train`` CLI: one line naming the file and what
to do (exit 2), before anything is trained on; and a bug stays a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from align_train.cli import app
from align_train.training.train import train
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)


def run(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(config)])
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("align-train: error: ")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]


def config_file(tmp_path: Path, shards: Path, model: Path, **settings: object) -> Path:
    cfg = train_config(shards, tmp_path / "run", model, **settings)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return path


@pytest.fixture
def corpus(shard_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "corpus"
    shutil.copytree(shard_dir, out)
    return out


def test_a_shard_with_flipped_bytes_stops_the_run_before_training(
    corpus: Path, model_dir: Path, tmp_path: Path
) -> None:
    shard = corpus / "shards" / "part-000001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, output = run(config_file(tmp_path, corpus, model_dir))
    assert code == 2
    line = one_error_line(output)
    assert f"{shard} does not match" in line and "rebuild the corpus" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_manifest_with_edited_counts_stops_the_run_before_training(
    corpus: Path, model_dir: Path, tmp_path: Path
) -> None:
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["groups"] -= 1
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    code, output = run(config_file(tmp_path, corpus, model_dir))
    assert code == 2
    assert "part-000000.arrow holds 7 groups" in one_error_line(output)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("damage", ["trainer_state.pt", "model.safetensors"])
def test_a_damaged_checkpoint_names_itself_and_the_one_to_resume_from(
    shard_dir: Path, model_dir: Path, tmp_path: Path, damage: str
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=2, save_every=1))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step-000002"
    target = checkpoints / "step-000002" / damage
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])  # a save cut short

    config = config_file(tmp_path, shard_dir, model_dir, max_steps=3, save_every=1)
    code, output = run(config)
    assert code == 2
    line = one_error_line(output)
    assert f"checkpoint {checkpoints / 'step-000002'} is damaged" in line
    assert f"echo step-000001 > {checkpoints / 'latest'}" in line

    (checkpoints / "latest").write_text("step-000001")  # the advice, followed
    code, output = run(config)
    assert code == 0, output
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_a_bug_in_the_loop_is_a_traceback_not_a_user_error(
    shard_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        msg = "an internal bug that happens to be a ValueError"
        raise ValueError(msg)

    monkeypatch.setattr("align_train.training.objectives.sft_loss", broken)  # what the SFT objective calls
    result = CliRunner().invoke(app, [str(config_file(tmp_path, shard_dir, model_dir, max_steps=1))])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert not any(line.startswith("align-train: error: ") for line in result.output.splitlines())
