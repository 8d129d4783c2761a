"""Run the experiment end to end: data, settings chosen on the dev groups, every arm × seed trained and
scored on the test groups, then the analysis.

    python -m experiments.batch_alignment.run experiments/batch_alignment/experiment.yaml
    python -m experiments.batch_alignment.run experiments/batch_alignment/smoke.yaml   # minutes, same code

Three phases, each spread over ``jobs`` workers of ``threads`` CPU threads:

1. the arms that take no tuned setting (``parallel`` among them: DPO starts from its checkpoints);
2. **tuning**: every candidate of ``tuning`` trained with ``tune_seeds`` and scored on the **dev** groups;
   per key, the candidate with the highest dev accuracy over the trained non-English languages wins
   (ties: the lower dev answer loss) and is written to ``OUT/tuned.json``. The test groups play no part;
3. the tuned arms, with the winners' settings.

Everything goes through the public commands (`curate build`, `align-train`, `align-train export`,
`align-train eval`) in subprocesses. A run whose evaluation exists is skipped and an interrupted one
resumes from its checkpoint, so re-running the same command completes an interrupted experiment.
``OUT/timing.json`` records wall and CPU seconds of every run and the machine's load while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from experiments.batch_alignment import analyze
from experiments.batch_alignment.config import ARMS, ExperimentConfig, load
from experiments.batch_alignment.data import prepare
from experiments.batch_alignment.plan import Run, arm_runs, tuning_runs
from experiments.parallel_gap.data import run_cli
from experiments.parallel_gap.run import LoadSampler

WARM_START = "merged"


def start_model(cfg: ExperimentConfig, run: Run) -> Path:
    """The model a run trains from: the experiment's model, or its warm-start arm's checkpoint of the same
    seed, merged (written once)."""
    if run.arm.warm_start is None:
        return cfg.model
    source = cfg.out / "runs" / f"{run.arm.warm_start}__seed={run.seed}"
    merged = source / WARM_START
    if not (merged / "config.json").is_file():
        run_cli(["align_train", "export", str(source), "--out", str(merged)], log=source / "run.log")
    return merged


def write_configs(cfg: ExperimentConfig, run: Run, corpora: dict[str, Path]) -> None:
    """``RUN/train.yaml`` (TrainConfig) and ``RUN/eval.yaml`` (EvalConfig) of one run."""
    run.folder.mkdir(parents=True, exist_ok=True)
    model: Path = cfg.model
    if run.arm.trains:
        assert run.seed is not None
        train: dict[str, Any] = {
            **cfg.train,
            **run.settings,
            "shards": str(corpora["train"]),
            "out": str(run.folder),
            "model": str(cfg.model),  # replaced by the warm start when the run starts
            "objective": run.arm.objective,
            "policy": run.arm.policy,
            "langs": run.arm.langs,
            "groups_per_batch": cfg.groups_per_step,
            "max_steps": cfg.steps,
            "seed": run.seed,
        }
        if run.arm.alignment_loss is not None:
            train["alignment_loss"] = run.arm.alignment_loss
        _write_yaml(run.folder / "train.yaml", train)
        model = run.folder
    evaluation = {
        **cfg.eval,
        "model": str(model),
        "data": str(corpora[run.split]),
        "out": str(run.folder / "eval"),
        "split": "all",
        "holdout": 0.0,
    }
    _write_yaml(run.folder / "eval.yaml", evaluation)


def execute(cfg: ExperimentConfig, run: Run) -> dict[str, Any]:
    """Train (unless the arm does not) and evaluate one run; its wall and CPU seconds."""
    timing: dict[str, Any] = {"run": run.name}
    log = run.folder / "run.log"
    if run.arm.trains:
        started = time.perf_counter()
        config = yaml.safe_load((run.folder / "train.yaml").read_text(encoding="utf-8"))
        config["model"] = str(start_model(cfg, run))
        _write_yaml(run.folder / "train.yaml", config)
        timing["train_cpu_s"] = run_cli(
            ["align_train", str(run.folder / "train.yaml")], log=log, threads=cfg.threads
        )
        timing["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    timing["eval_cpu_s"] = run_cli(
        ["align_train", "eval", str(run.folder / "eval.yaml")], log=log, threads=cfg.threads
    )
    timing["eval_s"] = time.perf_counter() - started
    (run.folder / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    print(
        f"done {run.folder.parent.name}/{run.name}: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timing.items() if k != "run"),
        flush=True,
    )
    return timing


def run_all(cfg: ExperimentConfig, runs: list[Run], corpora: dict[str, Path]) -> list[dict[str, Any]]:
    """Write the configs of ``runs`` and execute those not done, longest first, seed by seed."""
    for run in runs:
        if not run.done:
            write_configs(cfg, run, corpora)
    todo = sorted((r for r in runs if not r.done), key=lambda r: (r.seed or 0, -r.cost))
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        return list(pool.map(lambda r: execute(cfg, r), todo))


def choose(cfg: ExperimentConfig, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Per tuned key, every candidate's dev scores (seeds pooled) and the winner's settings."""
    choices: dict[str, Any] = {}
    for key, candidates in runs.items():
        scores = {}
        for candidate in cfg.tuning[key]:
            folders = [r.folder for r in candidates if r.folder.name.startswith(f"{key}__{candidate.name}__")]
            scores[candidate.name] = analyze.dev_score(folders, cfg.data.train_langs)
        best = max(scores, key=lambda name: (scores[name]["accuracy"], -scores[name]["loss"]))
        choices[key] = {
            "chosen": best,
            "settings": next(c.train for c in cfg.tuning[key] if c.name == best),
            "dev": scores,
        }
    return choices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    experiment(load(args.config, args.overrides))


def experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run ``cfg`` to the end and return the analysis (also written to ``cfg.out``)."""
    started = time.perf_counter()
    timing: dict[str, Any] = {"jobs": cfg.jobs, "threads": cfg.threads, "cpus": os.cpu_count(), "runs": []}
    with LoadSampler() as load_average:
        if cfg.convert_smollm2 and not (cfg.model / "config.json").is_file():
            run_cli(
                ["align_train", "from-gguf", "--out", str(cfg.model)], log=cfg.out / "logs" / "from-gguf.log"
            )
        corpora = prepare(cfg)
        timing["data_s"] = time.perf_counter() - started
        untuned = [name for name in cfg.arms if ARMS[name].tuned is None]
        timing["runs"] += run_all(cfg, arm_runs(cfg, untuned, {}), corpora)
        tune = tuning_runs(cfg)
        timing["runs"] += run_all(cfg, [r for runs in tune.values() for r in runs], corpora)
        choices = choose(cfg, tune)
        (cfg.out / "tuned.json").write_text(json.dumps(choices, indent=2) + "\n", encoding="utf-8")
        tuned = {key: choice["settings"] for key, choice in choices.items()}
        runs = arm_runs(cfg, cfg.arms, tuned)
        timing["runs"] += run_all(cfg, runs, corpora)
        result = analyze.analyze(cfg, [(r.arm.name, r.seed, r.folder) for r in runs], choices)
    timing["total_s"] = time.perf_counter() - started
    timing["cpu_s"] = sum(r.get("train_cpu_s", 0) + r["eval_cpu_s"] for r in timing["runs"])
    timing["load_average_1m"] = load_average.summary()
    if timing["runs"] or not (cfg.out / "timing.json").is_file():
        (cfg.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    print(f"wall time {timing['total_s']:.0f} s; results in {cfg.out / 'results.md'}", flush=True)
    return result


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


if __name__ == "__main__":
    main()
