"""Reading shards for training: ``ShardStream`` against ``datasets.load_from_disk`` on the same rows.

The rows are the demo's pre-translated groups grown by replication and written by ``curate build``
(filters off, so every row lands in a shard); the same table is saved with ``Dataset.save_to_disk``.
Each reader then hands every row to Python as a dict: ``ShardStream`` as whole groups (in file order,
and through its default group shuffle buffer), ``datasets`` by iterating the dataset row by row. Both
memory-map Arrow files. Timings are the best of ``--repeats``, interleaved.

    python bench/shards.py                 # ~30 s on 2 CPU cores
    python bench/shards.py --factor 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
from corpus import DEMO, ROOT, grow, machine

from align_train.data.shard_stream import ShardStream
from curate.build import build
from curate.config import BuildConfig
from schemas import Manifest
from schemas.config_io import load_config


def shards_and_dataset(tmp: Path, factor: int, chunk_size: int) -> tuple[Path, Path]:
    """A ``curate build`` output of the grown corpus, and the same rows as a ``save_to_disk`` folder."""
    source = grow(DEMO / "parallel.jsonl", tmp / "parallel.jsonl", factor=factor)
    overrides = {"inputs": [str(source)], "out": str(tmp / "shards")}
    sets = [f"write.chunk_size={chunk_size}", "report=false"]
    sets += [f"{stage}.enabled=false" for stage in ("structure", "lid", "equivalence")]
    config = load_config(
        BuildConfig, ROOT / "examples" / "demo_pretranslated.yaml", flags=overrides, overrides=sets
    )
    build(config, progress=False)
    files = [str(tmp / "shards" / s.file) for s in Manifest.load(tmp / "shards").shards]
    loaded = datasets.load_dataset("arrow", data_files=files, split="train", cache_dir=str(tmp / "cache"))
    loaded.save_to_disk(str(tmp / "dataset"))
    return tmp / "shards", tmp / "dataset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=128, help="replicas of the demo's 40 parallel groups")
    parser.add_argument("--chunk-size", type=int, default=256, help="groups per shard")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, dataset_dir = shards_and_dataset(Path(tmp), args.factor, args.chunk_size)
        readers: dict[str, Callable[[], int]] = {
            "ShardStream, file order": lambda: sum(
                len(g.rows) for g in ShardStream(shard_dir, shuffle_buffer=1)
            ),
            "ShardStream, shuffled": lambda: sum(len(g.rows) for g in ShardStream(shard_dir)),
            "datasets row iteration": lambda: sum(1 for _ in datasets.load_from_disk(str(dataset_dir))),
        }
        best = dict.fromkeys(readers, float("inf"))
        rows = {}
        for _ in range(args.repeats):
            for name, read in readers.items():
                start = time.perf_counter()
                rows[name] = read()
                best[name] = min(best[name], time.perf_counter() - start)
        manifest = Manifest.load(shard_dir)

    if len(set(rows.values())) != 1:
        msg = f"readers disagree on the number of rows: {rows}"
        raise RuntimeError(msg)
    n = next(iter(rows.values()))
    print(f"machine: {machine()}")
    groups = sum(s.groups for s in manifest.shards)
    print(
        f"{n} rows (en/es/de/fr) of {groups} groups in {len(manifest.shards)} shards, best of {args.repeats}"
    )
    print(f"{'reader':26} {'rows/s':>9} {'vs datasets':>12}")
    base = n / best["datasets row iteration"]
    for name, seconds in best.items():
        print(f"{name:26} {n / seconds:9.0f} {n / seconds / base:11.2f}x")


if __name__ == "__main__":
    main()
