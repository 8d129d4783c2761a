"""Windows of collated batches built ahead in a worker thread, with the cursor of each for exact resume."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.collator import Collator
from align_train.prefetch import Prefetcher, Window, windows
from align_train.sampler import ParallelBatchSampler
from align_train.shard_stream import ShardStream


def sampler(shard_dir: Path) -> ParallelBatchSampler:
    return ParallelBatchSampler(
        ShardStream(shard_dir, seed=3), policy="all", groups_per_batch=3, anchor_lang="en"
    )


def take(source: Iterator[Window], n: int) -> list[Window]:
    return [next(source) for _ in range(n)]


def same_windows(a: Window, b: Window) -> None:
    assert [batch.group_ids for batch in a.batches] == [batch.group_ids for batch in b.batches]
    for x, y in zip(a.micro_batches, b.micro_batches, strict=True):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    assert a.data_state == b.data_state and a.collated == b.collated


def test_each_window_carries_its_cursor_and_statistics(tokenizer: Any, shard_dir: Path) -> None:
    # 20 groups in batches of 3: 7 batches an epoch, so windows of 2 cross into the next epoch.
    whole = take(
        windows(sampler(shard_dir), Collator(tokenizer, objective="sft", max_length=64), grad_accum=2), 6
    )
    assert [w.data_state for w in whole[:5]] == [
        {"epoch": 0, "batches": 2},
        {"epoch": 0, "batches": 4},
        {"epoch": 0, "batches": 6},
        {"epoch": 1, "batches": 1},
        {"epoch": 1, "batches": 3},
    ]
    for window in whole:
        assert window.collated["sequences"] == sum(b.num_seqs for b in window.micro_batches)
    assert sum(w.collated["truncated"] for w in whole) > 0  # max_length 64 cuts the tool-calling ones
    # A sampler restored to a window's cursor continues with the windows that followed it.
    resumed = sampler(shard_dir)
    resumed.load_state_dict(whole[2].data_state)
    again = take(windows(resumed, Collator(tokenizer, objective="sft", max_length=64), grad_accum=2), 3)
    for a, b in zip(again, whole[3:], strict=True):
        same_windows(a, b)


def test_the_worker_yields_what_the_loop_would_build(tokenizer: Any, shard_dir: Path) -> None:
    def source() -> Iterator[Window]:
        return windows(sampler(shard_dir), Collator(tokenizer, objective="sft", max_length=128), grad_accum=2)

    inline = take(Prefetcher(source(), depth=0), 5)
    with Prefetcher(source(), depth=2) as ahead:
        for a, b in zip(take(ahead, 5), inline, strict=True):
            same_windows(a, b)


def test_an_error_in_the_worker_is_raised_in_the_loop() -> None:
    def failing() -> Iterator[int]:
        yield 1
        msg = "the collator found a bug"
        raise RuntimeError(msg)

    with Prefetcher(failing(), depth=2) as data:
        assert next(data) == 1
        with pytest.raises(RuntimeError, match="the collator found a bug"):
            next(data)
    with Prefetcher(iter([1, 2]), depth=3) as data:
        assert list(data) == [1, 2]
        with pytest.raises(StopIteration):
            next(data)


def test_close_stops_a_worker_waiting_on_a_full_queue() -> None:
    produced = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    data = Prefetcher(endless(), depth=2)
    assert next(data) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 4 and time.monotonic() < deadline:  # 1 taken, 2 queued, 1 waiting to be put
        time.sleep(0.01)
    data.close()
    assert not any(t.name == "align-train-data" for t in threading.enumerate())
    assert len(produced) == 4  # it stopped instead of running ahead
    with pytest.raises(ValueError, match="depth=-1 is invalid"):
        Prefetcher(iter([]), depth=-1)
