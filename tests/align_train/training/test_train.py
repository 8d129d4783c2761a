"""End-to-end runs of the training loop on the tiny random Llama and the shard fixtures."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from align_train.config import TrainConfig
from align_train.training.train import train
from schemas import ConfigError
from tests import ROOT
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)


def test_sft_lowers_the_loss_and_logs_each_step(shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    cfg = train_config(shard_dir, tmp_path, model_dir, warmup_steps=2, pack=True)
    final = train(cfg)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 9))
    # A random model over a 49152-token vocabulary starts near ln(49152) = 10.80 nats per token.
    assert records[0]["loss"] == pytest.approx(math.log(49152), abs=0.3)
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    # Linear warmup from 0 over 2 steps, then cosine decay towards 0 at step 8.
    assert [r["lr"] for r in records[:3]] == pytest.approx([0.0, 1.5e-3, 3e-3])
    assert records[-1]["lr"] < 3e-4
    for r in records:
        assert set(r["langs"]) <= {"de", "en", "sw"}
        assert r["langs"]["en"] == 4  # policy 'all': 2 micro-batches of 2 groups, one anchor each
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0
    assert final == tmp_path / "checkpoints" / "step-000008"


def test_dpo_starts_at_ln2_and_lowers_the_loss(
    preference_shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    cfg = train_config(preference_shard_dir, tmp_path, model_dir, objective="dpo", dpo_beta=0.5, max_steps=6)
    train(cfg)
    records = read_metrics(tmp_path)
    # The policy starts equal to the frozen reference: every implicit reward is 0, so -log σ(0) = ln 2.
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert records[-1]["loss"] < records[0]["loss"] - 0.1
    assert records[-1]["rewards/accuracy"] > 0.5


def test_batches_built_ahead_train_exactly_as_batches_built_in_the_loop(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    runs = {"inline": (0, "process"), "process": (3, "process"), "thread": (3, "thread")}
    for name, (prefetch, worker) in runs.items():
        cfg = train_config(
            shard_dir, tmp_path / name, model_dir, max_steps=4, prefetch=prefetch, prefetch_worker=worker
        )
        train(cfg)
    inline = read_metrics(tmp_path / "inline")
    data = "data/rank-0.jsonl"
    for name in ("process", "thread"):
        ahead = read_metrics(tmp_path / name)
        for key in ("loss", "langs", "collator", "epoch"):
            assert [r[key] for r in ahead] == [r[key] for r in inline], (name, key)
        assert (tmp_path / name / data).read_text() == (tmp_path / "inline" / data).read_text()
        saved = torch.load(tmp_path / name / "checkpoints/step-000004/trainer_state.pt", weights_only=True)
        assert saved["ranks"][0]["data"] == {"epoch": 0, "batches": 8}  # what the loop took, not the worker


def test_a_compiled_run_trains_as_the_eager_run_and_saves_the_same_model(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    for compiled in (False, True):
        train(
            train_config(
                shard_dir, tmp_path / str(compiled), model_dir, max_steps=3, pack=True, compile=compiled
            )
        )
    eager, compiled = read_metrics(tmp_path / "False"), read_metrics(tmp_path / "True")
    # float32, fused kernels summing in other orders: three steps drift by rounding only.
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-4)
    saved = [
        AutoModelForCausalLM.from_pretrained(tmp_path / str(c) / "checkpoints/step-000003").state_dict()
        for c in (False, True)
    ]
    assert saved[0].keys() == saved[1].keys()
    for name, weight in saved[0].items():
        torch.testing.assert_close(saved[1][name], weight, rtol=1e-3, atol=1e-5, msg=name)


def test_orpo_lowers_the_loss(preference_shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    cfg = train_config(preference_shard_dir, tmp_path, model_dir, objective="orpo", max_steps=6)
    train(cfg)
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert losses[-1] < losses[0] - 1.0


def test_lora_dpo_with_adapters_disabled_as_reference(
    preference_shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    cfg = train_config(
        preference_shard_dir,
        tmp_path,
        model_dir,
        objective="dpo",
        max_steps=4,
        lr=1e-2,
        lora={"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]},
    )
    assert cfg.reference == "adapter-disabled"
    train(cfg)
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses[-1] < losses[0]


ALIGN_METRICS = {
    "cosine": ["align/cosine"],
    "contrastive": ["align/accuracy", "align/cosine", "align/cosine_negative"],
    "consistency": ["align/gap", "align/lagging"],
}


@pytest.mark.parametrize(
    ("alignment_loss", "objective"),
    [
        ("cosine", "sft"),
        ("contrastive", "sft"),
        ("consistency", "sft"),
        ("contrastive", "dpo"),
        ("consistency", "orpo"),
    ],
)
def test_every_coupled_term_trains_with_each_objective_and_logs(
    shard_dir: Path,
    preference_shard_dir: Path,
    model_dir: Path,
    tmp_path: Path,
    alignment_loss: str,
    objective: str,
) -> None:
    shards = shard_dir if objective == "sft" else preference_shard_dir
    cfg = train_config(
        shards,
        tmp_path,
        model_dir,
        objective=objective,
        alignment_loss=alignment_loss,
        alignment_weight=1.0,
        alignment_layer=1,
        max_steps=2,
    )
    train(cfg)
    for r in read_metrics(tmp_path):
        assert r["align/pairs"] > 0
        for key in ALIGN_METRICS[alignment_loss]:
            assert math.isfinite(r[key]), key
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])


def test_alignment_layer_is_checked_against_the_model(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    cfg = train_config(shard_dir, tmp_path, model_dir, alignment_weight=1.0, alignment_layer=40, max_steps=1)
    with pytest.raises(ConfigError, match=r"alignment_layer=40 is invalid for a model with 2 layers"):
        train(cfg)


def test_start_up_errors_name_the_fix(
    shard_dir: Path, preference_shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="needs preference rows"):
        train(train_config(shard_dir, tmp_path / "dpo", model_dir, objective="dpo"))
    with pytest.raises(ConfigError, match="fewer than grad_accum=50"):
        train(train_config(shard_dir, tmp_path / "accum", model_dir, grad_accum=50))
    train(train_config(preference_shard_dir, tmp_path / "done", model_dir, objective="orpo", max_steps=1))
    with pytest.raises(ConfigError, match="set resume=true"):
        train(
            train_config(preference_shard_dir, tmp_path / "done", model_dir, objective="orpo", resume=False)
        )


def test_config_refuses_contradictions(shard_dir: Path, tmp_path: Path) -> None:
    base = {"shards": shard_dir, "out": tmp_path}
    cases = {
        "needs LoRA": {"reference": "adapter-disabled"},
        "needs LoRA: a full fine-tune": {"export_merged": True},
        "policy='monolingual' never gives": {"alignment_weight": 0.1, "policy": "monolingual"},
        "policy='shuffled' never gives": {"alignment_weight": 0.1, "policy": "shuffled"},
        "Extra inputs": {"batch_size": 4},
    }
    for message, settings in cases.items():
        with pytest.raises(ValueError, match=message):
            TrainConfig.model_validate(base | settings)
    cfg = TrainConfig.model_validate(base | {"langs": ["deu", "en", "de"]})
    assert cfg.langs == ["de"]  # normalised, deduplicated, the anchor implied
    assert cfg.beta == 0.0 and cfg.model_copy(update={"objective": "orpo"}).beta == cfg.orpo_beta


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "align_train", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--policy", "mixed"],
            "policy: Input should be 'all', 'sample', 'shuffled' or 'monolingual' (got 'mixed')",
        ),
        (["--set", "langs=[de, fr, ja]"], "langs fr, ja not in"),
        (["--max-steps", "many"], "max_steps: Input should be a valid integer"),
    ],
)
def test_cli_user_errors_are_one_line(shard_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("--shards", str(shard_dir), "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("align-train: error: ") and message in result.stderr


def test_cli_reports_a_missing_shard_dir_and_config_file(tmp_path: Path) -> None:
    result = run_cli("--shards", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"align-train: error: shards: shard dir {tmp_path / 'nowhere'} has no manifest.json (expected the output folder of `curate build`)\n"
    )
    result = run_cli(str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert result.stderr == f"align-train: error: config file not found: {tmp_path / 'missing.yaml'}\n"


def test_cli_flags_override_the_file_and_set_overrides_flags(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"shards: {shard_dir}\nout: {tmp_path / 'ignored'}\nmodel: {model_dir}\nmax_steps: 50\n"
        "groups_per_batch: 5\nmax_length: 96\nlog_every: 1\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = run_cli(
        str(config), "--out", str(out), "--max-steps", "3", "--set", "max_steps=2", "--set", "lr=1e-3"
    )
    assert result.returncode == 0, result.stderr
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["lr"] == pytest.approx(1e-3)
    assert sum(records[0]["langs"].values()) > 5 * 2  # 5 groups per batch from the file


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is refused only where there is no GPU")
def test_bf16_without_a_gpu_is_refused(shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dtype='bf16' needs a GPU, this process runs on cpu"):
        train(train_config(shard_dir, tmp_path, model_dir, dtype="bf16"))
