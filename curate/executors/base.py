"""What every executor shares: a chunk in flight through the stages, its accounting, and "skip committed".

Stages know nothing about files or executors; executors know nothing about what a stage does. A chunk is
read (:class:`curate.readers.Chunk`), passes through the stages as a :class:`ChunkState` (each stage
returning a :class:`~curate.stages.base.StageResult`), and is committed by the writer as a
:class:`~curate.writer.ChunkRecord`. :class:`Executor` owns the loop around that: chunks already committed
are skipped, every other one is processed (where and how is the subclass's business) and committed, and
the per-stage :class:`StageStats` of every chunk are summed. Both executors commit the same rows in the
same chunks, so their output is byte-identical.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from curate.readers import Chunk
from curate.stages.base import Stage
from curate.writer import ChunkRecord, ShardWriter
from schemas import LangCounts


@dataclass
class StageStats:
    """Rows fed to each stage and seconds spent in it; one per chunk, summed with ``+`` over a run (with
    the Ray executor the seconds are busy time summed over that stage's actors)."""

    rows: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: StageStats) -> StageStats:
        rows, seconds = Counter(self.rows), Counter(self.seconds)
        rows.update(other.rows)  # update, not +: a stage fed 0 rows keeps its entry
        seconds.update(other.seconds)
        return StageStats(rows=rows, seconds=seconds)

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


@dataclass
class ChunkState:
    """A chunk part-way through the stages: the rows still in play and everything said about it so far.

    ``read`` counts the input records per language, ``created`` the rows stages added (translations);
    every row read or created ends kept or rejected. The Ray executor moves this between processes, so it
    carries all that :meth:`commit` needs.
    """

    index: int
    rows: pa.Table
    rejected: list[pa.Table]
    read: Counter[str]
    created: Counter[str] = field(default_factory=Counter)
    stats: StageStats = field(default_factory=StageStats)

    @classmethod
    def start(cls, chunk: Chunk) -> ChunkState:
        """A chunk as read, before the first stage."""
        return cls(index=chunk.index, rows=chunk.rows, rejected=[chunk.rejects], read=Counter(chunk.read))

    def advance(self, stage: Stage) -> ChunkState:
        """The chunk after one more stage, refusing a stage that loses rows."""
        begin = time.perf_counter()
        result = stage.process(self.rows)
        seconds = time.perf_counter() - begin
        created = sum(result.created.values())
        if self.rows.num_rows + created != result.kept.num_rows + result.rejected.num_rows:
            msg = (
                f"stage {stage.name!r} lost rows in chunk {self.index}: {self.rows.num_rows} in + "
                f"{created} created != {result.kept.num_rows} kept + {result.rejected.num_rows} rejected"
            )
            raise RuntimeError(msg)
        step = StageStats(
            rows=Counter({stage.name: self.rows.num_rows}), seconds=Counter({stage.name: seconds})
        )
        return ChunkState(
            index=self.index,
            rows=result.kept,
            rejected=[*self.rejected, result.rejected],
            read=self.read,
            created=self.created + result.created,
            stats=self.stats + step,
        )

    def commit(self, writer: ShardWriter) -> ChunkRecord:
        """Write the chunk's kept rows and all its rejects once every row read or created is accounted for."""
        rejects = pa.concat_tables(self.rejected)
        counts = count_rows(self.read + self.created, self.rows, rejects)
        return writer.commit(self.index, self.rows, rejects, counts)


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


def run_chunk(stages: Sequence[Stage], chunk: Chunk) -> ChunkState:
    """One chunk through every stage, in this process."""
    state = ChunkState.start(chunk)
    for stage in stages:
        state = state.advance(stage)
    return state


class Executor(ABC):
    """Runs the stages over every chunk not yet committed and commits it.

    Subclasses implement :meth:`process`: where and how pending chunks pass through the stages.
    """

    def __init__(self, stages: Sequence[Stage], writer: ShardWriter, *, progress: bool = True) -> None:
        self.stages = list(stages)
        self.writer = writer
        self.progress = progress
        self.stats = StageStats()

    def run(self, chunks: Iterable[Chunk]) -> list[ChunkRecord]:
        """Every chunk's record, committed before or now, in chunk order."""
        records: dict[int, ChunkRecord] = {}

        def pending() -> Iterator[Chunk]:
            for chunk in chunks:
                record = self.writer.committed(chunk.index)
                if record is None:
                    yield chunk
                else:
                    records[chunk.index] = record

        for state in self.process(pending()):
            records[state.index] = state.commit(self.writer)
            self.stats += state.stats
        return [records[index] for index in sorted(records)]

    @abstractmethod
    def process(self, chunks: Iterator[Chunk]) -> Iterator[ChunkState]:
        """Each chunk after the last stage, in any order; ``chunks`` is consumed lazily."""
