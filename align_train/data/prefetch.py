"""The data path of the training loop, ahead of it: windows of collated micro-batches built in a worker
while the model computes.

A *window* is what one optimizer step consumes: ``grad_accum`` batches of the sampler, each collated into a
:class:`~align_train.data.batch.TokenBatch`. Reading groups and rendering chat templates is Python, and so is
the loop that launches a GPU's kernels: in a thread of the same process the two take turns holding the
GIL, and the GPU waits whenever the data path holds it. The default worker is therefore a process
(``prefetch_worker: process``), as ``torch.utils.data.DataLoader`` workers are; its tensors reach the loop
through shared memory. A thread (``thread``) costs no second process and suits a CPU run, whose kernels
release the GIL; ``prefetch: 0`` builds each window in the loop.

Exact resume: the worker runs ahead, so its sampler's cursor is past what the loop consumed. Each
:class:`Window` carries the sampler's state right after its batches, and a checkpoint saves the state of
the last window the loop took. The collator's statistics travel the same way, per window.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
import torch.multiprocessing

from align_train.choices import PrefetchWorker
from align_train.data.batch import ParallelBatch, TokenBatch
from align_train.data.collator import Collator
from align_train.data.sampler import ParallelBatchSampler
from schemas import UserError

WORKER_NAME = "align-train-data"


class DataWorkerDied(UserError, RuntimeError):
    """The process building batches ahead ended without a word (killed, often for memory)."""


@dataclasses.dataclass(frozen=True)
class Window:
    """The batches of one optimizer step, collated, and the data cursor after them."""

    micro_batches: list[TokenBatch]
    group_ids: list[str]
    """The groups of the window's batches, in order."""
    langs: Counter[str]
    """Rows per language in the window's batches."""
    data_state: dict[str, int]
    collated: Counter[str]
    """Collator statistics of these batches (sequences, truncated, ...)."""

    @property
    def tokens(self) -> int:
        """Tokens of the sequences in the window (padding not counted)."""
        return sum(int((batch.seq_ids >= 0).sum()) for batch in self.micro_batches)

    def pin_memory(self) -> Window:
        """The window with its token tensors in page-locked memory, so that copies to a GPU overlap compute."""
        return dataclasses.replace(self, micro_batches=[batch.pin_memory() for batch in self.micro_batches])


def windows(sampler: ParallelBatchSampler, collator: Collator, *, grad_accum: int) -> Iterator[Window]:
    """Windows of ``grad_accum`` batches across epochs, from the sampler's (possibly restored) cursor.

    A window keeps what the loop needs of the rows (their groups and languages), not the rows themselves,
    which would otherwise be copied from a worker process for nothing.
    """
    batches = _endless(sampler)
    while True:
        before = collator.stats.copy()
        taken: list[ParallelBatch] = [next(batches) for _ in range(grad_accum)]
        langs = Counter[str]()
        for batch in taken:
            langs.update(batch.lang_counts)
        yield Window(
            micro_batches=[collator(batch) for batch in taken],
            group_ids=[g for batch in taken for g in batch.group_ids],
            langs=langs,
            data_state=sampler.state_dict(),
            collated=collator.stats - before,
        )


def _endless(sampler: ParallelBatchSampler) -> Iterator[ParallelBatch]:
    """Batches across epochs, starting from the sampler's (possibly restored) epoch and cursor."""
    epoch = sampler.state_dict()["epoch"]
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


