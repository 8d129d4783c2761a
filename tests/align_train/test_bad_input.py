"""Damaged corpora and checkpoints through the real ``align-train`` CLI: one line naming the file and what
to do (exit 2), before anything is trained on; and a bug stays a traceback."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from align_train.cli import app
from align_train.modeling.model import DEMO_TOKENIZER_FILE, DEMO_TOKENIZER_PACKAGE
from align_train.training.train import train
from tests.align_train.corpus import sft_rows
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


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("groups", "part-000000.arrow holds 7 groups"),
        ("kept", "manifest.json is not a valid manifest: counts of 'de' do not add up"),
        ("listed twice", "manifest.json is not a valid manifest: shards/part-000000.arrow is listed twice"),
    ],
)
def test_a_manifest_with_edited_counts_stops_the_run_before_training(
    corpus: Path, model_dir: Path, tmp_path: Path, edit: str, problem: str
) -> None:
    manifest = json.loads((corpus / "manifest.json").read_text())
    if edit == "groups":
        manifest["shards"][0]["groups"] -= 1
    elif edit == "kept":
        manifest["counts"]["de"]["kept"] += 1
    else:
        manifest["shards"].append(manifest["shards"][0])
    config = config_file(tmp_path, corpus, model_dir)  # validated before the edit
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    code, output = run(config)
    assert code == 2
    assert problem in one_error_line(output)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    ("value", "problem"), [(".inf", "must be a finite number"), (".nan", "greater than 0")]
)
def test_lr_that_is_not_a_finite_number_is_one_line(
    shard_dir: Path, model_dir: Path, tmp_path: Path, value: str, problem: str
) -> None:
    config = config_file(tmp_path, shard_dir, model_dir)
    config.write_text(config.read_text(encoding="utf-8") + f"lr: {value}\n", encoding="utf-8")
    code, output = run(config)
    assert code == 2
    line = one_error_line(output)
    assert line.startswith("align-train: error: lr: ") and problem in line and f"(got {value[1:]})" in line
    assert not (tmp_path / "run").exists()


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


def test_a_loss_that_is_not_finite_stops_the_run_naming_the_step_and_nothing_nan_is_saved(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    code, output = run(config_file(tmp_path, shard_dir, model_dir, lr=1e30, max_steps=4, save_every=1))
    assert code == 2
    line = one_error_line(output)
    found = re.search(r"error: step (\d): the loss is (\S+) and the gradient norm (\S+); the run stops", line)
    assert found and {"nan", "inf", "-inf"} & {found[2], found[3]}, line
    assert "on_nonfinite=skip" in line
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    for checkpoint in checkpoints:  # only the steps before the divergence
        weights = load_file(checkpoint / "model.safetensors")
        assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    assert not (tmp_path / "run" / "checkpoints" / "step-000004").exists()


def _resign(checkpoint: Path) -> None:
    """Write the checkpoint's SHA256SUMS again, as someone editing its files would."""
    lines = [
        f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
        for f in sorted(checkpoint.iterdir())
        if f.is_file() and f.name != "SHA256SUMS"
    ]
    (checkpoint / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("where", ["weights", "optimizer state"])
def test_a_checkpoint_holding_nan_is_refused_at_resume_even_when_signed_again(
    shard_dir: Path, model_dir: Path, tmp_path: Path, where: str
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=2, save_every=1))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000002"
    if where == "weights":
        weights = load_file(checkpoint / "model.safetensors")
        name = next(iter(weights))
        weights[name][0] = float("nan")
        save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    else:
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
        exp_avg = next(iter(state["optimizer"]["state"].values()))["exp_avg"]
        exp_avg.view(-1)[0] = float("inf")
        torch.save(state, checkpoint / "trainer_state.pt")
    _resign(checkpoint)
    code, output = run(config_file(tmp_path, shard_dir, model_dir, max_steps=3, save_every=1))
    assert code == 2
    line = one_error_line(output)
    assert f"checkpoint {checkpoint} is damaged" in line and "NaN or infinity" in line
    assert "echo step-000001 >" in line


def test_bytes_zeroed_inside_the_trainer_state_are_caught_with_and_without_checksums(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=2, save_every=1))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000002"
    state = checkpoint / "trainer_state.pt"
    data = bytearray(state.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 100] = bytes(100)
    state.write_bytes(bytes(data))
    config = config_file(tmp_path, shard_dir, model_dir, max_steps=3, save_every=1)
    code, output = run(config)
    assert code == 2
    assert "trainer_state.pt does not match its sha256 in SHA256SUMS" in one_error_line(output)
    (checkpoint / "SHA256SUMS").unlink()  # as saved before checkpoints had checksums: the zip's CRCs
    code, output = run(config)
    assert code == 2
    assert "trainer_state.pt fails its CRC check" in one_error_line(output)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "seed=0 (now 1)"),
        ({"groups_per_batch": 4}, "groups_per_batch=2 (now 4)"),
        ({"policy": "sample"}, "policy='all' (now 'sample')"),
        ({"lr": 1e-3, "max_length": 64}, "lr=0.003 (now 0.001), max_length=96 (now 64)"),
        ({"lora": {"enabled": True}}, "lora.enabled=False (now True)"),
    ],
)
def test_resuming_with_settings_that_change_the_data_or_the_optimisation_is_refused(
    shard_dir: Path, model_dir: Path, tmp_path: Path, change: dict, named: str
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=1))
    saved = (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")
    code, output = run(config_file(tmp_path, shard_dir, model_dir, max_steps=2, **change))
    assert code == 2
    line = one_error_line(output)
    assert "holds a run trained with other settings: " + named in line
    assert (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8") == saved  # not overwritten


def test_resuming_with_settings_that_change_neither_goes_on(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=1))
    code, output = run(
        config_file(
            tmp_path, shard_dir, model_dir, max_steps=2, log_every=5, save_every=2, prefetch=0, pack=False
        )
    )
    assert code == 0, output
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_resuming_on_another_corpus_is_refused_and_on_a_moved_copy_goes_on(
    shard_dir: Path, model_dir: Path, make_shard_dir: Callable[..., Path], tmp_path: Path
) -> None:
    train(train_config(shard_dir, tmp_path / "run", model_dir, max_steps=1))
    other = make_shard_dir(sft_rows(12))
    code, output = run(config_file(tmp_path, other, model_dir, max_steps=2))
    assert code == 2
    assert f"trained on another corpus than shards={other}" in one_error_line(output)
    moved = tmp_path / "moved"
    shutil.copytree(shard_dir, moved)
    code, output = run(config_file(tmp_path, moved, model_dir, max_steps=2))
    assert code == 0, output
