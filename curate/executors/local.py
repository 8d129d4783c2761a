"""The local streaming executor: chunk after chunk in this process, memory bounded by one chunk
(``write.chunk_size`` groups) whatever the size of the input, with a progress bar per stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curate.executors.base import ChunkState, Executor, run_chunk
from curate.readers import Chunk


class LocalExecutor(Executor):
    """Runs chunks one after another in this process."""

    def process(self, chunks: Iterator[Chunk]) -> Iterator[ChunkState]:
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
                state = run_chunk(self.stages, chunk)
                for name, n in state.stats.rows.items():
                    bar.advance(stage_tasks[name], n)
                bar.advance(chunk_task)
                yield state
