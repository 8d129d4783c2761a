"""The local streaming executor: runs the stages chunk by chunk, commits each chunk, skips committed ones.

Stages know nothing about files or executors; this module knows nothing about what a stage does. Memory is
bounded by one chunk (``write.chunk_size`` groups) whatever the size of the input. The steps of a chunk
(:func:`start`, :func:`advance` per stage, :func:`finish`) are shared with the Ray executor
(``curate.ray_executor``), which runs them in other processes: both commit the same rows in the same
chunks, so their output is byte-identical.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curate.readers import Chunk
from curate.stage import Stage
from curate.writer import ChunkRecord, ShardWriter
from schemas import LangCounts


@dataclass
class ChunkState:
    """A chunk part-way through the stages: the rows still in play and everything said about it so far.

    Executors move this between processes (the Ray executor runs each stage in its own actors), so it
    carries all that :func:`finish` needs to account for the chunk.
    """

    index: int
    rows: pa.Table
    rejected: list[pa.Table]
    read: Counter[str]
    seconds: dict[str, float] = field(default_factory=dict)
    rows_in: dict[str, int] = field(default_factory=dict)


@dataclass
class ChunkOutput:
    kept: pa.Table
    rejected: pa.Table
    counts: dict[str, LangCounts]
    seconds: dict[str, float] = field(default_factory=dict)
    rows_in: dict[str, int] = field(default_factory=dict)


def start(chunk: Chunk) -> ChunkState:
    """A chunk as read, before the first stage."""
    return ChunkState(index=chunk.index, rows=chunk.rows, rejected=[chunk.rejects], read=Counter(chunk.read))


def advance(state: ChunkState, stage: Stage) -> ChunkState:
    """Pass the chunk's rows through one stage, refusing a stage that loses rows."""
    rows = state.rows
    begin = time.perf_counter()
    result = stage.process(rows)
    seconds = time.perf_counter() - begin
    if rows.num_rows + sum(result.created.values()) != result.kept.num_rows + result.rejected.num_rows:
        msg = (
            f"stage {stage.name!r} lost rows in chunk {state.index}: {rows.num_rows} in + "
            f"{sum(result.created.values())} created != {result.kept.num_rows} kept + "
            f"{result.rejected.num_rows} rejected"
        )
        raise RuntimeError(msg)
    read = Counter(state.read)
    read.update(result.created)
    return ChunkState(
        index=state.index,
        rows=result.kept,
        rejected=[*state.rejected, result.rejected],
        read=read,
        seconds={**state.seconds, stage.name: seconds},
        rows_in={**state.rows_in, stage.name: rows.num_rows},
    )


def finish(state: ChunkState) -> ChunkOutput:
    """The chunk's kept rows, all its rejects and its per-language counts, checked to balance."""
    rejects = pa.concat_tables(state.rejected)
    return ChunkOutput(
        kept=state.rows,
        rejected=rejects,
        counts=count_rows(state.read, state.rows, rejects),
        seconds=state.seconds,
        rows_in=state.rows_in,
    )


def run_chunk(stages: Sequence[Stage], chunk: Chunk) -> ChunkOutput:
    """Pass one chunk through every stage and account for every row it read or created."""
    state = start(chunk)
    for stage in stages:
        state = advance(state, stage)
    return finish(state)


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


@dataclass
class StageStats:
    """Rows fed to each stage and seconds spent in it, over the chunks a run processed (skipped ones
    excluded); with the Ray executor the seconds are busy time summed over that stage's actors."""

    rows: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)

    def add(self, out: ChunkOutput) -> None:
        self.rows.update(out.rows_in)
        self.seconds.update(out.seconds)

    def to_json(self) -> str:
        stages = {
            name: {
                "rows": self.rows[name],
                "seconds": round(self.seconds[name], 6),
                "rows_per_s": round(self.rows[name] / self.seconds[name], 3) if self.seconds[name] else None,
            }
            for name in self.rows
        }
        return json.dumps(stages, indent=1)


class Executor(Protocol):
    """Runs the stages over every chunk not yet committed and commits it; returns every chunk's record,
    committed before or now, in chunk order."""

    stats: StageStats

    def run(self, chunks: Iterable[Chunk]) -> list[ChunkRecord]: ...


class LocalExecutor:
    """Runs chunks one after another in this process, with a progress bar per stage."""

    def __init__(self, stages: Sequence[Stage], writer: ShardWriter, *, progress: bool = True) -> None:
        self.stages = list(stages)
        self.writer = writer
        self.progress = progress
        self.stats = StageStats()

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
                    self.stats.add(out)
                    for name, n in out.rows_in.items():
                        bar.advance(stage_tasks[name], n)
                records.append(record)
                bar.advance(chunk_task)
        return records
