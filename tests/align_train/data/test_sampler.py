from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from align_train.data.batch import ParallelBatch
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from tests.align_train.corpus import read_groups, sft_rows


def sampler(
    shard_dir: Path, policy: str, *, rank: int = 0, world_size: int = 1, **kwargs
) -> ParallelBatchSampler:
    stream = ShardStream(shard_dir, rank=rank, world_size=world_size, seed=1)
    kwargs.setdefault("groups_per_batch", 3)
    return ParallelBatchSampler(stream, policy=policy, anchor_lang="en", **kwargs)


def keys(batch: ParallelBatch) -> list[tuple[str, str]]:
    return [(row["group_id"], row["lang"]) for row in batch.rows]


def test_all_policy_batches_hold_every_language_of_their_groups(shard_dir: Path) -> None:
    reference = {g: [r["lang"] for r in rows] for g, rows in read_groups(shard_dir).items()}
    s = sampler(shard_dir, "all")
    batches = list(s)
    assert len(batches) == len(s) == 7  # 20 groups in batches of 3, the last one of 2
    assert [len(b.group_ids) for b in batches] == [3] * 6 + [2]
    for batch in batches:
        for group_id in batch.group_ids:
            assert sorted(r["lang"] for r in batch.rows if r["group_id"] == group_id) == reference[group_id]
        assert batch.lang_counts == dict(Counter(r["lang"] for r in batch.rows))
    assert sorted(g for b in batches for g in b.group_ids) == sorted(reference)


def test_sample_policy_keeps_the_anchor_and_k_translations(shard_dir: Path) -> None:
    for batch in sampler(shard_dir, "sample", k=1):
        assert batch.lang_counts["en"] == len(batch.group_ids)
        for group_id in batch.group_ids:
            rows = [r for r in batch.rows if r["group_id"] == group_id]
            assert len(rows) == 2 and sum(r["is_anchor"] for r in rows) == 1
    every = [keys(b) for b in sampler(shard_dir, "sample", k=5)]
    assert every == [keys(b) for b in sampler(shard_dir, "all")]


@pytest.fixture(scope="module")
def whole_shards(make_shard_dir: Callable[..., Path]) -> Path:
    """The ``shard_dir`` corpus with one record batch per shard: cheap to read for many epochs."""
    return make_shard_dir(sft_rows(20), rows_per_record_batch=1000)


@pytest.mark.parametrize(("temperature", "sw_share"), [(1.0, 1 / 6), (4.0, 0.2284)])
def test_sample_share_approaches_the_temperature_target(
    whole_shards: Path, temperature: float, sw_share: float
) -> None:
    # Manifest rows: de 20, sw 10, so p_de ∝ (2/3)^(1/τ) and p_sw ∝ (1/3)^(1/τ). Only the 10 groups that
    # have sw can draw it, with probability p_sw / (p_de + p_sw): 1/3 at τ = 1, 0.4568 at τ = 4; half the
    # 20 draws per epoch come from such groups, so the target share of sw is half that.
    s = sampler(whole_shards, "sample", k=1, temperature=temperature)
    counts: Counter[str] = Counter()
    for epoch in range(150):
        s.set_epoch(epoch)
        for batch in s:
            counts.update({lang: n for lang, n in batch.lang_counts.items() if lang != "en"})
    assert counts.total() == 150 * 20
    assert counts["sw"] / counts.total() == pytest.approx(sw_share, abs=0.02)


def test_monolingual_policy_mixes_rows_with_the_same_batch_sizes(shard_dir: Path) -> None:
    grouped = list(sampler(shard_dir, "all"))
    mixed = list(sampler(shard_dir, "monolingual"))
    assert [len(b.rows) for b in mixed] == [len(b.rows) for b in grouped]
    assert sorted(k for b in mixed for k in keys(b)) == sorted(k for b in grouped for k in keys(b))
    reference = {g: len(rows) for g, rows in read_groups(shard_dir).items()}
    incomplete = [
        g for b in mixed for g in b.group_ids if sum(r["group_id"] == g for r in b.rows) < reference[g]
    ]
    assert incomplete


def together(batches: list[ParallelBatch], *, per_step: int = 1) -> int:
    """Rows that share an optimizer step with another row of their group."""
    count = 0
    for start in range(0, len(batches), per_step):
        groups = Counter(row["group_id"] for b in batches[start : start + per_step] for row in b.rows)
        count += sum(n for n in groups.values() if n > 1)
    return count


