"""Helpers shared by the end-to-end build tests: the demo input, the build command line, its outputs."""

from __future__ import annotations

import json
from pathlib import Path

from tests import ROOT

DEMO = ROOT / "examples" / "demo"
BAD_LINES = 14  # the demo source ends with its deliberately bad lines


def demo_input(folder: Path, good: int) -> Path:
    """The first ``good`` demo rows plus every deliberately bad line, to keep a run short, and one repeat of
    the first row under another id (a ``dedup.exact`` reject)."""
    lines = (DEMO / "source.jsonl").read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    repeat = json.dumps({**first, "id": f"{first['id']}-again"}).encode() + b"\n"
    path = folder / "source.jsonl"
    path.write_bytes(b"".join([*lines[:good], repeat, *lines[-BAD_LINES:]]))
    return path


def build_args(out: Path, source: Path, *extra: str, chunk_size: int) -> list[str]:
    """``curate build`` of the demo config on ``source``, as CLI arguments."""
    return [
        "build",
        str(ROOT / "examples" / "demo.yaml"),
        "--input",
        str(source),
        "--out",
        str(out),
        "--set",
        f"write.chunk_size={chunk_size}",
        "--no-progress",
        *extra,
    ]


def outputs(out: Path) -> dict[str, bytes]:
    """Every file a build delivers: shards, rejects and the manifest."""
    paths = [*out.glob("shards/*.arrow"), *out.glob("rejects/*.arrow"), out / "manifest.json"]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(paths)}
