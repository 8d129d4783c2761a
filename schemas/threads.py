"""How many CPU threads a process computes with: one rule for ``curate`` and ``align-train``, and for every
pool in the process (torch, the BLAS and OpenMP libraries behind numpy and the encoders, ONNX Runtime,
CTranslate2).

On a CPU every thread competes for the cores with the other processes of the machine. The libraries'
defaults (one thread per core, or a fixed few) are right on an idle machine and wrong on a busy one: two
threads on a 2-core machine that is already half busy ran 4× slower than one, because each parallel
region waits for its slowest thread. The count is therefore chosen, in this order:

1. ``threads`` from the config (``threads: 4``, ``--set threads=4``);
2. ``OMP_NUM_THREADS`` from the environment (``torchrun`` sets it to 1 for several processes per node, Ray
   to an actor's ``num_cpus``);
3. otherwise the cores this process may run on, shared among the processes of this node
   (``LOCAL_WORLD_SIZE``), less the cores other work already keeps busy (the 1-minute load average),
   and at least 1.

:func:`set_threads` gives the count to the pools of the whole process; a component with a pool of its own
(an ONNX Runtime session, a CTranslate2 translator, the USE encoder's BLAS limit) takes
``choose_threads(threads).count`` for the same setting.
"""

from __future__ import annotations

import os
import sys
from typing import Literal, NamedTuple

Source = Literal["config", "OMP_NUM_THREADS", "default"]
# Read when a library starts its pool: set before torch, OpenBLAS, MKL or an OpenMP runtime loads, they
# start with the count instead of one thread per core.
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
    """Choose the thread count (see the module docstring) and give it to every pool of this process: the
    environment of the libraries not loaded yet, torch if it is, and the BLAS and OpenMP libraries already
    loaded (through ``threadpoolctl``)."""
    chosen = choose_threads(threads)
    for name in POOL_VARIABLES:
        os.environ[name] = str(chosen.count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(chosen.count)
    from threadpoolctl import threadpool_limits

    threadpool_limits(chosen.count)
    return chosen
