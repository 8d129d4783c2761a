"""Run the experiment end to end: data, every arm × seed trained and evaluated, then the analysis.

    python -m experiments.parallel_gap.run experiments/parallel_gap/experiment.yaml
    python -m experiments.parallel_gap.run experiments/parallel_gap/smoke.yaml       # minutes, same code
    python -m experiments.parallel_gap.run CONFIG --set seeds=[0] --set arms=[base,parallel]

Everything goes through the project's public commands, in subprocesses of this tree's Python: `curate
build` (data.py), `align-train RUN/train.yaml` and `align-train eval RUN/eval.yaml`. Runs are spread over
``jobs`` workers of ``threads`` CPU threads each. A run whose ``eval/metrics.json`` exists is
finished and skipped, an interrupted one resumes from its checkpoint, so re-running the same command
completes an interrupted experiment. Runs go seed by seed (all arms of seed 0 first), so an experiment
stopped early still compares every arm on whole seeds. ``OUT/timing.json`` records the wall time of every step and the load
average of the machine while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from experiments.parallel_gap import analyze
from experiments.parallel_gap.config import ExperimentConfig, Run, load, plan
from experiments.parallel_gap.data import prepare, run_cli


def write_configs(cfg: ExperimentConfig, run: Run, corpora: dict[str, Path]) -> None:
    """``RUN/train.yaml`` (TrainConfig) and ``RUN/eval.yaml`` (EvalConfig) of one run."""
    run.folder.mkdir(parents=True, exist_ok=True)
    model: Path = cfg.model
    if run.arm.trains:
        assert run.arm.corpus is not None and run.seed is not None
        train = {
            **cfg.train,
            "shards": str(corpora[run.arm.corpus]),
            "out": str(run.folder),
            "model": str(cfg.model),
            "objective": run.arm.objective,
            "policy": run.arm.policy,
            "langs": run.arm.langs,
            "groups_per_batch": cfg.groups_per_batch(run.arm),
            "max_steps": cfg.steps,
            "seed": run.seed,
        }
        _write_yaml(run.folder / "train.yaml", train)
        model = run.folder
    evaluation = {
        **cfg.eval,
        "model": str(model),
        "data": str(corpora["eval"]),
        "out": str(run.folder / "eval"),
        "split": "all",
        "holdout": 0.0,
    }
    _write_yaml(run.folder / "eval.yaml", evaluation)


def execute(cfg: ExperimentConfig, run: Run) -> dict[str, Any]:
    """Train (unless the arm does not) and evaluate one run; its wall times."""
    timing: dict[str, Any] = {"run": run.name}
    log = run.folder / "run.log"
    if run.arm.trains:
        started = time.perf_counter()
        run_cli(["align_train", str(run.folder / "train.yaml")], log=log, threads=cfg.threads)
        timing["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    run_cli(["align_train", "eval", str(run.folder / "eval.yaml")], log=log, threads=cfg.threads)
    timing["eval_s"] = time.perf_counter() - started
    (run.folder / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    print(
        f"done {run.name}: " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items() if k != "run"), flush=True
    )
    return timing


class LoadSampler:
    """The machine's 1-minute load average, sampled every ``every`` seconds while the experiment runs."""

    def __init__(self, every: float = 30.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self, every: float) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(every):
                return

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples)
        return {"mean": sum(s) / len(s), "median": s[len(s) // 2], "max": s[-1], "samples": len(s)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load(args.config, args.overrides)
    experiment(cfg)


def experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run ``cfg`` to the end and return the analysis (also written to ``cfg.out``)."""
    started = time.perf_counter()
    timing: dict[str, Any] = {"jobs": cfg.jobs, "threads": cfg.threads, "cpus": os.cpu_count()}
    with LoadSampler() as load_average:
        if cfg.convert_smollm2 and not (cfg.model / "config.json").is_file():
            run_cli(
                ["align_train", "from-gguf", "--out", str(cfg.model)], log=cfg.out / "logs" / "from-gguf.log"
            )
        corpora = prepare(cfg)
        timing["data_s"] = time.perf_counter() - started
        runs = plan(cfg)
        for run in runs:
            write_configs(cfg, run, corpora)
        # Seed by seed, every arm within a seed: an experiment stopped early still has whole seeds.
        todo = sorted((r for r in runs if not r.done), key=lambda r: (r.seed or 0, -r.cost))
        print(
            f"{len(runs)} runs, {len(todo)} to do, {cfg.jobs} at a time; {cfg.steps} steps each", flush=True
        )
        with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
            list(pool.map(lambda r: execute(cfg, r), todo))
        timing["runs_s"] = time.perf_counter() - started - timing["data_s"]
        result = analyze.analyze(cfg, [(r.arm.name, r.seed, r.folder) for r in runs])
    timing["total_s"] = time.perf_counter() - started
    timing["load_average_1m"] = load_average.summary()
    # A re-run that only finishes the data or redoes the analysis keeps the timing of the run that trained.
    if todo or not (cfg.out / "timing.json").is_file():
        (cfg.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    print(f"wall time {timing['total_s']:.0f} s; results in {cfg.out / 'results.md'}", flush=True)
    return result


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


if __name__ == "__main__":
    main()