@pytest.fixture(scope="module")
def complete_shards(make_shard_dir: Callable[..., Path]) -> Path:
    """24 groups, each in en and de."""
    return make_shard_dir([row for row in sft_rows(24) if row["lang"] != "sw"])


@pytest.mark.parametrize("per_step", [1, 2])
def test_shuffled_policy_keeps_each_batch_s_language_mix_and_parts_every_group(
    complete_shards: Path, per_step: int
) -> None:
    grouped = list(sampler(complete_shards, "all", groups_per_batch=3))
    shuffled = list(sampler(complete_shards, "shuffled", groups_per_batch=3, batches_per_step=per_step))
    assert [b.lang_counts for b in shuffled] == [b.lang_counts for b in grouped]
    assert sorted(k for b in shuffled for k in keys(b)) == sorted(k for b in grouped for k in keys(b))
    assert together(grouped, per_step=per_step) == 48
    assert together(shuffled, per_step=per_step) == 0
    # Blocks of 2 languages × per_step batches: de moves on by per_step batches, en stays.
    for b, batch in enumerate(shuffled):
        source = grouped[b - b % (2 * per_step) + (b % (2 * per_step) + per_step) % (2 * per_step)]
        assert [k for k in keys(batch) if k[1] == "de"] == [k for k in keys(source) if k[1] == "de"]
        assert [k for k in keys(batch) if k[1] == "en"] == [k for k in keys(grouped[b]) if k[1] == "en"]


def test_shuffled_policy_keeps_counts_when_groups_lack_languages(shard_dir: Path) -> None:
    grouped = list(sampler(shard_dir, "all"))
    shuffled = list(sampler(shard_dir, "shuffled"))
    assert [b.lang_counts for b in shuffled] == [b.lang_counts for b in grouped]
    assert sorted(k for b in shuffled for k in keys(b)) == sorted(k for b in grouped for k in keys(b))
    assert together(shuffled) < together(grouped) / 4


@pytest.mark.parametrize("policy", ["all", "sample", "shuffled", "monolingual"])
def test_ranks_step_together_on_disjoint_groups(shard_dir: Path, policy: str) -> None:
    samplers = [sampler(shard_dir, policy, rank=r, world_size=3, groups_per_batch=4) for r in range(3)]
    per_rank = [list(s) for s in samplers]
    assert [len(s) for s in samplers] == [len(b) for b in per_rank] == [2, 2, 2]
    seen = [{g for b in batches for g in b.group_ids} for batches in per_rank]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


@pytest.mark.parametrize("policy", ["all", "sample", "shuffled", "monolingual"])
def test_state_dict_resumes_with_the_same_batches(shard_dir: Path, policy: str) -> None:
    first = sampler(shard_dir, policy, rank=1, world_size=2, groups_per_batch=2)
    first.set_epoch(2)
    it = iter(first)
    head = [keys(next(it)) for _ in range(2)]
    state = first.state_dict()
    tail = [keys(b) for b in it]
    assert state == {"epoch": 2, "batches": 2}
    assert len(head) + len(tail) == len(first) == 5

    resumed = sampler(shard_dir, policy, rank=1, world_size=2, groups_per_batch=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert [keys(b) for b in resumed] == tail
    assert list(resumed) == []  # the epoch is done until the epoch changes
    resumed.set_epoch(3)
    assert [keys(b) for b in resumed] != head + tail
    resumed.set_epoch(2)
    assert [keys(b) for b in resumed] == head + tail


def test_arguments_are_checked(shard_dir: Path) -> None:
    with pytest.raises(ValueError, match="policy='mixed' is invalid"):
        sampler(shard_dir, "mixed")
    with pytest.raises(ValueError, match="groups_per_batch=0 is invalid"):
        sampler(shard_dir, "all", groups_per_batch=0)
    with pytest.raises(ValueError, match="k=0 is invalid"):
        sampler(shard_dir, "sample", k=0)
    with pytest.raises(ValueError, match="batches_per_step=0 is invalid"):
        sampler(shard_dir, "shuffled", batches_per_step=0)
    with pytest.raises(ValueError, match=r"temperature=0\.0 is invalid"):
        sampler(shard_dir, "sample", temperature=0.0)
    stream = ShardStream(shard_dir)
    with pytest.raises(ValueError, match="anchor_lang='de' does not match the corpus, whose anchor is 'en'"):
        ParallelBatchSampler(stream, policy="all", groups_per_batch=2, anchor_lang="de")
    s = sampler(shard_dir, "all")
    with pytest.raises(ValueError, match="state batches=8 is invalid"):
        s.load_state_dict({"epoch": 0, "batches": 8})
