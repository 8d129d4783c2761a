"""The local streaming executor: runs the stages chunk by chunk, commits each chunk, skips committed ones.

Stages know nothing about files or executors; this module knows nothing about what a stage does. Memory is
bounded by one chunk (``write.chunk_size`` groups) whatever the size of the input.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curate.readers import Chunk
from curate.stage import Stage
from curate.writer import ChunkRecord, ShardWriter
from schemas import LangCounts


@dataclass
class ChunkOutput:
    kept: pa.Table
    rejected: pa.Table
    counts: dict[str, LangCounts]
    seconds: dict[str, float] = field(default_factory=dict)
    rows_in: dict[str, int] = field(default_factory=dict)


def run_chunk(stages: Sequence[Stage], chunk: Chunk) -> ChunkOutput:
    """Pass one chunk through every stage and account for every row it read or created."""
    read: Counter[str] = Counter(chunk.read)
    rejected = [chunk.rejects]
    rows = chunk.rows
    seconds: dict[str, float] = {}
    rows_in: dict[str, int] = {}
    for stage in stages:
        rows_in[stage.name] = rows.num_rows
        start = time.perf_counter()
        result = stage.process(rows)
        seconds[stage.name] = time.perf_counter() - start
        if rows.num_rows + sum(result.created.values()) != result.kept.num_rows + result.rejected.num_rows:
            msg = (
                f"stage {stage.name!r} lost rows in chunk {chunk.index}: {rows.num_rows} in + "
                f"{sum(result.created.values())} created != {result.kept.num_rows} kept + "
                f"{result.rejected.num_rows} rejected"
            )
            raise RuntimeError(msg)
        read.update(result.created)
        rejected.append(result.rejected)
        rows = result.kept
    rejects = pa.concat_tables(rejected)
    return ChunkOutput(
        kept=rows, rejected=rejects, counts=count_rows(read, rows, rejects), seconds=seconds, rows_in=rows_in
    )


def count_rows(read: Counter[str], kept: pa.Table, rejects: pa.Table) -> dict[str, LangCounts]:
    """Per-language read/kept/rejected-by-reason; raises if any language does not balance."""
    kept_by_lang = Counter(kept.column("lang").to_pylist())
    rejected: dict[str, Counter[str]] = defaultdict(Counter)
    for lang, stage, reason in zip(
        rejects.column("lang").to_pylist(),
        rejects.column("stage").to_pylist(),
        rejects.column("reason").to_pylist(),
        strict=True,
    ):
        rejected[lang or "und"][f"{stage}.{reason}"] += 1
    counts = {}
    for lang in sorted(set(read) | set(kept_by_lang) | set(rejected)):
        c = LangCounts(
            read=read[lang], kept=kept_by_lang[lang], rejected=dict(sorted(rejected[lang].items()))
        )
        if not c.balanced:
            msg = f"rows do not balance for {lang!r}: read {c.read} != kept {c.kept} + rejected {c.rejected}"
            raise RuntimeError(msg)
        counts[lang] = c
    return counts


class LocalExecutor:
    """Runs chunks one after another in this process, with a progress bar per stage."""

    def __init__(self, stages: Sequence[Stage], writer: ShardWriter, *, progress: bool = True) -> None:
        self.stages = list(stages)
        self.writer = writer
        self.progress = progress
        self.seconds: Counter[str] = Counter()
        self.rows_in: Counter[str] = Counter()

    def run(self, chunks: Iterable[Chunk]) -> list[ChunkRecord]:
        records: list[ChunkRecord] = []
        bar = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            disable=not self.progress,
        )
        with bar if self.progress else nullcontext():
            chunk_task = bar.add_task("chunks", total=None)
            stage_tasks = {s.name: bar.add_task(s.name, total=None) for s in self.stages}
            for stage in self.stages:
                stage.setup()
            for chunk in chunks:
                record = self.writer.committed(chunk.index)
                if record is None:
                    out = run_chunk(self.stages, chunk)
                    record = self.writer.commit(chunk.index, out.kept, out.rejected, out.counts)
                    self.seconds.update(out.seconds)
                    self.rows_in.update(out.rows_in)
                    for name, n in out.rows_in.items():
                        bar.advance(stage_tasks[name], n)
                records.append(record)
                bar.advance(chunk_task)
        return records
