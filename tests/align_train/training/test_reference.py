"""The DPO reference: per batch, or precomputed once for the whole training split with the same values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.data.collator import Collator
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.distributed import Runtime
from align_train.modeling.head import LabelledLM
from align_train.modeling.model import load_model, load_tokenizer
from align_train.training import train as train_module
from align_train.training.reference import REFERENCE_FILE, Reference, ReferenceTable, precompute_reference
from align_train.training.train import train
from schemas import DataError
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)


def test_a_precomputed_table_gives_what_the_reference_computes_per_batch(
    preference_shard_dir: Path, model_dir: Path
) -> None:
    tokenizer = load_tokenizer(model_dir)
    reference = Reference(
        LabelledLM(load_model(model_dir, tokenizer), chunk_tokens=16), disable_adapters=False
    )
    collator = Collator(tokenizer, objective="dpo", max_length=96, pack=True)
    run = Runtime(0, 1, torch.device("cpu"))
    table = precompute_reference(
        reference,
        collator,
        run,
        shards=preference_shard_dir,
        langs=None,
        holdout=0.3,
        groups_per_batch=2,
        seed=0,
    )
    stream = ShardStream(preference_shard_dir, seed=5, split="train", holdout=0.3)
    groups = stream.num_groups
    assert len(table.logps) == 2 * 2 * groups  # en and de, chosen and rejected
    # Training batches of another policy and size, padded: the same sequences, the same values.
    padded = Collator(tokenizer, objective="dpo", max_length=96)
    for batch in ParallelBatchSampler(stream, policy="sample", k=1, groups_per_batch=3, anchor_lang="en"):
        tokens = padded(batch)
        expected = reference(tokens)
        got = table(tokens)
        torch.testing.assert_close(got.sums, expected.sums, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.counts, expected.counts)

    held_out = Collator(tokenizer, objective="dpo", max_length=96)(
        next(
            iter(
                ParallelBatchSampler(
                    ShardStream(preference_shard_dir, split="eval", holdout=0.3),
                    policy="all",
                    groups_per_batch=1,
                    anchor_lang="en",
                )
            )
        )
    )
    with pytest.raises(DataError, match="has no log-probabilities for"):
        table(held_out)
    shorter = Collator(tokenizer, objective="dpo", max_length=20)(batch)
    with pytest.raises(DataError, match="token counts differ"):
        table(shorter)


@pytest.mark.parametrize("lora", [False, True], ids=["frozen", "adapter-disabled"])
def test_dpo_with_a_precomputed_reference_trains_as_with_one_per_batch(
    preference_shard_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: bool
) -> None:
    settings: dict[str, Any] = {"objective": "dpo", "dpo_beta": 0.5, "max_steps": 3}
    if lora:
        settings |= {"lora": {"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]}, "lr": 1e-2}
    train(train_config(preference_shard_dir, tmp_path / "per-batch", model_dir, **settings))
    cfg = train_config(
        preference_shard_dir, tmp_path / "table", model_dir, precompute_reference=True, **settings
    )
    train(cfg)
    per_batch, precomputed = read_metrics(tmp_path / "per-batch"), read_metrics(tmp_path / "table")
    assert precomputed[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    for key in ("loss", "rewards/margin", "grad_norm"):
        assert [r[key] for r in precomputed] == pytest.approx([r[key] for r in per_batch], rel=1e-4, abs=1e-6)
    assert (tmp_path / "table" / REFERENCE_FILE).is_file()

    # Resuming reuses the saved table; other settings that change its values make a new one.
    calls = []
    original = train_module.precompute_reference
    monkeypatch.setattr(
        train_module, "precompute_reference", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    train(cfg.model_copy(update={"max_steps": 4}))
    assert calls == []
    saved = ReferenceTable.load(tmp_path / "table" / REFERENCE_FILE, identity={"another": "run"})
    assert saved is None


def test_precompute_reference_is_for_dpo(preference_shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precompute_reference=true is for objective='dpo'"):
        train_config(preference_shard_dir, tmp_path, model_dir, objective="orpo", precompute_reference=True)
