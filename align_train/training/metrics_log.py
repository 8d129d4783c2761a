"""What a training run records per step: ``OUT/metrics.jsonl`` (rank 0), a rich progress bar, the trackers
of ``report_to`` (TensorBoard, W&B, MLflow: :mod:`align_train.training.trackers`), and per rank the groups
each step trained on (``OUT/data/rank-N.jsonl``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from align_train.data.prefetch import Window
from align_train.distributed import Runtime, gather
from align_train.training.trackers import Tracker, scalars

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Per-step records of a run, so that its loss curve can be read and its data order audited.

    Every rank calls :meth:`log` every step (it gathers from all ranks on logging steps). On resume, records
    past the checkpoint's step are dropped so the files read as one uninterrupted run. ``trackers`` (rank
    0's, see :func:`~align_train.training.trackers.open_trackers`) get every record and close with the logger.
    """

    def __init__(
        self,
        out: Path,
        run: Runtime,
        *,
        log_every: int,
        trackers: list[Tracker],
        start_step: int,
        total_steps: int,
    ) -> None:
        self.run = run
        self.log_every = log_every
        self.total_steps = total_steps
        self.metrics_path = out / METRICS_FILE
        data_path = out / "data" / f"rank-{run.rank}.jsonl"
        data_path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_jsonl(data_path, start_step)
        self.data_file = data_path.open("a", encoding="utf-8")
        self.tokens = 0
        self.since = time.perf_counter()
        self.collated = Counter[str]()  # collator statistics since the last record
        self.trackers = trackers
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not run.is_main,
        )
        if run.is_main:
            _truncate_jsonl(self.metrics_path, start_step)
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
        self.progress.start()

    def log(
        self,
        step: int,
        *,
        loss: float,
        lr: float,
        grad_norm: float,
        window: Window,
        metrics: list[dict[str, float]],
    ) -> None:
        """Record optimizer step ``step``, which trained on ``window``: ``loss`` is this rank's share of the
        window's objective, ``metrics`` the objective's metrics per micro-batch."""
        self.data_file.write(json.dumps({"step": step, "group_ids": window.group_ids}) + "\n")
        self.tokens += window.tokens
        self.collated += window.collated
        self.progress.advance(self.task)
        if step % self.log_every and step != self.total_steps:
            return
        self.data_file.flush()
        collated, self.collated = self.collated, Counter[str]()
        local = {
            "loss": loss,
            "tokens": self.tokens,
            "langs": window.langs,
            "metrics": metrics,
            "collated": collated,
        }
        ranks = gather(local)
        if not self.run.is_main:
            self.tokens, self.since = 0, time.perf_counter()
            return
        elapsed = time.perf_counter() - self.since
        record: dict[str, Any] = {
            "step": step,
            "epoch": window.data_state["epoch"],
            "loss": sum(r["loss"] for r in ranks),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": sum(r["tokens"] for r in ranks) / max(elapsed, 1e-9),
            "langs": dict(sorted(sum((r["langs"] for r in ranks), Counter()).items())),
            "collator": dict(sum((r["collated"] for r in ranks), Counter())),
        }
        record |= _mean_metrics([m for r in ranks for m in r["metrics"]])
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        numbers = scalars(record)
        for tracker in self.trackers:
            tracker.log(numbers, step)
        info = f"loss {record['loss']:.4f}  lr {lr:.2e}  {record['tokens_per_s']:.0f} tok/s"
        self.progress.update(self.task, info=info)
        self.tokens, self.since = 0, time.perf_counter()

    def close(self) -> None:
        self.progress.stop()
        self.data_file.close()
        for tracker in self.trackers:
            tracker.close()


def _mean_metrics(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Objective metrics averaged over the micro-batches of all ranks that report them."""
    sums: dict[str, list[float]] = {}
    for m in metrics:
        for key, value in m.items():
            sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sorted(sums.items())}


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the records of steps up to ``last_step`` (all of them gone for a fresh run)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
