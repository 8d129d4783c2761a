"""How many CPU threads torch and the BLAS libraries use: one place for training, evaluation and benches.

On a CPU every intra-op thread competes for the cores with the other processes of the machine. torch's
default (one thread per core) is right on an idle machine and wrong on a busy one: two threads on a 2-core
machine that is already half busy ran 4× slower than one, because each parallel region waits for its
slowest thread. The count is therefore chosen, in this order:

1. ``threads`` from the config (``threads: 4``, ``--set threads=4``);
2. ``OMP_NUM_THREADS`` from the environment (``torchrun`` sets it to 1 for several processes per node);
3. otherwise the cores this process may run on, shared among the processes of this node
   (``LOCAL_WORLD_SIZE``), less the cores other work already keeps busy (the 1-minute load average),
   and at least 1.

The same count goes to torch (``torch.set_num_threads``) and to the BLAS and OpenMP pools that numpy and
others load (through ``threadpoolctl`` when it is installed), so no library starts its own default.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

import torch

Source = Literal["config", "OMP_NUM_THREADS", "default"]


class Threads(NamedTuple):
    """The thread count chosen and where it came from (for the run's log)."""

    count: int
    source: Source

    def __str__(self) -> str:
        return f"{self.count} CPU thread{'s' if self.count != 1 else ''} ({self.source})"


def default_threads() -> int:
    """Cores available to this process, shared among this node's processes, less the busy ones."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    share = max(1, cores // local)
    try:
        busy = os.getloadavg()[0] / local
    except OSError:  # no load average on this platform
        busy = 0.0
    return max(1, min(share, round(share - busy)))


def choose_threads(threads: int | None) -> Threads:
    """The thread count for ``threads`` (None: the environment, then the default), without setting it."""
    if threads is not None:
        if threads < 1:
            msg = f"threads={threads} is invalid: expected at least 1 (or None for the default)"
            raise ValueError(msg)
        return Threads(threads, "config")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return Threads(int(env), "OMP_NUM_THREADS")
    return Threads(default_threads(), "default")


def set_threads(threads: int | None = None) -> Threads:
    """Choose the thread count (see the module docstring) and give it to torch and the BLAS pools."""
    chosen = choose_threads(threads)
    torch.set_num_threads(chosen.count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS keeps its own default; torch, which does the work here, is set
        return chosen
    threadpool_limits(chosen.count)
    return chosen
