"""The data path of the training loop, ahead of it: windows of collated micro-batches built in a background
thread while the model computes.

A *window* is what one optimizer step consumes: ``grad_accum`` batches of the sampler, each collated into a
:class:`~align_train.batch.TokenBatch`. Reading groups and rendering chat templates is Python; forward and
backward are torch kernels that release the GIL, so a worker thread building the next windows overlaps the
data path with compute (on a GPU it is then off the critical path; on a busy CPU it still costs its CPU
time, and ``prefetch: 0`` builds each window in the loop).

Exact resume: the worker runs ahead, so the sampler's own cursor is past what the loop consumed. Each
:class:`Window` carries the sampler's state right after its batches, and a checkpoint saves the state of
the last window the loop took. The collator's statistics travel the same way, per window.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from align_train.batch import ParallelBatch, TokenBatch
from align_train.collator import Collator
from align_train.sampler import ParallelBatchSampler


@dataclass(frozen=True)
class Window:
    """The batches of one optimizer step, collated, and the data cursor after them."""

    batches: list[ParallelBatch]
    micro_batches: list[TokenBatch]
    data_state: dict[str, int]
    collated: Counter[str]
    """Collator statistics of these batches (sequences, truncated, ...)."""


def windows(
    sampler: ParallelBatchSampler, collator: Collator, *, grad_accum: int, pin_memory: bool = False
) -> Iterator[Window]:
    """Windows of ``grad_accum`` batches across epochs, from the sampler's (possibly restored) cursor.

    ``pin_memory`` pins the token tensors, so that copying them to a GPU can overlap compute.
    """
    batches = _endless(sampler)
    while True:
        before = collator.stats.copy()
        taken = [next(batches) for _ in range(grad_accum)]
        micro_batches = [collator(batch) for batch in taken]
        if pin_memory:
            micro_batches = [batch.pin_memory() for batch in micro_batches]
        yield Window(taken, micro_batches, sampler.state_dict(), collator.stats - before)


def _endless(sampler: ParallelBatchSampler) -> Iterator[ParallelBatch]:
    """Batches across epochs, starting from the sampler's (possibly restored) epoch and cursor."""
    epoch = sampler.state_dict()["epoch"]
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


class Prefetcher:
    """Iterates ``source`` in a daemon thread, keeping up to ``depth`` items ready (``depth=0``: no thread,
    each item is made when asked for).

    An exception in the worker is raised by the ``next`` that would have returned the item. :meth:`close`
    stops the worker (it is also a context manager); items already built are dropped.
    """

    def __init__(self, source: Iterator[Any], *, depth: int) -> None:
        if depth < 0:
            msg = f"depth={depth} is invalid: expected 0 (no worker) or more items ahead"
            raise ValueError(msg)
        self._source = source
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth:
            self._thread = threading.Thread(
                target=self._run, args=(source,), name="align-train-data", daemon=True
            )
            self._thread.start()

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    return
        except BaseException as e:  # handed to the loop, which raises it
            self._put((False, e))
            return
        self._put((False, StopIteration()))

    def _put(self, entry: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            return next(self._source)
        ok, item = self._queue.get()
        if ok:
            return item
        if isinstance(item, StopIteration):
            self._queue.put((False, item))  # every later call ends too
            raise StopIteration
        raise item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
