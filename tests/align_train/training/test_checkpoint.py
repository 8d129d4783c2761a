"""Checkpoints: Hugging Face loadable, weights_only-safe, and an exact resume after SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from align_train.cli import app
from align_train.eval.evaluate import load_for_eval
from align_train.model_card import read_model_card
from align_train.modeling.model import MERGED_DIR
from align_train.run_folder import STATE_FILE, latest_checkpoint, resolve_model
from align_train.training.checkpoint import (
    load_trainer_state,
    rng_state,
    set_rng_state,
)
from align_train.training.train import train
from schemas import ConfigError
from tests import ROOT
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)


def logits(model: torch.nn.Module, tokenizer_dir: Path) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer("Was ist 2 plus 3?", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_checkpoint_is_a_model_folder_with_a_weights_only_state(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    final = train(train_config(shard_dir, tmp_path, model_dir, max_steps=3))
    assert latest_checkpoint(tmp_path) == final
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    trained = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
    start = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    assert not torch.allclose(logits(trained, final), logits(start, final), atol=1e-3)
    state = torch.load(final / STATE_FILE, weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 1
    assert "model.embed_tokens.weight" in state["optimizer"]["state"]
    assert state["scheduler"]["last_epoch"] == 3
    assert state["ranks"][0]["data"] == {"epoch": 0, "batches": 6}  # 3 steps of 2 micro-batches
    assert set(state["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}
    with pytest.raises(ConfigError, match="written by 1 ranks, this run has 2"):
        load_trainer_state(final, world_size=2)


def test_lora_checkpoint_holds_the_adapter_and_the_merged_model_is_exported_once(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    lora = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    cfg = train_config(
        shard_dir, tmp_path, model_dir, max_steps=2, lr=1e-2, lora=lora, save_every=1, export_merged=True
    )
    final = train(cfg)
    # Each checkpoint: the adapter (named after its base), the tokenizer, the trainer state; no base weights.
    for checkpoint in (tmp_path / "checkpoints").glob("step-*"):
        assert not list(checkpoint.glob("model*.safetensors")) and not (checkpoint / "config.json").exists()
        adapter = checkpoint / "adapter_model.safetensors"
        assert adapter.stat().st_size < (model_dir / "model.safetensors").stat().st_size / 50
        assert {"tokenizer.json", STATE_FILE} <= {p.name for p in checkpoint.iterdir()}
    named = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert named == str(model_dir.resolve())
    state = torch.load(final / STATE_FILE, weights_only=True)
    assert all("lora_" in name for name in state["optimizer"]["state"])

    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    base_logits = logits(base, final)
    adapted = PeftModel.from_pretrained(base, final)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / MERGED_DIR, use_safetensors=True)
    assert type(merged).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(logits(merged, final), logits(adapted, final), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(merged, final), base_logits, atol=1e-4)

    # Evaluation loads the run as base + adapter; `align-train export` writes the same merged model.
    _, evaluated = load_for_eval(resolve_model(tmp_path), base_model=None)
    torch.testing.assert_close(logits(evaluated, final), logits(merged, final), atol=1e-5, rtol=1e-5)
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", use_safetensors=True)
    torch.testing.assert_close(logits(again, final), logits(merged, final), atol=0, rtol=0)


def test_export_refuses_a_full_fine_tune(shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    train(train_config(shard_dir, tmp_path, model_dir, max_steps=1))
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2
    assert "is not a LoRA checkpoint or run" in result.output
    with pytest.raises(ValueError, match="export_merged=true needs LoRA"):
        train_config(shard_dir, tmp_path, model_dir, export_merged=True)


def test_rng_state_round_trips() -> None:
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_latest_pointing_at_an_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "step-000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "latest").write_text("step-000004", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        latest_checkpoint(tmp_path)


def test_resume_with_more_steps_follows_the_longer_schedule(
    preference_shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    train(train_config(preference_shard_dir, tmp_path, model_dir, objective="orpo", max_steps=2))
    train(train_config(preference_shard_dir, tmp_path, model_dir, objective="orpo", max_steps=4))
    # Cosine over 4 steps from 3e-3: the restored step 3 runs at half the peak, not at the old end (0).
    assert [r["lr"] for r in read_metrics(tmp_path)] == pytest.approx(
        [3e-3, 1.5e-3, 1.5e-3, 3e-3 * 0.1464466]
    )


def same_run(a: Path, b: Path) -> None:
    """Same data order and, within float tolerance, the same loss curve."""
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    assert [r["langs"] for r in rb] == [r["langs"] for r in ra]
    assert [r["loss"] for r in rb] == pytest.approx([r["loss"] for r in ra], rel=1e-5)
    data = "data/rank-0.jsonl"
    assert (b / data).read_text(encoding="utf-8") == (a / data).read_text(encoding="utf-8")


def wait_for_records(out: Path, count: int, *, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    path = out / "metrics.jsonl"
    while not (path.is_file() and len(path.read_text(encoding="utf-8").splitlines()) >= count):
        if time.monotonic() > deadline:
            msg = f"{path} did not reach {count} records in {timeout} s"
            raise TimeoutError(msg)
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_then_resume_repeats_the_uninterrupted_run(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    # Policy 'sample' draws languages from the data RNG, and 16 steps of 4 groups cross three epochs of 20.
    settings = {"policy": "sample", "k": 1, "max_steps": 16, "warmup_steps": 3}
    train(train_config(shard_dir, tmp_path / "whole", model_dir, **settings))

    cut = tmp_path / "cut"
    config = train_config(shard_dir, cut, model_dir, **settings)
    config_file = tmp_path / "cut.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "align_train", str(config_file)]
    with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as proc:
        wait_for_records(cut, 3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    stopped = latest_checkpoint(cut)
    assert stopped is not None
    assert 3 <= int(stopped.name.removeprefix("step-")) < 16

    train(config)
    same_run(tmp_path / "whole", cut)


def test_lora_with_dropout_resumes_exactly_in_process(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    # LoRA dropout draws from the torch RNG, so an exact resume needs the restored generator state too.
    lora = {"enabled": True, "r": 4, "dropout": 0.2, "target_modules": ["q_proj", "v_proj"]}
    settings = {"lora": lora, "lr": 1e-2, "max_steps": 8}
    train(train_config(shard_dir, tmp_path / "whole", model_dir, **settings))

    cut = tmp_path / "cut"
    config = train_config(shard_dir, cut, model_dir, **settings)
    killer = threading.Thread(target=lambda: (wait_for_records(cut, 2), os.kill(os.getpid(), signal.SIGTERM)))
    killer.start()
    stopped = train(config)
    killer.join()
    assert int(stopped.name.removeprefix("step-")) < 8
    resumed = train(config)
    same_run(tmp_path / "whole", cut)
    # The tokens on the model card count across the resume, as in the uninterrupted run.
    cards = [read_model_card(final) for final in (resumed, latest_checkpoint(tmp_path / "whole"))]
    assert cards[0] is not None and cards[1] is not None
    assert (cards[0][0].step, cards[0][0].tokens) == (cards[1][0].step, cards[1][0].tokens)
    assert cards[0][0].tokens > 0
