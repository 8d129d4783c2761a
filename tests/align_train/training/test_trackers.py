"""report_to: TensorBoard, Weights & Biases (offline) and MLflow (a file store) get every metrics.jsonl
record, and a resumed run continues its own record."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from align_train.training.trackers import TRACKING_FILE, scalars
from align_train.training.train import train
from schemas import MissingDependencyError
from tests.align_train.runs import read_metrics, train_config

torch.set_num_threads(1)


def test_records_are_flattened_to_named_scalars() -> None:
    record = {"step": 3, "loss": 1.5, "langs": {"de": 4, "en": 4}, "collator": {"truncated": 1}, "note": "x"}
    assert scalars(record) == {"loss": 1.5, "langs/de": 4.0, "langs/en": 4.0, "collator/truncated": 1.0}


def test_tensorboard_gets_every_record_and_a_resume_purges_what_came_after_the_checkpoint(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(train_config(shard_dir, tmp_path, model_dir, max_steps=2, report_to=["tensorboard"]))
    train(train_config(shard_dir, tmp_path, model_dir, max_steps=3, report_to=["tensorboard"]))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("loss")}
    assert losses == pytest.approx({r["step"]: r["loss"] for r in read_metrics(tmp_path)}, rel=1e-6)
    assert sorted(losses) == [1, 2, 3]
    assert "langs/en" in events.Tags()["scalars"]


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline W&B run file: a ':W&B' header, then a LevelDB-style log of 32 KiB blocks
    whose records (7-byte header: checksum, length, type full/first/middle/last) are protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        if room < 7 or (length == 0 and kind == 0):  # the zero padding that ends a block
            position += room
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_gets_every_record(
    shard_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(train_config(shard_dir, tmp_path, model_dir, max_steps=2, report_to=["wandb"]))
    run_id = json.loads((tmp_path / TRACKING_FILE).read_text())["wandb"]
    (run_file,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history, config = [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "run":  # the run's first record holds the config
            config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
    records = read_metrics(tmp_path)
    assert [h["_step"] for h in history] == [r["step"] for r in records] == [1, 2]
    assert [h["loss"] for h in history] == pytest.approx([r["loss"] for r in records])
    assert [h["langs/en"] for h in history] == [r["langs"]["en"] for r in records]
    assert config["groups_per_batch"] == 2 and config["report_to"] == ["wandb"]


def test_mlflow_file_store_gets_every_record_and_a_resume_continues_the_run(
    shard_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(train_config(shard_dir, tmp_path, model_dir, max_steps=2, report_to=["mlflow"]))
    train(train_config(shard_dir, tmp_path, model_dir, max_steps=3, report_to=["mlflow"]))
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run_id = json.loads((tmp_path / TRACKING_FILE).read_text())["mlflow"]
    run = client.get_run(run_id)
    assert run.info.run_name == tmp_path.name and run.data.params["groups_per_batch"] == "2"
    assert run.data.params["lora.enabled"] == "false"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert history == pytest.approx({r["step"]: r["loss"] for r in read_metrics(tmp_path)}, rel=1e-6)
    assert [m.value for m in client.get_metric_history(run_id, "langs.en")] == [4.0, 4.0, 4.0]
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the resume continued the same run


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_a_missing_tracker_names_what_to_install(
    shard_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracker: str
) -> None:
    monkeypatch.setitem(sys.modules, tracker, None)  # as if it were not installed
    with pytest.raises(
        MissingDependencyError,
        match=rf"report_to={tracker} needs {tracker}: pip install 'polyalign\[tracking\]'",
    ):
        train(train_config(shard_dir, tmp_path, model_dir, report_to=[tracker]))
