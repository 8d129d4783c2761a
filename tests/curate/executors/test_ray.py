"""The Ray executor against the local one on the demo data: same bytes out, same resume, on a real Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import RayConfig
from curate.executors.base import ChunkState
from curate.executors.ray import (
    ActorResources,
    RayExecutor,
    RayResourceWarning,
    StageActor,
    failure,
    pack,
    plan_resources,
)
from curate.readers import Chunk
from curate.stages.base import Stage, StageResult, empty_rejects
from curate.writer import ChunkRecord, ShardWriter
from schemas import ConfigError
from tests import ROOT
from tests.curate.builds import build_args, demo_input, outputs
from tests.curate.rows import row, table

CHUNK_SIZE = 6
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A two-CPU Ray instance on this machine for the whole module; builds join it instead of starting one."""
    import ray

    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 good demo rows and every deliberately bad line: 7 chunks of 6 groups, two of them all rejects."""
    return demo_input(tmp_path_factory.mktemp("input"), good=24)


# Two translate actors, so chunks can finish out of order; fractional CPUs so all six actors fit on 2.
RAY_FLAGS = (
    "--executor",
    "ray",
    "--set",
    "executor.ray.stages.translate={actors: 2, num_cpus: 0.25}",
    "--set",
    "executor.ray.stages.anchor_lid.num_cpus=0.25",
    "--set",
    "executor.ray.stages.structure.num_cpus=0.25",
    "--set",
    "executor.ray.stages.lid.num_cpus=0.25",
    "--set",
    "executor.ray.stages.equivalence.num_cpus=0.5",
)


def _build(out: Path, source: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, build_args(out, source, *extra, chunk_size=CHUNK_SIZE))
    assert result.exit_code == 0, result.output


def _stage_rows(out: Path) -> dict[str, int]:
    stages = json.loads((out / ".state" / "stages.json").read_text())
    return {name: s["rows"] for name, s in stages.items()}


@pytest.fixture(scope="module")
def local_build(tmp_path_factory: pytest.TempPathFactory, demo_subset: Path) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    _build(out, demo_subset)
    return out


def test_ray_build_is_byte_identical_to_local(
    ray_address: str, local_build: Path, demo_subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    _build(out, demo_subset, *RAY_FLAGS)
    assert outputs(out) == outputs(local_build)
    assert len(list(out.glob("shards/*.arrow"))) >= 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(c["read"] == c["kept"] + sum(c["rejected"].values()) for c in manifest["counts"].values())
    assert "executor" not in manifest["config"]
    assert _stage_rows(out) == _stage_rows(local_build)


def test_ray_resumes_a_local_build_redoing_only_what_is_missing(
    ray_address: str, local_build: Path, demo_subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(local_build, out)
    markers = out / ".state" / "chunks"
    redo = {1: "marker gone", 3: "marker gone", 4: "shard damaged"}
    records = {i: ChunkRecord.from_json((markers / f"{i:06d}.json").read_text()) for i in redo}
    (out / "manifest.json").unlink()
    for index, damage in redo.items():
        if damage == "marker gone":
            (markers / f"{index:06d}.json").unlink()
        else:
            shard = records[index].shard
            assert shard is not None
            (out / shard.file).write_bytes(b"half a file")

    _build(out, demo_subset, *RAY_FLAGS)

    assert outputs(out) == outputs(local_build)
    # Only the three damaged chunks ran: translate saw exactly their anchors (those no stage before it
    # rejected).
    before_translate = ("read.", "dedup.", "anchor_lid.")
    anchors = sum(
        r.counts["en"].read
        - sum(n for reason, n in r.counts["en"].rejected.items() if reason.startswith(before_translate))
        for r in records.values()
    )
    assert _stage_rows(out)["translate"] == anchors < _stage_rows(local_build)["translate"]


def test_killed_ray_build_resumes_byte_identical(
    ray_address: str, local_build: Path, demo_subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "curate",
        *build_args(out, demo_subset, *RAY_FLAGS, "--ray-address", ray_address, chunk_size=CHUNK_SIZE),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / ".state" / "chunks"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"

    _build(out, demo_subset, *RAY_FLAGS)
    assert outputs(out) == outputs(local_build)


def test_finished_build_reruns_without_ray_work(local_build: Path, demo_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "done"
    shutil.copytree(local_build, out)
    _build(out, demo_subset, "--executor", "ray")
    assert _stage_rows(out) == {}
    assert outputs(out) == outputs(local_build)


def test_ray_executor_without_ray_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_subset: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when the extra is missing
    monkeypatch.delitem(sys.modules, "curate.executors.ray", raising=False)
    result = CliRunner().invoke(
        app, build_args(tmp_path / "o", demo_subset, "--executor", "ray", chunk_size=CHUNK_SIZE)
    )
    assert result.exit_code == 2
    assert "pip install 'polyalign[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_stage_in_ray_settings_is_a_one_line_error(tmp_path: Path, demo_subset: Path) -> None:
    args = build_args(
        tmp_path / "o", demo_subset, "--set", "executor.ray.stages.translator.actors=2", chunk_size=CHUNK_SIZE
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "executor.ray.stages.translator" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_stage_that_cannot_start_is_a_one_line_error(
    ray_address: str, demo_subset: Path, tmp_path: Path
) -> None:
    args = build_args(
        tmp_path / "o",
        demo_subset,
        *RAY_FLAGS,
        "--ray-address",
        ray_address,
        "--set",
        "translate.apertium.modes.es=eng-xxx",
        chunk_size=CHUNK_SIZE,
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # the CLI's clean exit, not an escaped Ray error
    # Ray logs its own lines around it; the build's answer is one line.
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: translate.apertium.modes names ['eng-xxx']")


class _RefusingStage(Stage):
    """Fails every batch the way a translator fails on a rejected API key."""

    name = "translate"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def process(self, batch: pa.Table) -> StageResult:
        raise self.error


def _one_chunk() -> pa.Table:
    rows = table(row("g", "en", "Hello there, how are you?"), row("g", "es", "Hola, ¿qué tal?"))
    return pack(
        [ChunkState.start(Chunk(index=0, rows=rows, rejects=empty_rejects(), read=Counter(en=1, es=1)))]
    )


def test_a_user_error_while_processing_travels_to_the_driver() -> None:
    message = "translate.openai: the server refused the API key (401 Unauthorized)"
    out = StageActor(_RefusingStage(ConfigError(message)))(_one_chunk())
    assert failure(out) == message  # the driver raises it as a UserError: one line, as in a local build
    assert (
        failure(StageActor(_RefusingStage(ConfigError("unused")))(out)) == message
    )  # later stages pass it on


def test_a_bug_while_processing_stays_a_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        StageActor(_RefusingStage(ZeroDivisionError("a bug")))(_one_chunk())


def test_a_request_the_cluster_cannot_hold_is_refused_or_warned_when_it_autoscales(
    ray_address: str, tmp_path: Path
) -> None:
    import ray

    names = ("translate", "lid", "equivalence")
    stages = [_NamedStage(name) for name in names]
    writer = ShardWriter(tmp_path)
    if not ray.is_initialized():
        ray.init(address=ray_address)

    def plan(**settings: Any) -> dict[str, ActorResources]:
        config = RayConfig.model_validate(settings)
        return RayExecutor(stages, writer, config=config)._plan(local=False)

    # translate 0.5 + lid's light 0.25 + equivalence's heavy 1: 1.75 of the cluster's 2 CPUs.
    assert plan(stages={"translate": {"num_cpus": 0.5}})["translate"] == ActorResources(1, 0.5, 0.0)
    two_each = {name: {"actors": 2, "num_cpus": 1} for name in names}
    with pytest.raises(
        ConfigError, match=r"ask for 6 CPUs and the Ray cluster has 2, so the build would wait"
    ):
        plan(stages=two_each)
    with pytest.raises(
        ConfigError, match=r"translate\.num_gpus=1 is more than any node of the Ray cluster has"
    ):
        plan(stages={"translate": {"num_gpus": 1, "num_cpus": 0.5}})
    with pytest.warns(RayResourceWarning, match=r"ask for 6 CPUs and the Ray cluster has 2: the build waits"):
        plan(autoscale=True, stages=two_each)


class _NamedStage(Stage):
    """A stage that only has a name: what planning the cluster's resources reads."""

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, batch: pa.Table) -> StageResult:
        raise NotImplementedError


