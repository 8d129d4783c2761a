"""The Ray Data executor: the same stages and chunks as the local executor, spread over a Ray cluster.

The driver reads the input into the same deterministic chunks as the local executor, skips committed ones
and puts each pending chunk into Ray's object store as one block holding one row. Each stage is a
``map_batches`` step whose actors call ``stage.setup()`` once (the translator and the encoder load their
model once per actor, on a GPU when the config asks for one) and then take one chunk per call::

    driver: read → chunk 0, 1, 2 … ──put──► [translate actors] → [structure] → [lid] → [equivalence actors]
    driver: commit chunk i ◄──────────────────────────────────────────────────────────────────┘

A row is a whole chunk in flight (:class:`curate.executors.base.ChunkState` as Arrow IPC + JSON), so a batch can never
split a chunk or a group, every stage sees exactly the rows it sees locally, and the driver commits each
chunk through the same writer: shards, rejects and manifest are byte-identical to a local build, and a
re-run skips committed chunks the same way. Chunks come back in any order; records are put back in order.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from curate.config import RayConfig, RayStageConfig
from curate.executors.base import ChunkState, Executor, StageStats
from curate.readers import Chunk
from curate.stages.base import Stage
from curate.writer import ShardWriter
from schemas import UserError, import_optional
from schemas.threads import set_threads

_EXTRA = {"feature": "executor 'ray'", "install": "pip install 'polyalign[ray]'"}
ray = import_optional("ray", **_EXTRA)
import_optional("ray.data", **_EXTRA)  # Ray Data's own dependencies come with the same extra

# One row per chunk in flight: its tables as Arrow IPC streams (large_binary, so a chunk of any size fits
# in one value) and its counts as JSON. Plain data both ways: nothing is unpickled.
_STATE_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("rows", pa.large_binary()),
        ("rejected", pa.list_(pa.large_binary())),
        ("counts", pa.string()),
        ("error", pa.string()),  # a stage's set-up mistake, carried to the driver instead of the rows
    ]
)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)  # record batches as they are: the chunk's layout survives the trip
    return sink.getvalue().to_pybytes()


def _table(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


def pack(states: Iterable[ChunkState]) -> pa.Table:
    """Chunks in flight as rows of a Ray Data block."""
    states = list(states)
    counts = [
        {"read": s.read, "created": s.created, "rows": s.stats.rows, "seconds": s.stats.seconds}
        for s in states
    ]
    return pa.table(
        [
            pa.array([s.index for s in states], pa.int64()),
            pa.array([_ipc(s.rows) for s in states], pa.large_binary()),
            pa.array([[_ipc(t) for t in s.rejected] for s in states], pa.list_(pa.large_binary())),
            pa.array([json.dumps(c) for c in counts], pa.string()),
            pa.nulls(len(states), pa.string()),
        ],
        schema=_STATE_SCHEMA,
    )


def unpack(batch: pa.Table) -> Iterator[ChunkState]:
    for row in batch.to_pylist():
        counts = json.loads(row["counts"])
        yield ChunkState(
            index=row["index"],
            rows=_table(row["rows"]),
            rejected=[_table(blob) for blob in row["rejected"]],
            read=Counter(counts["read"]),
            created=Counter(counts["created"]),
            stats=StageStats(rows=Counter(counts["rows"]), seconds=Counter(counts["seconds"])),
        )


def failure(batch: pa.Table) -> str | None:
    """The user error a batch carries, if a stage could not start or process it."""
    errors = [e for e in batch.column("error").to_pylist() if e is not None]
    return errors[0] if errors else None


def with_failure(batch: pa.Table, error: str) -> pa.Table:
    index = batch.schema.get_field_index("error")
    return batch.set_column(index, "error", pa.array([error] * batch.num_rows, pa.string()))


class StageActor:
    """One stage in a Ray actor: its models load once, in the constructor, then one batch per call.

    A mistake that is the user's to fix (a missing model, an uninstalled translation pair, a rejected
    credential at the first request) travels to the driver in the batch and ends the build with the same
    one-line message as a local build, rather than as a dead actor's traceback.
    """

    def __init__(self, stage: Stage, threads: int | None = None) -> None:
        self.stage = stage
        self.error: str | None = None
        set_threads(threads)  # None: the actor's OMP_NUM_THREADS, which Ray sets to its num_cpus
        try:
            stage.setup()
        except UserError as e:
            self.error = str(e)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if failure(batch) is not None:
            return batch
        if self.error is not None:
            return with_failure(batch, self.error)
        try:
            return pack([state.advance(self.stage) for state in unpack(batch)])
        except UserError as e:
            return with_failure(batch, str(e))


class RayResourceWarning(UserWarning):
    """The stages ask for more of the cluster than it has."""


class RayExecutor(Executor):
    """Runs the stages on Ray Data; the driver commits each chunk, as :class:`LocalExecutor` does."""

    def __init__(
        self,
        stages: Sequence[Stage],
        writer: ShardWriter,
        *,
        config: RayConfig,
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(stages, writer, progress=progress)
        self.config = config
        self.threads = threads

    def process(self, chunks: Iterator[Chunk]) -> Iterator[ChunkState]:
        """Chunks as they leave the last stage, in whatever order they finish."""
        blocks: list[Any] = []
        started = False
        try:
            for chunk in chunks:
                if not ray.is_initialized():
                    # Only once there is work: a finished build re-runs without starting Ray.
                    ray.init(address=self.config.address)
                    started = True
                blocks.append(ray.put(pack([ChunkState.start(chunk)])))
            if blocks:
                self._check_resources()
                yield from self._stages(blocks)
        finally:
            if started:
                ray.shutdown()

    def _check_resources(self) -> None:
        """Warn when the stages' actors ask for more than the cluster has: every actor pool must start
        before chunks flow, so such a build waits until the cluster grows (or forever on a fixed one)."""
        have = ray.cluster_resources()
        for resource, setting in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
            asked = 0.0
            for stage in self.stages:
                actors = self.config.stages.get(stage.name, RayStageConfig())  # type: ignore[call-overload]
                asked += actors.actors * getattr(actors, setting)
            if asked > have.get(resource, 0.0):
                msg = (
                    f"the stages' Ray actors ask for {asked:g} {resource}s and the cluster has "
                    f"{have.get(resource, 0.0):g}: the build waits until it grows; to run on it as it is, lower "
                    f"executor.ray.stages.<stage>.{setting} or .actors (fractions are fine for light stages)"
                )
                warnings.warn(msg, RayResourceWarning, stacklevel=2)

    def _stages(self, blocks: list[Any]) -> Iterator[ChunkState]:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        dataset = ray.data.from_arrow_refs(blocks)
        for stage in self.stages:
            resources = self.config.stages.get(stage.name, RayStageConfig())  # type: ignore[call-overload]
            dataset = dataset.map_batches(
                StageActor,
                fn_constructor_kwargs={"stage": stage, "threads": self.threads},
                batch_size=1,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=resources.actors),
                num_cpus=resources.num_cpus,
                num_gpus=resources.num_gpus,
            )
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            error = failure(batch)
            if error is not None:
                raise UserError(error)
            yield from unpack(batch)
