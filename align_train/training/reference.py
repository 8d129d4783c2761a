"""The DPO reference: log-probabilities of the labels under the starting policy, without gradients.

The reference is either a frozen copy of the starting model or, with LoRA, the policy with its adapters
switched off (``reference``). It runs like the policy, the output layer on labelled positions only
(:class:`~align_train.modeling.head.LabelledLM`), under ``torch.no_grad``, once per micro-batch.

It never changes, so ``precompute_reference: true`` runs it once over every sequence of the training
split before the first step (:func:`precompute_reference`) and training reads a :class:`ReferenceTable`
instead: no reference forward in the loop, and a frozen reference model leaves memory before training
starts. The table is saved in the run folder (``reference_logps.pt``) and reused on resume when the
settings that decide its values are the same.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from align_train.choices import ReferenceKind
from align_train.config import LoraConfig
from align_train.data.batch import TokenBatch
from align_train.data.collator import Collator
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.distributed import Runtime, gather
from align_train.modeling.capabilities import choose_head
from align_train.modeling.head import LabelledLM
from align_train.modeling.logps import SeqLogps, scored_positions
from align_train.modeling.model import load_model
from schemas import DataError

REFERENCE_FILE = "reference_logps.pt"

SeqKey = tuple[str, str, int]
"""A sequence of the corpus: (group_id, lang, role), see :meth:`TokenBatch.seq_keys`."""


@dataclass
class Reference:
    """The DPO reference policy: a frozen model, or the LoRA policy with its adapters switched off.

    Called on a batch, it returns the label log-probabilities under ``torch.no_grad`` (the output layer on
    labelled positions only, as for the policy).
    """

    model: LabelledLM
    disable_adapters: bool

    @torch.no_grad()
    def __call__(self, batch: TokenBatch) -> SeqLogps:
        with self.model.lm.disable_adapter() if self.disable_adapters else nullcontext():
            return self.model.batch_forward(batch).logps


def load_reference(
    kind: ReferenceKind,
    policy: LabelledLM,
    *,
    model: Path | None,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    chunk_tokens: int | None,
    is_main: bool,
) -> Reference:
    """The reference of ``kind`` (the ``reference`` setting); ``policy`` is the unwrapped policy (a peft
    model inside) for 'adapter-disabled'.

    The frozen copy is loaded from ``model`` (None: the demo model of ``seed``), the model the run started
    from, not copied from the policy, so a resumed run keeps comparing against the starting point rather
    than against its own checkpoint. ``chunk_tokens`` is the ``loss_chunk_tokens`` setting.
    """
    if kind == "adapter-disabled":
        return Reference(policy, disable_adapters=True)
    frozen = load_model(model, tokenizer, seed=seed).eval().requires_grad_(False)
    frozen.set_attn_implementation(policy.causal_lm.config._attn_implementation)
    chunk_tokens = choose_head(frozen, chunk_tokens=chunk_tokens, is_main=is_main)
    return Reference(LabelledLM(frozen, chunk_tokens=chunk_tokens), disable_adapters=False)


@dataclass
class ReferenceTable:
    """Reference log-probabilities of named sequences: a :class:`Reference` that only looks them up."""

    logps: dict[SeqKey, tuple[float, int]]
    """(sum, count) of each sequence's label log-probabilities."""

    def __call__(self, batch: TokenBatch) -> SeqLogps:
        keys = batch.seq_keys()
        missing = [key for key in keys if key not in self.logps]
        if missing:
            msg = f"precomputed reference has no log-probabilities for {missing[:3]}: delete {REFERENCE_FILE} to recompute"
            raise DataError(msg)
        sums, counts = zip(*(self.logps[key] for key in keys), strict=True)
        device = batch.labels.device
        table = SeqLogps(
            sums=torch.tensor(sums, dtype=torch.float32, device=device),
            counts=torch.tensor(counts, dtype=torch.long, device=device),
        )
        # The policy scores the same tokens; a different count means the table was made of other tokens.
        _, _, owners = scored_positions(batch.labels, batch.seq_ids)
        if not torch.equal(torch.bincount(owners, minlength=batch.num_seqs), table.counts):
            msg = f"precomputed reference was made with other settings (token counts differ): delete {REFERENCE_FILE}"
            raise DataError(msg)
        return table

    def save(self, path: Path, *, identity: dict[str, Any]) -> None:
        keys = sorted(self.logps)
        state = {
            "identity": identity,
            "keys": [list(key) for key in keys],
            "sums": torch.tensor([self.logps[key][0] for key in keys], dtype=torch.float64),
            "counts": torch.tensor([self.logps[key][1] for key in keys], dtype=torch.long),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, *, identity: dict[str, Any]) -> ReferenceTable | None:
        """The table saved at ``path`` when it was made with ``identity``, else None."""
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("identity") != identity:
            return None
        pairs = zip(state["sums"].tolist(), state["counts"].tolist(), strict=True)
        return cls(
            {(g, lang, int(role)): pair for (g, lang, role), pair in zip(state["keys"], pairs, strict=True)}
        )


def reference_identity(
    collator: Collator,
    *,
    shards: Path,
    langs: list[str] | None,
    holdout: float,
    kind: ReferenceKind,
    model: Path | None,
    seed: int,
    lora: LoraConfig,
) -> dict[str, Any]:
    """The settings that decide a precomputed table's values: another value means recomputing it.

    The sequences are those of the training split of ``shards`` (``langs``, ``holdout``) as ``collator``
    tokenises them; the reference is of ``kind`` over ``model`` (None: the demo model of ``seed``), with
    the adapters of ``lora`` switched off.
    """
    return {
        "shards": str(shards.resolve()),
        "model": None if model is None else str(model.resolve()),
        "seed": seed if model is None else None,  # the demo model's weights
        "reference": kind,
        "objective": collator.objective,
        "max_length": collator.max_length,
        "langs": langs,
        "holdout": holdout,
        "lora_target_modules": lora.target_modules if lora.enabled else None,
    }


@torch.no_grad()
def precompute_reference(
    reference: Reference,
    collator: Collator,
    run: Runtime,
    *,
    shards: Path,
    langs: list[str] | None,
    holdout: float,
    groups_per_batch: int,
    seed: int,
) -> ReferenceTable:
    """Reference log-probabilities of every sequence of the training split of ``shards`` (``langs``,
    ``holdout``), each rank scoring a share of the batches of ``groups_per_batch`` groups, every rank
    receiving the whole table.

    Every rank runs the same number of forwards (a rank short of batches repeats its last one and drops
    the result), because an FSDP2 forward is a collective.
    """
    stream = ShardStream(shards, seed=seed, shuffle_buffer=1, langs=langs, split="train", holdout=holdout)
    sampler = ParallelBatchSampler(
        stream, policy="all", groups_per_batch=groups_per_batch, anchor_lang=stream.manifest.anchor_lang
    )
    batches = list(sampler)
    mine = batches[run.rank :: run.world_size]
    pool = mine or batches[:1]  # more ranks than batches: this one only keeps the collectives in step
    rounds = math.ceil(len(batches) / run.world_size)
    local: dict[SeqKey, tuple[float, int]] = {}
    for i in range(rounds):
        batch = pool[min(i, len(pool) - 1)]
        tokens = collator(batch)
        logps = reference(tokens.to(run.device))
        if i < len(mine):
            sums, counts = logps.sums.tolist(), logps.counts.tolist()
            local.update(zip(tokens.seq_keys(), zip(sums, counts, strict=True), strict=True))
    table: dict[SeqKey, tuple[float, int]] = {}
    for part in gather(local):
        table.update(part)
    return ReferenceTable(table)
