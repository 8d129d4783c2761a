"""Typed configuration of ``align-train``, ``align-train eval`` and ``align-train sweep``, validated once at
the edge (YAML file + flags + ``--set``).

Everything that can be checked before a model is loaded is checked here: the shard dir and its manifest,
the languages asked for, and settings that contradict each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from align_train.choices import (
    UNGROUPED_POLICIES,
    AlignmentLoss,
    Attention,
    ObjectiveName,
    Policy,
    Precision,
    PrefetchWorker,
    ReferenceKind,
    ScorerName,
    Scoring,
)
from align_train.run_folder import RUN_CONFIG, training_run
from align_train.split import Split, check_split
from schemas import MANIFEST_FILE, Manifest, normalize_lang
from schemas.model_files import check_model_folder


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
    objective: ObjectiveName = "sft"
    policy: Policy = "all"
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
    pack: bool | Literal["auto"] = Field(
        "auto",
        description="padding-free batches; auto = when the model's attention honours them, else padding",
    )
    attention: Attention = Field(
        "auto",
        description="attention kernel; auto = varlen_sdpa (each sequence on its own, no mask) where exact",
    )
    loss_chunk_tokens: int | None = Field(
        None,
        ge=1,
        description="labelled positions per chunk of the output layer; None = 256 MiB of float32 logits",
    )
    seed: int = 0
    shuffle_buffer: int = Field(1024, ge=1, description="groups held by the stream's shuffle buffer")
    prefetch: int = Field(
        2, ge=0, description="optimizer steps of batches built ahead in a worker; 0 = in the loop"
    )
    prefetch_worker: PrefetchWorker = Field(
        "process",
        description="where batches are built ahead: a process (off the loop's GIL; Linux) or a thread",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    activation_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer in the backward pass instead of keeping its activations",
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder layer (dynamic shapes: one compile serves every batch)",
    )
    export_merged: bool = Field(
        False, description="LoRA: at the end, also write OUT/merged, the base model with the adapters merged"
    )
    dpo_beta: float = Field(0.1, gt=0)
    orpo_beta: float = Field(0.1, gt=0)
    alignment_loss: AlignmentLoss = Field(
        "cosine", description="coupled cross-lingual term over a group's translations in a micro-batch"
    )
    alignment_weight: float = Field(0.0, ge=0, description="weight of the coupled term; 0 = off")
    alignment_layer: int = Field(
        -1, description="hidden_states index the representation terms pool: 0 embeddings, -1 last layer"
    )
    alignment_temperature: float = Field(0.1, gt=0, description="temperature of the contrastive term")
    reference: ReferenceKind | None = Field(
        None, description="DPO reference model; None = 'adapter-disabled' with LoRA, else 'frozen'"
    )
    precompute_reference: bool = Field(
        False,
        description="DPO: reference log-probabilities of the whole training split before the first step; "
        "no reference forward in the loop, and a frozen reference leaves memory",
    )
    dist: Literal["ddp", "fsdp"] = "ddp"
    dtype: Precision = Field("auto", description="autocast dtype; auto = bf16 on GPU")
    save_every: int = Field(0, ge=0, description="optimizer steps between checkpoints; 0 = only at the end")
    log_every: int = Field(10, ge=1)
    langs: list[str] | None = Field(None, description="train on these languages only; None = all of them")
    holdout: float = Field(
        0.0, ge=0, lt=1, description="fraction of groups held out for evaluation (by group_id hash); 0 = none"
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="experiment trackers besides metrics.jsonl (align_train/training/trackers.py)",
    )
    tracking_project: str = Field("polyalign", description="W&B project / MLflow experiment")
    threads: int | None = Field(
        None, ge=1, description="CPU threads of torch and BLAS; None = OMP_NUM_THREADS, else the idle cores"
    )
    resume: bool = Field(True, description="continue from OUT/checkpoints/latest when it exists")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a step whose loss or gradient norm is NaN or infinite: stop the run naming it, or skip "
        "its update and go on (as large-scale trainers do)",
    )

    RESUMABLE: ClassVar[frozenset[str]]
    """The settings a resume may change: where and how fast the run computes, how long it runs and what it
    logs. Every other setting decides the data order or the optimisation, and a resume that changed one
    would continue another run than the one its checkpoint holds (``checkpoint.check_resumable``).

    ``pack``, ``attention``, ``loss_chunk_tokens``, ``compile``, ``activation_checkpointing``, ``dist`` and
    ``precompute_reference`` are here: they change how a step is computed, not what it computes. Packing in
    particular lays out the sequences of a micro-batch the sampler already chose (the same rows share a
    window packed or padded, each sequence truncated alike) and is only used where
    ``packing_is_exact`` holds; the loss scale counts units, not rows of the layout. ``max_steps`` and
    ``epochs`` lengthen the schedule on purpose (the learning rate then follows the new one). ``dtype`` is
    not here: bf16 and float32 steps differ by more than rounding order.
    """
    RESUMABLE = frozenset(
        {
            "out",
            "resume",
            "max_steps",
            "epochs",
            "save_every",
            "log_every",
            "report_to",
            "tracking_project",
            "threads",
            "prefetch",
            "prefetch_worker",
            "export_merged",
            "attention",
            "compile",
            "activation_checkpointing",
            "loss_chunk_tokens",
            "pack",
            "dist",
            "precompute_reference",
            "on_nonfinite",
        }
    )

    _check_shards = field_validator("shards")(lambda cls, v: _require_manifest(v))

    @field_validator("model")
    @classmethod
    def _model_dir(cls, v: Path | None) -> Path | None:
        if v is not None:  # a config, a tokenizer and whole safetensors weights; omit it for the demo model
            check_model_folder(v, setting=None)
        return v

    _check_langs = field_validator("langs")(lambda cls, v: _dedupe_langs(v))

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        manifest = Manifest.load(self.shards)
        if self.langs is not None:
            self.langs = _translations(self.langs, manifest, self.shards)
        if self.reference is None:
            self.reference = "adapter-disabled" if self.lora.enabled else "frozen"
        if self.reference == "adapter-disabled" and not self.lora.enabled:
            msg = "reference='adapter-disabled' needs LoRA: set lora.enabled=true or reference='frozen'"
            raise ValueError(msg)
        if self.precompute_reference and self.objective != "dpo":
            msg = f"precompute_reference=true is for objective='dpo' (the one with a reference), not {self.objective!r}"
            raise ValueError(msg)
        if self.export_merged and not self.lora.enabled:
            msg = "export_merged=true needs LoRA: a full fine-tune's checkpoints are model folders already"
            raise ValueError(msg)
        if self.alignment_weight > 0 and self.policy in UNGROUPED_POLICIES:
            msg = (
                f"alignment_weight={self.alignment_weight} needs a group's languages in one batch, which "
                f"policy={self.policy!r} never gives: use policy 'all' or 'sample', or alignment_weight=0"
            )
            raise ValueError(msg)
        return self

    @property
    def beta(self) -> float:
        """β of the preference objective; SFT has none."""
        return {"dpo": self.dpo_beta, "orpo": self.orpo_beta}.get(self.objective, 0.0)


DEFAULT_SCORERS: dict[str, ScorerName] = {"math": "math", "tool_calling": "tool", "tool": "tool"}


class EvalConfig(_Section):
    """What ``align-train eval`` scores: held-out groups of a corpus (``data``), standard benchmarks
    through lm-evaluation-harness (``tasks``), or both; on which groups, and how it generates."""

    model: Path | None = Field(
        None,
        description="model folder, training checkpoint, training run (its latest checkpoint) or peft "
        "adapter folder; None = the tiny demo model, randomly initialised",
    )
    base_model: Path | None = Field(
        None, description="base model of an adapter folder; None = the one its adapter_config.json names"
    )
    data: Path | None = Field(None, description="a `curate build` folder whose held-out groups to score")
    tasks: list[str] | None = Field(
        None, description="lm-evaluation-harness tasks, groups or wildcards (mgsm_native_cot, xnli_*)"
    )
    include_path: list[Path] | None = Field(None, description="folders of extra lm-eval task YAMLs")
    num_fewshot: int | None = Field(None, ge=0, description="lm-eval few-shot examples; None = the task's")
    limit: int | None = Field(None, ge=1, description="lm-eval items per task, for trial runs; None = all")
    apply_chat_template: bool = Field(False, description="lm-eval renders prompts with the chat template")
    anchor_lang: str = Field("en", description="the language the benchmarks' gaps are measured against")
    out: Path
    split: Split = Field("all", description="unset: 'eval' when holdout > 0, else 'all'")
    holdout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="unset: the holdout of the training run `model` belongs to, when it trained on `data`",
    )
    langs: list[str] | None = Field(None, description="evaluate these languages (and the anchor); None = all")
    corpus_tasks: list[str] | None = Field(
        None, description="score corpus rows of these tasks only (math, tool_calling); None = all"
    )
    scorers: dict[str, ScorerName] = Field(
        default_factory=lambda: dict(DEFAULT_SCORERS),
        description="task → answer scorer; other tasks get the loss only",
    )
    max_groups: int | None = Field(None, ge=1, description="the first N groups by holdout hash; None = all")
    require_all_langs: bool = Field(False, description="only groups that have every evaluated language")
    scoring: Scoring = Field(
        "generate",
        description="accuracy of a scored row: its generated answer equals the reference's (generate), or "
        "the reference answer is the model's greedy continuation, from the loss pass alone (loglikelihood)",
    )
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    lookahead: int = Field(
        3,
        ge=0,
        description="tokens drafted per answer and step by prompt lookup, checked in the same forward",
    )
    max_length: int = Field(2048, ge=16, description="tokens of prompt + reference scored for the loss")
    backend: Literal["transformers", "vllm"] = "transformers"
    dtype: Precision = Field("auto", description="auto = bf16 on GPU, fp32 on CPU")
    threads: int | None = Field(
        None, ge=1, description="CPU threads of torch and BLAS; None = OMP_NUM_THREADS, else the idle cores"
    )

    _check_data = field_validator("data")(lambda cls, v: v if v is None else _require_manifest(v))
    _check_langs = field_validator("langs")(lambda cls, v: _dedupe_langs(v))
    _check_anchor = field_validator("anchor_lang")(lambda cls, v: normalize_lang(v))

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_tasks(cls, v: Any) -> Any:
        return [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else v

    @field_validator("model")
    @classmethod
    def _model_kind(cls, v: Path | None) -> Path | None:
        kinds = ("config.json", "adapter_config.json", "checkpoints/latest")
        if v is not None and not any((v / kind).is_file() for kind in kinds):
            msg = (
                f"model {v} is neither a model folder (config.json), a peft adapter folder "
                "(adapter_config.json) nor a training run (checkpoints/latest)"
            )
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        if self.data is None:
            if not self.tasks:
                msg = "nothing to evaluate: give data (a `curate build` folder) and/or tasks (lm-eval tasks)"
                raise ValueError(msg)
            return self
        manifest = Manifest.load(self.data)
        if self.langs is not None:
            self.langs = [manifest.anchor_lang, *_translations(self.langs, manifest, self.data)]
        # Left unset, the split is the held-out part of the run that trained the model, when there is one.
        if "holdout" not in self.model_fields_set:
            self.holdout = _run_holdout(self.model, self.data)
        if "split" not in self.model_fields_set:
            self.split = "eval" if self.holdout > 0 else "all"
        check_split(self.split, self.holdout)
        return self


def _run_holdout(model: Path | None, data: Path) -> float:
    """The holdout a training run used, when it trained on ``data``: its eval groups are the ones to score."""
    run = training_run(model)
    if run is None:
        return 0.0
    settings = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) or {}
    if Path(settings.get("shards", "")).resolve() != data.resolve():
        return 0.0
    return float(settings.get("holdout", 0.0))


GRID_KEYS = {"train": ("out", "langs", "objective", "policy", "seed"), "eval": ("model", "out")}


class SweepConfig(_Section):
    """A grid of training runs (language sets × objectives × policies × seeds), each then evaluated.

    ``train`` holds the :class:`TrainConfig` settings shared by every run and ``eval`` the
    :class:`EvalConfig` settings (``data`` defaults to ``train.shards`` and ``holdout`` to
    ``train.holdout``); both are validated per run when the grid is expanded, before anything runs.
    """

    out: Path
    train: dict[str, Any]
    lang_sets: list[list[str]] = Field(min_length=1, description="each a list or a string like 'en+es'")
    objectives: list[ObjectiveName] = Field(default_factory=lambda: ["sft"], min_length=1)
    policies: list[Policy] = Field(default_factory=lambda: ["all"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    eval: dict[str, Any] = Field(default_factory=dict)

    @field_validator("lang_sets", mode="before")
    @classmethod
    def _split_strings(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [item.replace(",", "+").split("+") if isinstance(item, str) else item for item in v]

    @field_validator("lang_sets")
    @classmethod
    def _normalise_sets(cls, v: list[list[str]]) -> list[list[str]]:
        sets = [list(dict.fromkeys(normalize_lang(code.strip()) for code in s)) for s in v]
        names = ["+".join(s) for s in sets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated or not all(sets):
            msg = f"lang_sets must be non-empty and distinct, got {names}"
            raise ValueError(msg)
        return sets

    @model_validator(mode="after")
    def _no_grid_keys_in_sections(self) -> SweepConfig:
        for section, keys in GRID_KEYS.items():
            clash = sorted(set(keys) & set(getattr(self, section)))
            if clash:
                msg = f"{section}.{clash[0]} is set per run by the sweep: remove it from {section}"
                raise ValueError(msg)
        return self


def save_yaml(config: BaseModel, path: Path) -> None:
    """``config`` as YAML that validates back into the same model (paths as text, fields in order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")


def _require_manifest(v: Path) -> Path:
    if not (v / MANIFEST_FILE).is_file():
        msg = f"shard dir {v} has no {MANIFEST_FILE} (expected the output folder of `curate build`)"
        raise ValueError(msg)
    return v


def _dedupe_langs(v: list[str] | None) -> list[str] | None:
    return None if v is None else list(dict.fromkeys(normalize_lang(code) for code in v))


def _translations(langs: list[str], manifest: Manifest, shards: Path) -> list[str]:
    """``langs`` without the anchor, which is in every group whatever the selection; all must exist."""
    present = {manifest.anchor_lang, *manifest.langs, *(x for s in manifest.shards for x in s.langs)}
    missing = [lang for lang in langs if lang not in present]
    if missing:
        msg = f"langs {', '.join(missing)} not in {shards} (it has {', '.join(sorted(present))})"
        raise ValueError(msg)
    return [lang for lang in langs if lang != manifest.anchor_lang]