class Prefetcher:
    """Iterates ``source`` in a worker (a forked process or a daemon thread), keeping up to ``depth`` items
    ready; ``depth=0``: no worker, each item is made when asked for.

    An exception in the worker is raised by the ``next`` that would have returned the item, with the
    worker's traceback as a note; a worker process that dies (killed for memory) is an error, not a hang.
    :meth:`close` stops the worker (it is also a context manager); items already built are dropped.

    The process is forked (on Linux; elsewhere, where forking a process with threads is unsafe, the worker
    is a thread), so ``source`` need not be picklable; it must not use the GPU (pin in the loop:
    :meth:`Window.pin_memory`). Its items are pickled, tensors through shared memory.
    """

    def __init__(self, source: Iterator[Any], *, depth: int, worker: PrefetchWorker = "process") -> None:
        if depth < 0:
            msg = f"depth={depth} is invalid: expected 0 (no worker) or more items ahead"
            raise ValueError(msg)
        self._source = source
        self._done = False
        self._worker: threading.Thread | torch.multiprocessing.Process | None = None
        self._queue: Any = None
        self._stop: Any = None
        if not depth:
            return
        if worker == "process" and sys.platform == "linux":
            context = torch.multiprocessing.get_context("fork")
            self._queue, self._stop = context.Queue(maxsize=depth), context.Event()
            self._worker = context.Process(
                target=_produce, args=(source, self._queue, self._stop, True), name=WORKER_NAME, daemon=True
            )
        elif worker in ("process", "thread"):  # forking is safe on Linux only: a thread elsewhere
            self._queue, self._stop = queue.Queue(maxsize=depth), threading.Event()
            self._worker = threading.Thread(
                target=_produce, args=(source, self._queue, self._stop, False), name=WORKER_NAME, daemon=True
            )
        else:
            msg = f"worker={worker!r} is invalid: expected 'process' or 'thread'"
            raise ValueError(msg)
        self._worker.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if self._worker is None:
            return next(self._source)
        ok, item = self._get()
        if ok:
            return item
        self._done = True  # the worker has ended: every later call ends too, instead of waiting on it
        if isinstance(item, StopIteration):
            raise StopIteration
        raise item

    def _get(self) -> tuple[bool, Any]:
        """The next entry of the queue, waiting as long as the worker lives."""
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._worker is not None and not self._worker.is_alive():
                    try:  # what it put just before it ended
                        return self._queue.get(timeout=1.0)
                    except queue.Empty:
                        raise self._died() from None
                    except (OSError, EOFError) as e:
                        raise self._died() from e
            except (OSError, EOFError) as e:
                # A queued tensor's shared memory is fetched from the worker when the item is taken: a worker
                # killed after queueing it refuses the connection (ConnectionRefusedError) or is gone.
                if isinstance(self._worker, threading.Thread):
                    raise
                self._worker.join(timeout=5.0)
                if self._worker.is_alive():
                    raise
                raise self._died() from e

    def _died(self) -> DataWorkerDied:
        code = getattr(self._worker, "exitcode", None)
        msg = (
            f"the data worker process died (exit code {code}; -9 is a kill, often for memory): resume from the "
            "last checkpoint, with a lower prefetch or prefetch_worker='thread' if memory is short"
        )
        return DataWorkerDied(msg)

    def close(self) -> None:
        self._done = True  # a forked worker's copy of the source ran ahead: the loop's copy must not resume
        if self._stop is not None:
            self._stop.set()
        worker, self._worker = self._worker, None
        if isinstance(worker, threading.Thread):
            worker.join()
        elif worker is not None:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _produce(source: Iterator[Any], out: Any, stop: Any, in_process: bool) -> None:
    """The worker: ``(True, item)`` per item of ``source``, then ``(False, StopIteration())`` or
    ``(False, exception)``, until ``stop`` is set."""
    parent = os.getppid() if in_process else None
    if in_process:
        torch.set_num_threads(1)  # as DataLoader workers: the loop's process owns the cores

    def stopped() -> bool:
        # A loop killed outright (SIGKILL, out of memory) never sets ``stop``: its worker is then an orphan.
        return stop.is_set() or (parent is not None and os.getppid() != parent)

    def put(entry: tuple[bool, Any]) -> bool:
        while not stopped():
            try:
                out.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        if in_process:
            out.cancel_join_thread()  # exit without waiting for the loop to read what is queued
        return False

    try:
        for item in source:
            if not put((True, item)):
                return
        end: BaseException = StopIteration()
    except BaseException as e:  # handed to the loop, which raises it
        end = e
        if in_process:  # its traceback stays here: send it along, and the error itself if it pickles
            note = f"in the data worker:\n{traceback.format_exc().rstrip()}"
            try:
                pickle.dumps(e)
            except Exception:  # whatever stops it pickling: send what it says instead
                end = RuntimeError(f"{type(e).__name__}: {e}")
            end.add_note(note)
    if put((False, end)) and in_process:
        # The loop fetches a queued tensor's shared memory from this process when it takes the item, so
        # the process stays until the loop is done with it.
        while not stopped():
            stop.wait(timeout=1.0)
