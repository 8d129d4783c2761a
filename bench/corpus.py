"""Synthetic corpora for the benchmarks: the demo corpus grown by replication, and the rows it reads as.

Replica ``k`` of a record gets a fresh id (``ID~k``) and every message's text starts with ``(k)``: no text
repeats across replicas, so neither the translation cache nor an encoder's de-duplication can make a
grown corpus cheaper per row than real data of that size. Replica 0 is the demo corpus itself; lines
that are not JSON objects (the demo's deliberately bad lines) are copied into every replica.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from curate.config import InputConfig
from curate.readers import read_chunks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
TEXT_FIELDS = ("messages", "prompt", "response", "chosen", "rejected")


def _mark(value: Any, k: int) -> Any:
    """``value`` with its prose texts prefixed by ``(k)``: a message list, a message or a string."""
    if isinstance(value, str):
        return f"({k}) {value}" if value else value
    if isinstance(value, list):
        return [_mark(item, k) for item in value]
    if isinstance(value, dict) and value.get("role") in ("system", "user", "assistant"):
        return {**value, "content": _mark(value.get("content"), k)}
    return value


def grow(source: Path, out: Path, *, factor: int, records: int | None = None) -> Path:
    """Write ``factor`` replicas of the first ``records`` lines of ``source`` (all lines if None) to ``out``."""
    lines = source.read_bytes().splitlines()[:records]
    with out.open("wb") as f:
        for k in range(factor):
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if k == 0 or not isinstance(record, dict):
                    f.write(line + b"\n")
                    continue
                if isinstance(record.get("id"), str):
                    record["id"] = f"{record['id']}~{k}"
                for name in TEXT_FIELDS:
                    if name in record:
                        record[name] = _mark(record[name], k)
                f.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    return out


def read_rows(path: Path, *, langs: list[str], chunk_size: int, anchor_lang: str = "en") -> list[pa.Table]:
    """The rows ``curate build`` reads from ``path`` (anchors, and translations if pre-translated), in
    its chunks of ``chunk_size`` whole groups: the batches every stage receives."""
    chunks = read_chunks(
        [path], config=InputConfig(), anchor_lang=anchor_lang, langs=langs, chunk_size=chunk_size
    )
    return [chunk.rows for chunk in chunks]


def machine() -> str:
    """One line naming what the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {gpu}"
    )
