"""A real full disk for the tests of what a write does when space runs out: a tmpfs of a few pages, mounted
for one test and grown when the test "frees space". Mounting needs root (CAP_SYS_ADMIN); elsewhere the
tests that use it are skipped, saying so."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE = 4096


@contextmanager
def small_disk(path: Path, size: int) -> Iterator[Callable[[int], None]]:
    """A tmpfs of ``size`` bytes (rounded up to pages) at ``path``; yields ``resize(bytes)``."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={_pages(size)}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"a full disk is a tmpfs of a few pages, and mounting one failed: {mount.stderr.strip()}")

    def resize(new_size: int) -> None:
        options = f"remount,size={_pages(new_size)}"
        subprocess.run(["mount", "-o", options, str(path)], check=True, capture_output=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True, capture_output=True)


def used_bytes(folder: Path) -> int:
    """What the files under ``folder`` take on a tmpfs: each file's size rounded up to whole pages."""
    return sum(_pages(p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _pages(size: int) -> int:
    return -(-size // PAGE) * PAGE
