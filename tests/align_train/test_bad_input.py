"""Damaged corpora and checkpoints through the real ``align-train`` CLI: one line naming the file and what
to do (exit 2), before anything is trained on; and a bug stays a traceback."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from align_train.cli import app
from align_train.model import DEMO_TOKENIZER_FILE, DEMO_TOKENIZER_PACKAGE
from align_train.train import train
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

    monkeypatch.setattr("align_train.objectives.sft_loss", broken)  # what the SFT objective calls
    result = CliRunner().invoke(app, [str(config_file(tmp_path, shard_dir, model_dir, max_steps=1))])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)
    assert not any(line.startswith("align-train: error: ") for line in result.output.splitlines())


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("empty folder", "holds no config.json"),
        ("no tokenizer", "holds no tokenizer (none of tokenizer.json, "),
        ("no weights", "holds no .safetensors weights"),
        ("weights cut short", "model.safetensors is damaged (its tensors need "),
    ],
)
def test_a_model_folder_that_cannot_load_is_one_line(
    shard_dir: Path, model_dir: Path, tmp_path: Path, damage: str, problem: str
) -> None:
    model = tmp_path / "model"
    if damage == "empty folder":
        model.mkdir()
    else:
        shutil.copytree(model_dir, model)
    if damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model / name).unlink()
    elif damage == "no weights":
        (model / "model.safetensors").unlink()
    elif damage == "weights cut short":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = [
        "--shards",
        str(shard_dir),
        "--out",
        str(tmp_path / "run"),
        "--model",
        str(model),
        "--max-steps",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert str(model) in line and problem in line


def _shipped_gguf() -> Path:
    spec = importlib.util.find_spec(DEMO_TOKENIZER_PACKAGE)
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / DEMO_TOKENIZER_FILE


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty: not a GGUF model"),
        (b"version: 1\nweights: none\n", "does not start with b'GGUF'"),
        ("header cut short", "is damaged or cut short"),
        ("tensors cut short", "is damaged or cut short"),
    ],
)
def test_from_gguf_names_a_file_that_is_not_a_whole_gguf_model(
    tmp_path: Path, content: bytes | str, problem: str
) -> None:
    path = tmp_path / "model.gguf"
    if content == "header cut short":
        with _shipped_gguf().open("rb") as f:
            path.write_bytes(f.read(100))
    elif content == "tensors cut short":
        with _shipped_gguf().open("rb") as f:
            path.write_bytes(f.read(5_000_000))
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    result = CliRunner().invoke(app, ["from-gguf", "--out", str(tmp_path / "out"), "--gguf", str(path)])
    assert result.exit_code == 2, result.output
    assert f"GGUF file {path} {problem}" in one_error_line(result.output)
    assert not (tmp_path / "out").exists()
