"""The runs of the experiment: every arm × seed scored on the test groups, and the tuning candidates
scored on the dev groups. Used by the runner and by the analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.batch_alignment.config import ARMS, Arm, ExperimentConfig

# Relative cost of a run, for scheduling only (longest first).
COST = {"base": 0.3, "sft": 1.0, "orpo": 2.0, "dpo": 2.6}


@dataclass(frozen=True)
class Run:
    """One arm trained with one seed and scored on ``split`` (the base arm: scored only)."""

    arm: Arm
    seed: int | None
    folder: Path
    split: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def done(self) -> bool:
        return (self.folder / "eval" / "metrics.json").is_file()

    @property
    def cost(self) -> float:
        return COST["base" if not self.arm.trains else self.arm.objective]


def arm_runs(cfg: ExperimentConfig, names: list[str], tuned: dict[str, dict[str, Any]]) -> list[Run]:
    runs = []
    for name in names:
        arm = ARMS[name]
        settings = tuned.get(arm.tuned, {}) if arm.tuned else {}
        for seed in cfg.seeds_of(name) if arm.trains else [None]:
            folder = cfg.out / "runs" / (name if seed is None else f"{name}__seed={seed}")
            runs.append(Run(arm, seed, folder, "test", settings))
    return runs


def tuning_runs(cfg: ExperimentConfig) -> dict[str, list[Run]]:
    """Per tuned key, a run for every candidate and tune seed, on the arm that takes that key (the parallel
    variant for the preference objectives)."""
    out: dict[str, list[Run]] = {}
    for key in dict.fromkeys(ARMS[name].tuned for name in cfg.arms if ARMS[name].tuned):
        arm = next(ARMS[name] for name in cfg.arms if ARMS[name].tuned == key and ARMS[name].policy == "all")
        out[key] = [
            Run(arm, seed, cfg.out / "tune" / f"{key}__{candidate.name}__seed={seed}", "dev", candidate.train)
            for candidate in cfg.tuning[key]
            for seed in cfg.tune_seeds
        ]
    return out
