"""Parallel batches for users of ``transformers.Trainer`` and TRL: the shards as a ``datasets.Dataset``, and the
:class:`~align_train.data.sampler.ParallelBatchSampler` as a torch batch sampler of row indices into it.

    from align_train.data.hf import ParallelBatches, ParallelIndexSampler, load_shards

    train = load_shards("out/corpus", holdout=0.1)                 # the training split, TRL-ready columns
    sampler = ParallelIndexSampler(train, "out/corpus", groups_per_batch=8, holdout=0.1)
    DataLoader(train, batch_sampler=sampler, collate_fn=...)         # any torch loop; set_epoch per epoch

    class ParallelSFTTrainer(ParallelBatches, SFTTrainer): ...       # or DPOTrainer, transformers.Trainer
    ParallelSFTTrainer(model=..., args=..., train_dataset=train, parallel_sampler=sampler).train()

Columns of :func:`load_shards`: ``group_id``, ``lang``, ``is_anchor``, ``task`` and, for an SFT corpus,
``messages``; for a preference corpus TRL's ``prompt``, ``chosen`` and ``rejected``. Messages are what a
chat template expects: ``tool_calls`` decoded from their JSON text, and ``name``/``tool_call_id`` present
only when set (templates test them with ``is defined``). They are stored as ``datasets.Json`` so that each
message keeps exactly its own keys and each tool call its own arguments.

The trainer prepares the dataset (tokenises it, may drop rows it cannot train on) before building its
dataloader; :class:`ParallelBatches` indexes the prepared dataset by ``(group_id, lang)`` then, so a
dropped row is left out of its batch and every other row keeps its group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from align_train.choices import Policy
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.split import Split
from schemas import ConfigError, Message

SFT_COLUMNS = ("messages",)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def chat_messages(messages: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Shard messages as a chat template takes them: tool calls decoded, unset fields absent."""
    return [Message.model_validate(m).as_chat() for m in messages or []]


