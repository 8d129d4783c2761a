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
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate.config import RayConfig, RayStageConfig
from curate.executors.base import ChunkState, Executor, StageStats
from curate.readers import Chunk
from curate.stages.base import Stage
from curate.writer import ShardWriter
from schemas import ConfigError, UserError, import_optional
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
    """The stages ask for more of an autoscaling cluster than it has now: the build waits for it to grow."""


# Stages that load a model (a translator, an encoder) get a whole CPU per actor by default; the others
# (fastText, string checks) a quarter.
HEAVY_STAGES = frozenset({"translate", "equivalence"})
LIGHT_CPUS = 0.25
_GRAIN = 10_000  # Ray counts resources in steps of 0.0001


@dataclass(frozen=True)
class ActorResources:
    """What each actor of one stage reserves, and how many there are."""

    actors: int
    num_cpus: float
    num_gpus: float


def plan_resources(
    stages: Sequence[str], config: RayConfig, *, nodes: Sequence[dict[str, float]], local: bool
) -> dict[str, ActorResources]:
    """Each stage's actors and what each reserves, on a cluster whose live nodes have ``nodes`` resources.

    Every actor pool must start before chunks flow, so a request the cluster cannot hold would wait
    forever. On a ``local`` instance (this machine, which cannot grow) the CPUs of stages whose
    ``num_cpus`` is unset are scaled down until every actor fits. What still cannot fit is a
    :class:`ConfigError` naming the settings to change, unless ``config.autoscale`` says the cluster adds
    nodes when actors wait (then a :class:`RayResourceWarning`).
    """
    settings = {name: config.stages.get(name, RayStageConfig()) for name in stages}  # type: ignore[call-overload]
    unset = {name for name, s in settings.items() if s.num_cpus is None}
    cpus = {
        name: (1.0 if name in HEAVY_STAGES else LIGHT_CPUS) if s.num_cpus is None else s.num_cpus
        for name, s in settings.items()
    }
    total = {r: sum(node.get(r, 0.0) for node in nodes) for r in ("CPU", "GPU")}
    largest = {r: max((node.get(r, 0.0) for node in nodes), default=0.0) for r in ("CPU", "GPU")}
    if local:
        fixed = sum(settings[n].actors * cpus[n] for n in settings if n not in unset)
        flexible = sum(settings[n].actors * cpus[n] for n in unset)
        if flexible and fixed + flexible > total["CPU"]:
            scale = max(total["CPU"] - fixed, 0.0) / flexible
            cpus |= {n: math.floor(cpus[n] * scale * _GRAIN) / _GRAIN for n in unset}
    gpus = {name: s.num_gpus for name, s in settings.items()}
    where = "this machine's local Ray instance" if local else "the Ray cluster"
    for resource, setting, per_actor in (("CPU", "num_cpus", cpus), ("GPU", "num_gpus", gpus)):
        problems = [
            f"executor.ray.stages.{name}.{setting}={value:g} is more than any node of {where} has "
            f"({largest[resource]:g} {resource}s)"
            for name, value in per_actor.items()
            if value > largest[resource] + 1e-9
        ]
        asked = sum(settings[name].actors * value for name, value in per_actor.items())
        if asked > total[resource] + 1e-9:
            problems.append(
                f"the stages' actors ask for {asked:g} {resource}s and {where} has {total[resource]:g}"
            )
        if not problems:
            continue
        fix = (
            f"lower executor.ray.stages.<stage>.{setting} or .actors (fractions are fine for light stages)"
            + (
                ", or leave num_cpus unset to fit the actors on this machine"
                if local and resource == "CPU"
                else ""
            )
        )
        if config.autoscale and not local:
            msg = f"{problems[0]}: the build waits until the cluster grows; to run on it as it is, {fix}"
            warnings.warn(msg, RayResourceWarning, stacklevel=2)
            continue
        grows = "" if local else " (set executor.ray.autoscale=true if it adds nodes when actors wait)"
        msg = f"{problems[0]}, so the build would wait forever{grows}: {fix}"
        raise ConfigError(msg)
    return {name: ActorResources(settings[name].actors, cpus[name], gpus[name]) for name in settings}


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
        plan: dict[str, ActorResources] | None = None
        try:
            for chunk in chunks:
                if plan is None:
                    # Only once there is work: a finished build re-runs without starting Ray.
                    local = False
                    if not ray.is_initialized():
                        local = self._start()
                        started = True
                    plan = self._plan(local=local)
                blocks.append(ray.put(pack([ChunkState.start(chunk)])))
            if plan is not None:
                yield from self._stages(blocks, plan)
        finally:
            if started:
                ray.shutdown()

    def _start(self) -> bool:
        """Start or join Ray as ``address`` says; True when that started a local instance.

        ``address`` None without ``RAY_ADDRESS`` starts a new local instance rather than joining whatever
        instance was started last on this machine (what ``ray.init()`` would do): the build's resources are
        then this machine's, known and fixed.
        """
        address = self.config.address
        if address is None and not os.environ.get("RAY_ADDRESS"):
            address = "local"
        ray.init(address=address)
        return address == "local"

    def _plan(self, *, local: bool) -> dict[str, ActorResources]:
        nodes = [
            {key: float(value) for key, value in node["Resources"].items()}
            for node in ray.nodes()
            if node["Alive"]
        ]
        return plan_resources([stage.name for stage in self.stages], self.config, nodes=nodes, local=local)

    def _stages(self, blocks: list[Any], plan: dict[str, ActorResources]) -> Iterator[ChunkState]:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        dataset = ray.data.from_arrow_refs(blocks)
        for stage in self.stages:
            resources = plan[stage.name]
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
