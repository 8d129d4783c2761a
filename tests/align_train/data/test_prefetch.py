"""Windows of collated batches built ahead in a worker process or thread, with the cursor of each for exact
resume."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.data.collator import Collator
from align_train.data.prefetch import Prefetcher, Window, windows
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream


def sampler(shard_dir: Path) -> ParallelBatchSampler:
    return ParallelBatchSampler(
        ShardStream(shard_dir, seed=3), policy="all", groups_per_batch=3, anchor_lang="en"
    )


def take(source: Iterator[Window], n: int) -> list[Window]:
    return [next(source) for _ in range(n)]


def same_windows(a: Window, b: Window) -> None:
    assert a.group_ids == b.group_ids and a.langs == b.langs
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


WORKERS = ("process", "thread")


@pytest.mark.parametrize("worker", WORKERS)
def test_the_worker_yields_what_the_loop_would_build(tokenizer: Any, shard_dir: Path, worker: str) -> None:
    def source() -> Iterator[Window]:
        return windows(sampler(shard_dir), Collator(tokenizer, objective="sft", max_length=128), grad_accum=2)

    inline = take(Prefetcher(source(), depth=0), 5)
    with Prefetcher(source(), depth=2, worker=worker) as ahead:  # type: ignore[arg-type]
        for a, b in zip(take(ahead, 5), inline, strict=True):
            same_windows(a, b)
            for x, y in zip(a.micro_batches, b.micro_batches, strict=True):
                assert x.seq_langs == y.seq_langs and x.group_ids == y.group_ids
                assert x.segments is not None and y.segments is not None
                assert torch.equal(x.segments.gather, y.segments.gather)


@pytest.mark.parametrize("worker", WORKERS)
def test_an_error_in_the_worker_is_raised_in_the_loop(worker: str) -> None:
    def failing() -> Iterator[int]:
        yield 1
        msg = "the collator found a bug"
        raise RuntimeError(msg)

    with Prefetcher(failing(), depth=2, worker=worker) as data:  # type: ignore[arg-type]
        assert next(data) == 1
        with pytest.raises(RuntimeError, match="the collator found a bug") as raised:
            next(data)
        if worker == "process":  # the worker's traceback comes along
            assert "in failing" in "".join(raised.value.__notes__)
        with pytest.raises(StopIteration):  # not a wait on a worker that has ended
            next(data)
    # Tensors of the last items still arrive after the worker's source has ended.
    items = [torch.arange(3), torch.arange(5.0)]
    with Prefetcher(iter(items), depth=3, worker=worker) as data:  # type: ignore[arg-type]
        time.sleep(0.2)
        got = list(data)
        assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, items, strict=True))
        with pytest.raises(StopIteration):
            next(data)


class Unpicklable(Exception):
    def __init__(self, what: str, handle: object) -> None:
        super().__init__(what)
        self.handle = handle


def test_an_error_that_cannot_leave_the_worker_process_is_raised_by_what_it_says() -> None:
    def failing() -> Iterator[int]:
        raise Unpicklable("a row the collator cannot read", handle=lambda: None)
        yield 0

    with Prefetcher(failing(), depth=2) as data, pytest.raises(RuntimeError) as raised:
        next(data)
    assert str(raised.value) == "Unpicklable: a row the collator cannot read"
    assert "in failing" in "".join(raised.value.__notes__)


def test_a_worker_process_that_dies_is_an_error_not_a_hang() -> None:
    def killed() -> Iterator[int]:
        yield 1
        time.sleep(0.5)  # the queue's feeder thread sends 1 meanwhile
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        yield 2

    with Prefetcher(killed(), depth=2) as data:
        assert next(data) == 1
        with pytest.raises(RuntimeError, match="exit code -9"):
            next(data)


ORPHAN_PARENT = """
import itertools, multiprocessing, time
from align_train.data.prefetch import Prefetcher
data = Prefetcher(itertools.count(), depth=1)
next(data)
print(*(p.pid for p in multiprocessing.active_children() if p.name == "align-train-data"), flush=True)
time.sleep(600)
"""


def test_a_worker_process_ends_when_its_loop_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[3],
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.kill()  # no close(), no exit handlers: as the out-of-memory killer ends a loop
    parent.wait()

    def running(pid: int) -> bool:
        try:  # a zombie (state Z) has ended; the container's init may be slow to reap it
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(worker)


@pytest.mark.parametrize("worker", WORKERS)
def test_close_stops_a_worker_waiting_on_a_full_queue(worker: str) -> None:
    produced = multiprocessing.get_context("fork").Value("i", 0)  # shared with a forked worker

    def endless() -> Iterator[int]:
        i = 0
        while True:
            with produced.get_lock():
                produced.value += 1
            yield i
            i += 1

    data = Prefetcher(endless(), depth=2, worker=worker)  # type: ignore[arg-type]
    assert next(data) == 0
    deadline = time.monotonic() + 10
    while produced.value < 4 and time.monotonic() < deadline:  # 1 taken, 2 queued, 1 waiting to be put
        time.sleep(0.01)
    data.close()
    with pytest.raises(StopIteration):  # not the source's next item from this process
        next(data)
    assert not any(t.name == "align-train-data" for t in threading.enumerate())
    assert not any(p.name == "align-train-data" for p in multiprocessing.active_children())
    time.sleep(0.1)
    assert produced.value == 4  # it stopped instead of running ahead


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="depth=-1 is invalid"):
        Prefetcher(iter([]), depth=-1)
    with pytest.raises(ValueError, match="worker='fibre' is invalid"):
        Prefetcher(iter([]), depth=1, worker="fibre")  # type: ignore[arg-type]
