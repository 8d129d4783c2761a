"""Reading shards for training: ``ShardStream`` against pyarrow and ``datasets`` on the same rows.

The rows are the demo's pre-translated groups grown by replication and written by ``curate build``
(filters off, so every row lands in a shard); the same table is saved with ``Dataset.save_to_disk``.
``ShardStream`` hands every row to Python as a dict, in whole groups (in file order, and through its
default group shuffle buffer); pyarrow reads the same shards record batch by record batch
(``RecordBatch.to_pylist``, a dict per row); ``datasets`` iterates its copy in batches of 1,000
(``Dataset.iter``: a list per column, no dict per row) and row by row. All memory-map Arrow files.
Figures are rows per CPU-second, medians of ``--repeats`` interleaved runs; each ``ShardStream`` run is
a fresh epoch of one stream, whose start-up (checking every shard against the manifest) is timed apart.

    python bench/shards.py                 # ~1 min on 2 CPU cores
    python bench/shards.py --factor 512
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow as pa
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


def pyarrow_rows(shard_dir: Path) -> int:
    """Every row of every shard as a dict, record batch by record batch (``RecordBatch.to_pylist``)."""
    rows = 0
    for shard in Manifest.load(shard_dir).shards:
        with pa.memory_map(str(shard_dir / shard.file)) as source:
            reader = pa.ipc.open_file(source)
            for b in range(reader.num_record_batches):
                rows += len(reader.get_batch(b).to_pylist())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=128, help="replicas of the demo's 40 parallel groups")
    parser.add_argument("--chunk-size", type=int, default=256, help="groups per shard")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, dataset_dir = shards_and_dataset(Path(tmp), args.factor, args.chunk_size)
        start = time.process_time()
        in_order = ShardStream(shard_dir, shuffle_buffer=1)
        startup = time.process_time() - start
        shuffled = ShardStream(shard_dir)
        dataset = datasets.load_from_disk(str(dataset_dir))
        epochs = itertools.count(1)

        def epoch(stream: ShardStream) -> int:
            stream.set_epoch(next(epochs))  # a fresh epoch: the shards in another order, the same rows
            return sum(len(g.rows) for g in stream)

        readers: dict[str, Callable[[], int]] = {
            "ShardStream, file order": lambda: epoch(in_order),
            "ShardStream, shuffled": lambda: epoch(shuffled),
            "pyarrow to_pylist": lambda: pyarrow_rows(shard_dir),
            "datasets iter(1000)": lambda: sum(len(b["group_id"]) for b in dataset.iter(batch_size=1000)),
            "datasets row iteration": lambda: sum(1 for _ in dataset),
        }
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        rows = {}
        for _ in range(args.repeats):
            for name, read in readers.items():
                start = time.process_time()
                rows[name] = read()
                seconds[name].append(time.process_time() - start)
        manifest = Manifest.load(shard_dir)

    if len(set(rows.values())) != 1:
        msg = f"readers disagree on the number of rows: {rows}"
        raise RuntimeError(msg)
    n = next(iter(rows.values()))
    speed = {name: n / statistics.median(times) for name, times in seconds.items()}
    print(f"machine: {machine()}")
    groups = sum(s.groups for s in manifest.shards)
    print(
        f"{n} rows (en/es/de/fr) of {groups} groups in {len(manifest.shards)} shards, rows per CPU-second, "
        f"median of {args.repeats} interleaved runs"
    )
    print(f"{'reader':26} {'rows/s':>9} {'vs pyarrow':>11} {'vs datasets iter':>17}")
    for name, rate in speed.items():
        print(
            f"{name:26} {rate:9.0f} {rate / speed['pyarrow to_pylist']:10.2f}x "
            f"{rate / speed['datasets iter(1000)']:16.2f}x"
        )
    print(f"ShardStream start-up (each shard's sha256, schema and counts checked): {startup:.2f} CPU-s")
    for name in ("ShardStream, file order", "ShardStream, shuffled"):
        print(
            f"{name}: {speed[name] / speed['pyarrow to_pylist']:.2f}x pyarrow to_pylist, "
            f"{speed[name] / speed['datasets iter(1000)']:.2f}x datasets iter(batch_size=1000) (goal 1x both)"
        )


if __name__ == "__main__":
    main()