def load_shards(
    shards: Path | str,
    *,
    split: Split = "train",
    holdout: float = 0.0,
    langs: Sequence[str] | None = None,
) -> Any:
    """The rows of a ``curate build`` output as a ``datasets.Dataset`` (see the module docstring).

    ``split`` and ``holdout`` select the same groups as ``align-train`` (``split='train'`` leaves the
    held-out groups out), ``langs`` the same languages (the anchor always stays).
    """
    stream = ShardStream(Path(shards), shuffle_buffer=1, langs=langs, split=split, holdout=holdout)
    rows = [row for group in stream for row in group.rows]
    kinds = {row["kind"] for row in rows}
    if len(kinds) > 1:
        msg = f"{shards} holds rows of kinds {sorted(kinds)}: build SFT and preference corpora apart"
        raise ConfigError(msg)
    preference = kinds == {"preference"}
    conversations = PREFERENCE_COLUMNS if preference else SFT_COLUMNS
    columns: dict[str, list[Any]] = {
        name: [row[name] for row in rows] for name in ("group_id", "lang", "task")
    }
    columns["is_anchor"] = [row["is_anchor"] for row in rows]
    sources = {"messages": "messages", "prompt": "messages", "chosen": "chosen", "rejected": "rejected"}
    for name in conversations:
        columns[name] = [chat_messages(row[sources[name]]) for row in rows]
    features = datasets.Features(
        {
            "group_id": datasets.Value("string"),
            "lang": datasets.Value("string"),
            "task": datasets.Value("string"),
            "is_anchor": datasets.Value("bool"),
            **{name: datasets.List(datasets.Json()) for name in conversations},
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


class ParallelIndexSampler(Sampler[list[int]]):
    """The batches of :class:`~align_train.data.sampler.ParallelBatchSampler` as lists of row indices of
    ``dataset`` (any dataset with ``group_id`` and ``lang`` columns, e.g. from :func:`load_shards`).

    One epoch per iteration; call :meth:`set_epoch` before each, as with ``DistributedSampler``
    (``transformers.Trainer`` does). ``rank`` and ``world_size`` default to ``torch.distributed``'s: every
    rank gets its own disjoint groups, so a launcher must not split the batches again (``ParallelBatches``
    sees to that inside a Trainer). Rows of a batch that ``dataset`` does not hold are left out of it.
    """

    def __init__(
        self,
        dataset: Any,
        shards: Path | str,
        *,
        policy: Policy = "all",
        groups_per_batch: int = 8,
        k: int = 1,
        temperature: float = 1.0,
        holdout: float = 0.0,
        langs: Sequence[str] | None = None,
        seed: int = 0,
        shuffle_buffer: int = 1024,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.settings = {
            "policy": policy,
            "groups_per_batch": groups_per_batch,
            "k": k,
            "temperature": temperature,
            "holdout": holdout,
            "langs": langs,
            "seed": seed,
            "shuffle_buffer": shuffle_buffer,
        }
        self.shards = Path(shards)
        joined = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if joined else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if joined else 1)
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world_size=self.world_size,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            langs=langs,
            split="train",
            holdout=holdout,
        )
        self.parallel = ParallelBatchSampler(
            stream,
            policy=policy,
            groups_per_batch=groups_per_batch,
            anchor_lang=stream.manifest.anchor_lang,
            k=k,
            temperature=temperature,
            seed=seed,
        )
        missing = {"group_id", "lang"} - set(getattr(dataset, "column_names", None) or [])
        if missing:
            msg = f"dataset has no {sorted(missing)} column: index the rows of load_shards(...) or a dataset made from it"
            raise ConfigError(msg)
        self.index = {key: i for i, key in enumerate(zip(dataset["group_id"], dataset["lang"], strict=True))}
        self.epoch = 0

    def over(self, dataset: Any, *, rank: int, world_size: int) -> ParallelIndexSampler:
        """The same batches as row indices of another ``dataset`` (e.g. the one a trainer prepared)."""
        return type(self)(dataset, self.shards, rank=rank, world_size=world_size, **self.settings)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.parallel)

    def __iter__(self) -> Iterator[list[int]]:
        self.parallel.set_epoch(self.epoch)
        for batch in self.parallel:
            rows = [self.index.get((row["group_id"], row["lang"])) for row in batch.rows]
            indices = [i for i in rows if i is not None]
            if indices:
                yield indices


class ParallelBatches:
    """Mixin for ``transformers.Trainer`` and TRL's trainers: training batches of complete parallel groups.

        class ParallelDPOTrainer(ParallelBatches, DPOTrainer): ...
        trainer = ParallelDPOTrainer(model=..., args=..., train_dataset=load_shards(shards),
                                     parallel_sampler=ParallelIndexSampler(..., shards, groups_per_batch=4))

    ``get_train_dataloader`` is the hook: the prepared training set is indexed by the sampler (kept as
    ``train_batch_sampler``), unused
    columns are removed as the trainer does, and accelerate is kept from splitting the batches across
    processes again (each rank's sampler already holds its own groups). ``per_device_train_batch_size``
    plays no part: a batch is ``groups_per_batch`` groups.
    """

    def __init__(self, *args: Any, parallel_sampler: ParallelIndexSampler, **kwargs: Any) -> None:
        self.parallel_sampler = parallel_sampler
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        trainer: Any = self
        if trainer.train_dataset is None:
            msg = "ParallelBatches needs a train_dataset"
            raise ValueError(msg)
        dataset = trainer.train_dataset
        sampler = self.parallel_sampler.over(
            dataset, rank=trainer.args.process_index, world_size=trainer.args.world_size
        )
        self.train_batch_sampler = sampler
        collator = trainer.data_collator
        if isinstance(dataset, datasets.Dataset):
            dataset = trainer._remove_unused_columns(dataset, description="training")
        else:
            collator = trainer._get_collator_with_removed_columns(collator, description="training")
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=trainer.args.dataloader_num_workers,
            pin_memory=trainer.args.dataloader_pin_memory,
        )
        prepared = trainer.accelerator.prepare(loader)
        # accelerate wraps a batch sampler to deal its batches to the processes; ours already did.
        shard = getattr(prepared, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes = 1
            shard.process_index = 0
        return prepared
