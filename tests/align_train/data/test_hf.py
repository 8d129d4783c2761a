"""The shards as a ``datasets.Dataset`` and parallel batches as a torch batch sampler, in plain torch and in
real TRL trainers (SFT and DPO) on the tiny model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from align_train.data.hf import ParallelBatches, ParallelIndexSampler, load_shards
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from schemas import ConfigError
from tests.align_train.corpus import HELD_OUT, preference_rows, read_groups, sft_rows

torch.set_num_threads(1)


def test_shards_load_as_a_dataset_a_chat_template_takes_as_it_is(
    shard_dir: Path, tokenizer_dir: Path
) -> None:
    train = load_shards(shard_dir, holdout=0.3)
    groups = read_groups(shard_dir)
    assert set(train["group_id"]) == set(groups) - HELD_OUT
    assert len(train) == sum(len(rows) for g, rows in groups.items() if g not in HELD_OUT)
    assert set(load_shards(shard_dir, split="eval", holdout=0.3)["group_id"]) == HELD_OUT
    assert set(load_shards(shard_dir, langs=["sw"])["lang"]) == {"en", "sw"}
    assert train.column_names == ["group_id", "lang", "task", "is_anchor", "messages"]
    row = next(r for r in train if r["group_id"] == "g000" and r["lang"] == "de")
    _, user, call, tool, _ = row["messages"]
    assert user == {"role": "user", "content": "Was ist 2 plus 1?"}  # no None name / tool_call_id
    assert call["tool_calls"] == [
        {"id": "call0", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 1}}}
    ]
    assert tool == {"role": "tool", "content": "3", "tool_call_id": "call0"}

    # A template that tests fields with `is defined` and renders tool calls (as Llama 3.1's and Qwen's do).
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% if m.tool_call_id is defined %}[id {{ m.tool_call_id }}]{% endif %}"
        "{% if m.name is defined %}[name {{ m.name }}]{% endif %}"
        "{% for c in m.tool_calls or [] %}[call {{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}"
        "{% endfor %}"
    )
    text = tokenizer.apply_chat_template(row["messages"], chat_template=template, tokenize=False)
    assert "None" not in text
    assert '[call add {"a": 2, "b": 1}]' in text and "<tool>3[id call0]" in text


def test_preference_shards_load_in_trl_columns(preference_shard_dir: Path) -> None:
    pairs = load_shards(preference_shard_dir)
    assert pairs.column_names == ["group_id", "lang", "task", "is_anchor", "prompt", "chosen", "rejected"]
    row = pairs[0]
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


def test_a_corpus_of_both_kinds_is_refused(make_shard_dir: Callable[..., Path]) -> None:
    mixed = make_shard_dir(sft_rows(2) + preference_rows(2))
    with pytest.raises(ConfigError, match=r"holds rows of kinds \['preference', 'sft'\]"):
        load_shards(mixed)


def rows_of(dataset: Any, indices: list[int]) -> list[tuple[str, str]]:
    return [(dataset[i]["group_id"], dataset[i]["lang"]) for i in indices]


def test_a_torch_dataloader_takes_the_sampler_as_its_batch_sampler(shard_dir: Path) -> None:
    train = load_shards(shard_dir, holdout=0.3)
    sampler = ParallelIndexSampler(train, shard_dir, groups_per_batch=3, holdout=0.3, seed=4)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=lambda rows: rows)
    stream = ShardStream(shard_dir, seed=4, split="train", holdout=0.3)
    expected = ParallelBatchSampler(stream, policy="all", groups_per_batch=3, anchor_lang="en", seed=4)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        expected.set_epoch(epoch)
        batches = [[(r["group_id"], r["lang"]) for r in rows] for rows in loader]
        assert batches == [[(r["group_id"], r["lang"]) for r in b.rows] for b in expected]
        epochs.append(batches)
        assert len(batches) == len(sampler) == math.ceil(13 / 3)  # 20 groups, 7 held out
    assert epochs[0] != epochs[1]  # each epoch its own order

    ranks = [
        ParallelIndexSampler(train, shard_dir, groups_per_batch=3, holdout=0.3, rank=r, world_size=2)
        for r in (0, 1)
    ]
    seen = [{g for batch in s for g, _ in rows_of(train, batch)} for s in ranks]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 6

    with pytest.raises(ConfigError, match=r"dataset has no \['group_id'\] column"):
        ParallelIndexSampler(train.remove_columns("group_id"), shard_dir)


class Recording(ParallelIndexSampler):
    """Keeps every batch of indices it yields, and the dataset they index."""

    taken: list[list[int]]

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.dataset = dataset
        self.taken = []

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            self.taken.append(batch)
            yield batch


def complete_groups(sampler: Recording, reference: dict[str, list[dict]]) -> None:
    """Every batch the trainer took holds whole groups, every language of each."""
    assert sampler.taken
    for batch in sampler.taken:
        groups: dict[str, list[str]] = {}
        for group_id, lang in rows_of(sampler.dataset, batch):
            groups.setdefault(group_id, []).append(lang)
        for group_id, langs in groups.items():
            assert sorted(langs) == [r["lang"] for r in reference[group_id]]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL 1.16 reads renamed transformers settings
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trl_sft_trainer_trains_on_parallel_batches(shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    from trl import SFTConfig, SFTTrainer

    class ParallelSFTTrainer(ParallelBatches, SFTTrainer):
        pass

    train = load_shards(shard_dir)
    sampler = Recording(train, shard_dir, groups_per_batch=2, seed=1)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        learning_rate=1e-2,
        max_length=128,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        dataloader_pin_memory=False,
    )
    trainer = ParallelSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        parallel_sampler=sampler,
    )
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    # The batches came from the sampler re-indexed over TRL's tokenised dataset, whole groups each.
    used = trainer.train_batch_sampler
    assert isinstance(used, Recording) and used is not sampler and "input_ids" in used.dataset.column_names
    assert len(used.taken) == 3 + 1  # accelerate reads one batch ahead
    complete_groups(used, read_groups(shard_dir))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trl_dpo_trainer_trains_on_parallel_batches(
    preference_shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    from trl import DPOConfig, DPOTrainer

    class ParallelDPOTrainer(ParallelBatches, DPOTrainer):
        pass

    pairs = load_shards(preference_shard_dir)
    args = DPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        learning_rate=1e-2,
        beta=0.5,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        dataloader_pin_memory=False,
    )
    trainer = ParallelDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=pairs,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        parallel_sampler=Recording(pairs, preference_shard_dir, groups_per_batch=2),
    )
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the start
    assert len(logs) == 2
    complete_groups(trainer.train_batch_sampler, read_groups(preference_shard_dir))


def test_transformers_padding_free_batches_run_on_varlen_sdpa(model_dir: Path) -> None:
    """``DataCollatorWithFlattening``'s one-row batches (restarting position ids, no mask) without
    flash-attn: the loss is each sequence's own, token-weighted."""
    from transformers import DataCollatorWithFlattening

    from align_train.modeling.attention import VARLEN_SDPA, register

    register()
    gen = torch.Generator().manual_seed(0)
    sequences = [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in (5, 9, 3, 12)]
    flat = DataCollatorWithFlattening()([{"input_ids": ids} for ids in sequences])
    assert flat["input_ids"].shape == (1, 29) and "attention_mask" not in flat
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        alone = [
            float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss) for ids in sequences
        ]
        expected = sum(loss * (len(ids) - 1) for loss, ids in zip(alone, sequences, strict=True)) / 25
        model.set_attn_implementation(VARLEN_SDPA)
        assert float(model(**flat).loss) == pytest.approx(expected, rel=1e-5)
        # Without the position ids the sequences attend to each other: the loss moves.
        leaky = {key: value for key, value in flat.items() if key != "position_ids"}
        assert float(model(**leaky).loss) != pytest.approx(expected, rel=1e-3)
