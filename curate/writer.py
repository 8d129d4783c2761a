"""Arrow IPC shards, written atomically, and the per-chunk completion markers that make a build resumable.

Layout of an output directory::

    OUT/shards/part-000000.arrow     kept rows of chunk 0, sorted by (group_id, lang)
    OUT/rejects/part-000000.arrow    rejected rows of chunk 0 with stage and reason
    OUT/.state/chunks/000000.json    written last: chunk 0 is committed
    OUT/manifest.json                written at the end from the markers
    OUT/README.md                    the dataset card, from the manifest (curate.card)

A file is written under a temporary name and renamed when complete, so a killed build leaves either a
whole file or none; a chunk counts as done only once its marker exists and its files match their hashes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from schemas import ConfigError, LangCounts, ShardInfo, sha256_file

SHARDS_DIR = "shards"
REJECTS_DIR = "rejects"
STATE_DIR = ".state"
RECORD_BATCH_ROWS = 1024
PART_GLOB = "part-*.arrow"
"""The files of ``shards/`` or ``rejects/`` a build wrote, and nothing else (a temporary file starts with a dot)."""


@dataclass
class ChunkRecord:
    """What a committed chunk produced; persisted as its completion marker."""

    index: int
    shard: ShardInfo | None
    rejects: ShardInfo | None
    counts: dict[str, LangCounts] = field(default_factory=dict)

    def to_json(self) -> str:
        payload = {
            "index": self.index,
            "shard": self.shard.model_dump() if self.shard else None,
            "rejects": self.rejects.model_dump() if self.rejects else None,
            "counts": {lang: c.model_dump() for lang, c in sorted(self.counts.items())},
        }
        return json.dumps(payload, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChunkRecord:
        data = json.loads(text)
        return cls(
            index=data["index"],
            shard=ShardInfo(**data["shard"]) if data["shard"] else None,
            rejects=ShardInfo(**data["rejects"]) if data["rejects"] else None,
            counts={lang: LangCounts(**c) for lang, c in data["counts"].items()},
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``OUT/.state/lock`` for the duration of a build: a second build into the same folder (which
    would race on its chunks and its config check) stops at once with one line naming the holder.

    ``flock`` locks are released by the kernel when the process dies, so a killed build leaves no stale lock.
    """
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    with (state / "lock").open("a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            msg = (
                f"{out} is being written by another build ({holder}): wait for it to end or use another --out"
            )
            raise ConfigError(msg) from None
        f.seek(0)
        f.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


class ShardWriter:
    """Writes one chunk's kept and rejected rows, and its marker, under ``out``."""

    def __init__(self, out: Path, *, compression: str = "zstd") -> None:
        self.out = out
        self.options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        for sub in (SHARDS_DIR, REJECTS_DIR, f"{STATE_DIR}/chunks"):
            (out / sub).mkdir(parents=True, exist_ok=True)

    def marker_path(self, index: int) -> Path:
        return self.out / STATE_DIR / "chunks" / f"{index:06d}.json"

    def committed(self, index: int) -> ChunkRecord | None:
        """The chunk's record if it was committed and its files are intact, else None (redo it)."""
        marker = self.marker_path(index)
        if not marker.is_file():
            return None
        record = ChunkRecord.from_json(marker.read_text(encoding="utf-8"))
        for info in (record.shard, record.rejects):
            if info is not None:
                path = self.out / info.file
                if not path.is_file() or sha256_file(path) != info.sha256:
                    return None
        return record

    def commit(
        self, index: int, kept: pa.Table, rejected: pa.Table, counts: dict[str, LangCounts]
    ) -> ChunkRecord:
        kept = kept.sort_by([("group_id", "ascending"), ("lang", "ascending")])
        name = PART_GLOB.replace("*", f"{index:06d}")
        shard = self._write(kept, f"{SHARDS_DIR}/{name}") if kept.num_rows else None
        rej = self._write(rejected, f"{REJECTS_DIR}/{name}") if rejected.num_rows else None
        record = ChunkRecord(index=index, shard=shard, rejects=rej, counts=counts)
        atomic_write_bytes(self.marker_path(index), record.to_json().encode())
        return record

    def _write(self, table: pa.Table, relative: str) -> ShardInfo:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema, options=self.options) as writer:
            # One layout whatever the in-memory chunking (stages, executors): equal rows give equal bytes.
            writer.write_table(table.combine_chunks(), max_chunksize=RECORD_BATCH_ROWS)
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(self.out / relative, data)
        langs = Counter(lang or "und" for lang in table.column("lang").to_pylist())
        return ShardInfo(
            file=relative,
            rows=table.num_rows,
            groups=len(pc.unique(table.column("group_id"))),
            sha256=hashlib.sha256(data).hexdigest(),
            langs=dict(sorted(langs.items())),
        )
