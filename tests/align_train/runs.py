"""Training runs for the tests: small, fast settings and the records a run writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align_train.config import TrainConfig


def train_config(shards: Path, out: Path, model: Path, **overrides: Any) -> TrainConfig:
    """Small, fast settings: a few steps of 2-group batches, every step logged."""
    settings: dict[str, Any] = {
        "shards": shards,
        "out": out,
        "model": model,
        "groups_per_batch": 2,
        "grad_accum": 2,
        "lr": 3e-3,
        "max_steps": 8,
        "log_every": 1,
        "max_length": 96,
    }
    return TrainConfig.model_validate(settings | overrides)


def read_metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
