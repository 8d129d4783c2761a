"""``torchrun --nproc_per_node 2`` on CPU (gloo): two ranks train like one process with twice the accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from align_train.config import TrainConfig
from align_train.model_card import read_model_card
from align_train.modeling.model import load_policy, load_tokenizer
from align_train.training.train import _seed_all, train
from tests import ROOT
from tests.align_train.corpus import preference_rows, sft_rows
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(make_shard_dir: Callable[..., Path]) -> Path:
    """8 groups: 4 per rank, so one step of 2 micro-batches of 2 groups covers every group."""
    return make_shard_dir(sft_rows(8), groups_per_shard=3)


# Every step trains on all 8 groups, whatever the split across ranks and micro-batches, so the two-rank
# run and the one-process run see the same data per step and must end with the same weights.
SETTINGS = {"groups_per_batch": 2, "max_steps": 3, "lr": 1e-2, "max_grad_norm": None}


LORA = {"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def single(corpus: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """One process with grad_accum 4: a full fine-tune and a LoRA run."""
    runs = {}
    for lora in (False, True):
        out = tmp_path_factory.mktemp("single")
        extra = {"lora": LORA} if lora else {}
        train(train_config(corpus, out, model_dir, grad_accum=4, **SETTINGS, **extra))
        runs[lora] = out
    return runs


def torchrun(config_file: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "align_train", str(config_file)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("dist", "activation_checkpointing", "lora", "compiled"),
    [
        ("ddp", False, False, False),
        ("fsdp", False, False, False),
        ("ddp", True, False, False),
        ("fsdp", True, True, False),
        ("fsdp", False, False, True),
    ],
    ids=["ddp", "fsdp", "ddp-checkpointing", "fsdp-checkpointing-lora", "fsdp-compiled"],
)
def test_two_ranks_match_one_process_with_double_accumulation(
    corpus: Path,
    model_dir: Path,
    single: dict[bool, Path],
    tmp_path: Path,
    dist: str,
    activation_checkpointing: bool,
    lora: bool,
    compiled: bool,
) -> None:
    out = tmp_path / "ranks"
    extra = {"lora": LORA} if lora else {}
    config = train_config(
        corpus,
        out,
        model_dir,
        grad_accum=2,
        dist=dist,
        activation_checkpointing=activation_checkpointing,
        compile=compiled,
        **SETTINGS,
        **extra,
    )
    config_file = tmp_path / "ranks.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    result = torchrun(config_file)
    assert result.returncode == 0, result.stderr[-3000:]

    # Each rank logs the groups of each step: disjoint between ranks, together the whole corpus.
    seen = [
        [json.loads(line)["group_ids"] for line in (out / f"data/rank-{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    for rank0, rank1 in zip(*seen, strict=True):
        assert len(rank0) == len(rank1) == 4 and not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == [f"g{i:03d}" for i in range(8)]

    # grad_norm catches a gradient that is off by a constant factor, to which Adam's update is blind.
    for key in ("loss", "grad_norm"):
        expected = [r[key] for r in read_metrics(single[lora])]
        assert [r[key] for r in read_metrics(out)] == pytest.approx(expected, rel=1e-4), key
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    ranks = load_file(out / "checkpoints/step-000003" / weights)
    alone = load_file(single[lora] / "checkpoints/step-000003" / weights)
    start = lora_start(config) if lora else load_file(model_dir / weights)
    assert ranks.keys() == alone.keys()
    errors = {name: update_error(ranks[name], alone[name], start[name]) for name in ranks}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= UPDATE_RTOL, f"{worst}: update differs by {errors[worst]:.2e} of its norm"
    moved = max(float((ranks[name] - start[name]).abs().max()) for name in ranks)
    assert moved > 1e-2  # the comparison is not between two untrained models
    # The model card counts the tokens of both ranks: the same rows as the one process trained on.
    cards = [read_model_card(run / "checkpoints/step-000003") for run in (out, single[lora])]
    assert cards[0] is not None and cards[1] is not None
    assert (cards[0][0].world_size, cards[1][0].world_size) == (2, 1)
    assert cards[0][0].tokens == cards[1][0].tokens > 0


@pytest.fixture(scope="module")
def preference_corpus(make_shard_dir: Callable[..., Path]) -> Path:
    return make_shard_dir(preference_rows(8), groups_per_shard=3)


def test_two_ranks_of_lora_dpo_under_fsdp_with_a_precomputed_reference_match_one_process(
    preference_corpus: Path, model_dir: Path, tmp_path: Path
) -> None:
    """FSDP2 with LoRA, the reference the policy with adapters off, precomputed by both ranks (each a share
    of the batches, forwards kept in step), against one process computing it per batch."""
    settings = SETTINGS | {"objective": "dpo", "lora": LORA, "dpo_beta": 0.5}
    train(train_config(preference_corpus, tmp_path / "single", model_dir, grad_accum=4, **settings))
    out = tmp_path / "ranks"
    config = train_config(
        preference_corpus, out, model_dir, grad_accum=2, dist="fsdp", precompute_reference=True, **settings
    )
    config_file = tmp_path / "ranks.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    result = torchrun(config_file)
    assert result.returncode == 0, result.stderr[-3000:]
    for key in ("loss", "grad_norm", "rewards/margin"):
        expected = [r[key] for r in read_metrics(tmp_path / "single")]
        assert [r[key] for r in read_metrics(out)] == pytest.approx(expected, rel=1e-4, abs=1e-7), key
    assert read_metrics(out)[-1]["rewards/margin"] > 0
    weights = "checkpoints/step-000003/adapter_model.safetensors"
    ranks, alone = load_file(out / weights), load_file(tmp_path / "single" / weights)
    start = lora_start(config)
    assert max(update_error(ranks[n], alone[n], start[n]) for n in ranks) <= UPDATE_RTOL


def lora_start(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The adapter weights a LoRA run starts from (B zero, A drawn from the seeded RNG), as the recipe
    builds them."""
    from peft import get_peft_model_state_dict

    _seed_all(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    return get_peft_model_state_dict(load_policy(cfg.model, tokenizer, lora=cfg.lora, seed=cfg.seed))


# Adam divides each gradient by √v + ε, so a weight whose gradient is within float rounding of zero moves
# by an amount that depends on the summation order of the BLAS kernels (AVX2 and AVX-512 differ): one
# weight of 3.2M has been seen 2.8e-5 apart at lr 1e-2 while the 99.99th percentile was 3e-7. Weights are
# therefore not compared element by element but tensor by tensor: the relative error of the whole update
# ‖Δ − Δ_ref‖ / ‖Δ_ref‖. An isolated weight off by δ changes it by about δ / (lr · steps · √n), 1e-5 for the
# one above (n = 8192); a micro-batch dropped or a group trained twice changes every gradient and moves
# it by 1e-1 or more. A gradient off by a constant factor leaves Adam's update unchanged: ``grad_norm``
# (a well-conditioned sum, compared to 1e-4) catches that.
UPDATE_RTOL = 1e-3


def update_error(after: torch.Tensor, reference: torch.Tensor, start: torch.Tensor) -> float:
    """‖(after − start) − (reference − start)‖ / ‖reference − start‖ (0 for a tensor neither changed)."""
    expected = (reference - start).double()
    norm = float(expected.norm())
    difference = float(((after - start).double() - expected).norm())
    return difference / norm if norm else difference