def _nodes(*cpus: float) -> list[dict[str, float]]:
    return [{"CPU": n, "memory": 1e9} for n in cpus]


STAGES = ["anchor_lid", "translate", "structure", "lid", "equivalence"]


def test_a_local_instance_fits_the_actors_whose_cpus_are_unset_to_its_cpus() -> None:
    default = plan_resources(STAGES, RayConfig(), nodes=_nodes(16), local=True)
    assert {name: r.num_cpus for name, r in default.items()} == {
        "anchor_lid": 0.25,
        "translate": 1.0,
        "structure": 0.25,
        "lid": 0.25,
        "equivalence": 1.0,
    }
    config = RayConfig.model_validate(
        {"stages": {"translate": {"actors": 2}, "equivalence": {"num_cpus": 0.5}}}
    )
    fitted = plan_resources(STAGES, config, nodes=_nodes(2), local=True)
    assert fitted["equivalence"].num_cpus == 0.5  # set, kept
    assert sum(r.actors * r.num_cpus for r in fitted.values()) <= 2
    # Every unset stage keeps its share, a light stage a quarter of a heavy one (rounded down to Ray's
    # grain of 0.0001 CPU).
    assert fitted["lid"].num_cpus > 0
    assert fitted["translate"].num_cpus == pytest.approx(4 * fitted["lid"].num_cpus, abs=4e-4)
    assert (
        plan_resources(STAGES, config, nodes=_nodes(4), local=False)["translate"].num_cpus == 1.0
    )  # not scaled
    with pytest.raises(
        ConfigError,
        match=r"ask for 3 CPUs and this machine's local Ray instance has 2, so the build would wait "
        r"forever: .*leave num_cpus unset",
    ):
        plan_resources(
            STAGES,
            RayConfig.model_validate({"stages": {"translate": {"actors": 3, "num_cpus": 1}}}),
            nodes=_nodes(2),
            local=True,
        )
    with pytest.raises(
        ConfigError,
        match=r"num_gpus=0\.5 is more than any node of this machine's local Ray instance has \(0 GPUs\)",
    ):
        plan_resources(
            STAGES,
            RayConfig.model_validate({"stages": {"equivalence": {"num_gpus": 0.5}}}),
            nodes=_nodes(8),
            local=True,
        )


def test_a_cluster_node_too_small_for_one_actor_is_refused_whatever_the_total() -> None:
    config = RayConfig.model_validate({"stages": {"translate": {"num_cpus": 4}}})
    with pytest.raises(
        ConfigError, match=r"translate\.num_cpus=4 is more than any node of the Ray cluster has \(2 CPUs\)"
    ):
        plan_resources(STAGES, config, nodes=_nodes(2, 2, 2, 2), local=False)


def test_a_default_ray_build_fits_a_local_instance_smaller_than_its_actors(
    local_build: Path, demo_subset: Path, tmp_path: Path
) -> None:
    """What ``curate build --executor ray`` does on a two-core machine: the stages' default actors ask for
    2.75 CPUs, and a local instance cannot grow, so they are fitted to its 2 instead of waiting forever."""
    out = tmp_path / "fitted"
    command = [
        sys.executable,
        "-m",
        "curate",
        *build_args(out, demo_subset, "--executor", "ray", chunk_size=CHUNK_SIZE),
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"PYTHONPATH": str(ROOT), "RAY_OVERRIDE_RESOURCES": json.dumps({"CPU": 2})}
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert outputs(out) == outputs(local_build)
