"""The closed sets of values that settings take, apart from the settings themselves, so that a command
line can list them in ``--help`` without building the pydantic models of :mod:`align_train.config`."""

from __future__ import annotations

from typing import Literal, get_args

ObjectiveName = Literal["sft", "dpo", "orpo"]
"""What training minimises (:data:`align_train.training.objectives.OBJECTIVES` implements each)."""
OBJECTIVE_NAMES: tuple[ObjectiveName, ...] = get_args(ObjectiveName)
PREFERENCE_OBJECTIVES: tuple[ObjectiveName, ...] = ("dpo", "orpo")
"""The objectives that train on preference rows (a chosen and a rejected completion per row)."""

Policy = Literal["all", "sample", "shuffled", "monolingual"]
"""Which languages of a group a batch holds (:mod:`align_train.data.sampler` implements each)."""
POLICIES: tuple[Policy, ...] = get_args(Policy)
UNGROUPED_POLICIES: tuple[Policy, ...] = ("shuffled", "monolingual")
"""The controls whose batches never hold two rows of one group: a coupled term has no pair in them."""

AlignmentLoss = Literal["cosine", "contrastive", "consistency"]
"""The coupled cross-lingual term (:data:`align_train.training.coupled.COUPLED` implements each)."""

ScorerName = Literal["math", "tool"]
"""How a task's answers are read and compared (:data:`align_train.eval.scoring.SCORERS` implements each)."""

Scoring = Literal["generate", "loglikelihood"]
"""What makes a held-out row correct: its generated answer, or its reference being the greedy answer."""

Precision = Literal["auto", "bf16", "fp32"]
"""Compute dtype: ``auto`` is bf16 on a GPU and float32 on a CPU."""

Attention = Literal[
    "auto", "varlen_sdpa", "sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"
]
"""``auto``: ``varlen_sdpa`` (:mod:`align_train.modeling.attention`) where it computes the model exactly, else
the model's own; any other value is a transformers ``attn_implementation``."""

ReferenceKind = Literal["frozen", "adapter-disabled"]
"""The DPO reference: a frozen copy of the starting model, or the LoRA policy with its adapters off."""

PrefetchWorker = Literal["process", "thread"]
"""Where batches are built ahead of the loop (:mod:`align_train.data.prefetch`)."""


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Refuse a ``value`` of parameter ``name`` that is not one of ``choices``."""
    if value not in choices:
        msg = f"{name}={value!r} is invalid: expected one of {choices}"
        raise ValueError(msg)
