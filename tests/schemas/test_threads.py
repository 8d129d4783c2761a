"""The CPU thread count: config, then OMP_NUM_THREADS, then the idle cores of this node's share; given to
every pool of the process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from schemas import threads as threads_module
from schemas.threads import POOL_VARIABLES, Threads, choose_threads, default_threads, set_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = torch.get_num_threads()
    for name in POOL_VARIABLES:  # set_threads writes them; monkeypatch puts them back
        monkeypatch.setenv(name, os.environ.get(name, ""))
    yield
    set_threads(before)


def test_config_wins_then_the_environment_then_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(2) == Threads(2, "config")
    assert choose_threads(None) == Threads(3, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert choose_threads(None) == Threads(default_threads(), "default")
    assert str(Threads(1, "default")) == "1 CPU thread (default)"
    with pytest.raises(ValueError, match="threads=0 is invalid"):
        choose_threads(0)


@pytest.mark.parametrize(
    ("cores", "local", "load", "expected"),
    [
        (16, 1, 0.0, 16),  # an idle machine: every core
        (16, 4, 0.0, 4),  # four ranks on the node share the cores
        (2, 1, 1.8, 1),  # a busy 2-core machine: one thread, never zero
        (32, 2, 16.0, 8),  # half of the machine busy: each rank's share less its part of the load
        (8, 1, 20.0, 1),
    ],
)
def test_default_is_the_idle_share_of_the_node(
    monkeypatch: pytest.MonkeyPatch, cores: int, local: int, load: float, expected: int
) -> None:
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert default_threads() == expected


def test_set_threads_sets_torch_the_blas_pools_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadpoolctl import threadpool_info

    monkeypatch.setitem(os.environ, "OMP_NUM_THREADS", "1")
    assert set_threads(None) == Threads(1, "OMP_NUM_THREADS")
    assert torch.get_num_threads() == 1
    assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    set_threads(3)
    assert torch.get_num_threads() == 3
    assert {pool["num_threads"] for pool in threadpool_info()} == {3}
    # Libraries loaded from now on (an OpenMP runtime, OpenBLAS) start with the same count.
    assert {os.environ[name] for name in POOL_VARIABLES} == {"3"}
    assert choose_threads(None) == Threads(3, "OMP_NUM_THREADS")


def test_a_process_started_after_set_threads_starts_its_pools_with_the_count() -> None:
    """What a worker process or a library loaded later sees: torch and numpy's BLAS start with the count."""
    probe = (
        "import numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}))\n"
    )
    set_threads(2)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split(maxsplit=1) == ["2", "[2]\n"]
