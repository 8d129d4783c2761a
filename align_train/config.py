"""Typed configuration of ``align-train``, validated once at the edge (YAML file + flags + ``--set``).

Everything that can be checked before a model is loaded is checked here: the shard dir and its manifest,
the languages asked for, and settings that contradict each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import MANIFEST_FILE, Manifest, normalize_lang


class ConfigError(ValueError):
    """A user mistake found at start-up; the CLI prints it on one line and exits with status 2."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraConfig(_Section):
    """LoRA adapters via peft; only the adapters train, the base model stays frozen."""

    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainConfig(_Section):
    shards: Path
    out: Path
    model: Path | None = Field(None, description="local Hugging Face model folder; None = tiny demo model")
    objective: Literal["sft", "dpo", "orpo"] = "sft"
    policy: Literal["all", "sample", "monolingual"] = "all"
    k: int = Field(1, ge=1, description="languages drawn besides the anchor with policy 'sample'")
    temperature: float = Field(1.0, gt=0, description="language sampling temperature over frequencies")
    groups_per_batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps; None = `epochs` passes, else wins"
    )
    epochs: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="None turns clipping off")
    max_length: int = Field(2048, ge=16)
    pack: bool = False
    seed: int = 0
    shuffle_buffer: int = Field(1024, ge=1, description="groups held by the stream's shuffle buffer")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dpo_beta: float = Field(0.1, gt=0)
    orpo_beta: float = Field(0.1, gt=0)
    alignment_weight: float = Field(0.0, ge=0, description="cross-lingual alignment term; 0 = off")
    reference: Literal["frozen", "adapter-disabled"] | None = Field(
        None, description="DPO reference model; None = 'adapter-disabled' with LoRA, else 'frozen'"
    )
    dist: Literal["ddp", "fsdp"] = "ddp"
    dtype: Literal["auto", "bf16", "fp32"] = Field("auto", description="autocast dtype; auto = bf16 on GPU")
    save_every: int = Field(0, ge=0, description="optimizer steps between checkpoints; 0 = only at the end")
    log_every: int = Field(10, ge=1)
    langs: list[str] | None = Field(None, description="train on these languages only; None = all of them")
    tensorboard: bool = False
    resume: bool = Field(True, description="continue from OUT/checkpoints/latest when it exists")

    @field_validator("shards")
    @classmethod
    def _shard_dir(cls, v: Path) -> Path:
        if not (v / MANIFEST_FILE).is_file():
            msg = f"shard dir {v} has no {MANIFEST_FILE} (expected the output folder of `curate build`)"
            raise ValueError(msg)
        return v

    @field_validator("model")
    @classmethod
    def _model_dir(cls, v: Path | None) -> Path | None:
        if v is not None and not (v / "config.json").is_file():
            msg = f"model {v} is not a Hugging Face model folder (no config.json); omit it for the demo model"
            raise ValueError(msg)
        return v

    @field_validator("langs")
    @classmethod
    def _normalise_langs(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(dict.fromkeys(normalize_lang(code) for code in v))

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        manifest = Manifest.load(self.shards)
        if self.langs is not None:
            present = {manifest.anchor_lang, *manifest.langs, *(x for s in manifest.shards for x in s.langs)}
            missing = [lang for lang in self.langs if lang not in present]
            if missing:
                msg = f"langs {', '.join(missing)} not in {self.shards} (it has {', '.join(sorted(present))})"
                raise ValueError(msg)
            # The anchor is in every group whatever the selection; `langs` names the translations.
            self.langs = [lang for lang in self.langs if lang != manifest.anchor_lang]
        if self.reference is None:
            self.reference = "adapter-disabled" if self.lora.enabled else "frozen"
        if self.reference == "adapter-disabled" and not self.lora.enabled:
            msg = "reference='adapter-disabled' needs LoRA: set lora.enabled=true or reference='frozen'"
            raise ValueError(msg)
        if self.dist == "fsdp" and self.lora.enabled:
            msg = "dist='fsdp' with LoRA is not supported (the merged export needs the whole model): use dist='ddp'"
            raise ValueError(msg)
        if self.alignment_weight > 0 and self.policy == "monolingual":
            msg = (
                f"alignment_weight={self.alignment_weight} needs several languages per group: "
                "use policy 'all' or 'sample', or alignment_weight=0"
            )
            raise ValueError(msg)
        return self

    @property
    def beta(self) -> float:
        """β of the preference objective; SFT has none."""
        return {"dpo": self.dpo_beta, "orpo": self.orpo_beta}.get(self.objective, 0.0)


def describe(error: ValidationError) -> str:
    """A validation error on one line: ``field: problem (got value)`` for each failed field."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        text = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("value_error", "missing") and "input" in item:
            text += f" (got {item['input']!r})"
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts)
