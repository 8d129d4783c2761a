"""``align-train sweep``: the language-coverage grid of a multilingual post-training study, in one command.

A :class:`SweepConfig` expands into one run per (language set, objective, policy, seed), each in its own
folder under ``out`` named after its cell (``langs=en+es__obj=sft__policy=all__seed=0``)::

    OUT/<run>/config.yaml     the run's TrainConfig (``torchrun -m align_train OUT/<run>/config.yaml``)
    OUT/<run>/eval.yaml       its EvalConfig (``align-train eval OUT/<run>/eval.yaml``)
    OUT/<run>/checkpoints/    training output, as for any ``align-train`` run
    OUT/<run>/eval/           the evaluation; ``eval/metrics.json`` is written last and marks the run done
    OUT/<run>/error.txt       the traceback of a failed run
    OUT/results.csv, results.md, accuracy_vs_langs.png

Runs execute one after another in this process. A run whose ``eval/metrics.json`` exists is skipped, so
re-running a sweep resumes it (an interrupted training resumes from its latest checkpoint); a run that
fails is recorded with its error and the sweep goes on with the next.
"""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml
from pydantic import ValidationError

from align_train.config import (
    EvalConfig,
    SweepConfig,
    TrainConfig,
    save_yaml,
)
from align_train.eval.report import METRICS_FILE, consistency_cell, number, per_lang_cells, percent
from align_train.run_folder import RUN_CONFIG
from schemas import ConfigError, Manifest
from schemas.config_io import describe_validation_error

EVAL_CONFIG = "eval.yaml"
ERROR_FILE = "error.txt"
RESULT_COLUMNS = (
    "run",
    "langs",
    "num_langs",
    "objective",
    "policy",
    "seed",
    "status",
    "error",
    "benchmark",
    "eval_lang",
    "seen",
    "accuracy",
    "gap",
    "relative_gap",
    "agreement_with_anchor",
    "loss",
    "consistency",
    "consistent_correct",
)


@dataclass(frozen=True)
class Run:
    """One cell of the grid, with its validated training and evaluation configs."""

    name: str
    langs: list[str]
    objective: str
    policy: str
    seed: int
    train: TrainConfig
    eval: EvalConfig

    @property
    def folder(self) -> Path:
        return self.train.out

    @property
    def complete(self) -> bool:
        return (self.eval.out / METRICS_FILE).is_file()


@dataclass(frozen=True)
class Outcome:
    """What became of a run: ``done`` (ran now), ``cached`` (complete before), ``failed`` or ``pending``
    (incomplete, with ``collect_only``)."""

    run: Run
    status: str
    error: str | None = None


def expand(sweep: SweepConfig) -> list[Run]:
    """Every cell of the grid, its configs validated now, so a mistake stops the sweep before any run."""
    runs = []
    for langs, objective, policy, seed in itertools.product(
        sweep.lang_sets, sweep.objectives, sweep.policies, sweep.seeds
    ):
        name = f"langs={'+'.join(langs)}__obj={objective}__policy={policy}__seed={seed}"
        folder = sweep.out / name
        cell = {"out": folder, "langs": langs, "objective": objective, "policy": policy, "seed": seed}
        try:
            train = TrainConfig.model_validate(sweep.train | cell)
            defaults = {"data": train.shards, "holdout": train.holdout}
            evaluation = EvalConfig.model_validate(defaults | sweep.eval | {"out": folder / "eval"})
        except ValidationError as e:
            raise ConfigError(f"run {name}: {describe_validation_error(e)}") from e
        anchor = Manifest.load(train.shards).anchor_lang
        if anchor not in langs:
            msg = (
                f"lang set {'+'.join(langs)} leaves out the anchor {anchor}, which every training group "
                f"contains: write {'+'.join([anchor, *langs])}"
            )
            raise ConfigError(msg)
        # The run folder is the model to evaluate; it exists only once the run has trained.
        evaluation = evaluation.model_copy(update={"model": folder})
        runs.append(Run(name, langs, objective, policy, seed, train, evaluation))
    return runs


def run_sweep(sweep: SweepConfig, runs: Sequence[Run], *, collect_only: bool = False) -> list[Outcome]:
    """Train and evaluate each incomplete run in turn, then write the results table and plot."""
    from align_train.eval.evaluate import evaluate
    from align_train.training.train import train

    outcomes = []
    for k, run in enumerate(runs, 1):
        try:
            check_unchanged(run)
            if run.complete:
                outcome = Outcome(run, "cached")
            elif collect_only:
                outcome = Outcome(run, "pending")
            else:
                print(f"[{k}/{len(runs)}] {run.name}", flush=True)
                prepare(run)
                train(run.train)
                evaluate(run.eval)
                outcome = Outcome(run, "done")
        except Exception as e:  # one failed run must not stop the others; its traceback is kept
            run.folder.mkdir(parents=True, exist_ok=True)
            (run.folder / ERROR_FILE).write_text(traceback.format_exc(), encoding="utf-8")
            outcome = Outcome(run, "failed", error=" ".join(f"{type(e).__name__}: {e}".split()))
        detail = f" ({outcome.error})" if outcome.error else ""
        print(f"[{k}/{len(runs)}] {run.name}: {outcome.status}{detail}", flush=True)
        outcomes.append(outcome)
    write_results(sweep.out, outcomes)
    return outcomes


def check_unchanged(run: Run) -> None:
    """Refuse a run folder that trained with other settings: its checkpoints and results would be mixed
    into this sweep's as if they were its own."""
    path = run.folder / RUN_CONFIG
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    wanted = run.train.model_dump(mode="json")
    changed = sorted(key for key in wanted.keys() | saved.keys() if saved.get(key) != wanted.get(key))
    if changed:
        msg = (
            f"{run.folder} already holds a run with other settings ({', '.join(changed)} differ): "
            "delete the folder or give the sweep another out"
        )
        raise ConfigError(msg)


def prepare(run: Run) -> None:
    """Write the run's config files, which the printed commands and a resumed sweep read."""
    check_unchanged(run)
    save_yaml(run.train, run.folder / RUN_CONFIG)
    save_yaml(run.eval, run.folder / EVAL_CONFIG)
    (run.folder / ERROR_FILE).unlink(missing_ok=True)


def commands(runs: Sequence[Run], *, nproc_per_node: int) -> list[str]:
    """Shell lines that train then evaluate each incomplete run, e.g. one per cluster job; the config
    files they name are written now."""
    lines = []
    for run in runs:
        if run.complete:
            lines.append(f"# {run.name}: complete")
            continue
        prepare(run)
        train_config = shlex.quote(str(run.folder / RUN_CONFIG))
        eval_config = shlex.quote(str(run.folder / EVAL_CONFIG))
        lines.append(
            f"torchrun --nproc_per_node {nproc_per_node} -m align_train {train_config} && "
            f"align-train eval {eval_config}"
        )
    return lines


def write_results(out: Path, outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """``results.csv`` (one row per run and evaluation language), ``results.md`` (one row per run) and
    the accuracy-vs-languages plot; returns the CSV rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for o in outcomes:
        base = {
            "run": o.run.name,
            "langs": "+".join(o.run.langs),
            "num_langs": len(o.run.langs),
            "objective": o.run.objective,
            "policy": o.run.policy,
            "seed": o.run.seed,
            "status": o.status,
            "error": o.error,
        }
        metrics = _metrics(o)
        if metrics is None:
            rows.append(base)
            continue
        rows += [base | cells for cells in _result_cells(metrics, o.run.langs)]
    with (out / "results.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot = plot_accuracy_vs_langs(rows, out / "accuracy_vs_langs.png")
    (out / "results.md").write_text(_markdown(outcomes, rows, plot), encoding="utf-8")
    return rows


HELD_OUT = "held-out"


def _result_cells(metrics: dict[str, Any], trained: Sequence[str]) -> list[dict[str, Any]]:
    """One row per evaluation language: of the held-out groups, then of each benchmark."""
    out = []
    for lang, m in metrics.get("langs", {}).items():
        agreement = m["agreement"]
        out.append(
            {
                "benchmark": HELD_OUT,
                "eval_lang": lang,
                "seen": lang in trained,
                "accuracy": m["overall"]["accuracy"],
                "gap": m["gap"],
                "relative_gap": m["relative_gap"],
                "agreement_with_anchor": None if agreement is None else agreement["share"],
                "loss": m["overall"]["loss"],
                "consistency": metrics["consistency"]["share"],
                "consistent_correct": metrics["consistent_correct"]["share"],
            }
        )
    for name, b in metrics.get("benchmarks", {}).items():
        for lang, m in b["langs"].items():
            agreement = m["agreement"]
            out.append(
                {
                    "benchmark": name,
                    "eval_lang": lang,
                    "seen": lang in trained,
                    "accuracy": m["accuracy"],
                    "gap": m["gap"],
                    "relative_gap": m["relative_gap"],
                    "agreement_with_anchor": None if agreement is None else agreement["share"],
                    "loss": None,
                    "consistency": b["consistency"]["share"],
                    "consistent_correct": b["consistent_correct"]["share"],
                }
            )
    return out


def _metrics(outcome: Outcome) -> dict[str, Any] | None:
    if outcome.status not in ("done", "cached"):
        return None
    return json.loads((outcome.run.eval.out / METRICS_FILE).read_text(encoding="utf-8"))


def _markdown(outcomes: Sequence[Outcome], rows: Sequence[dict[str, Any]], plot: Path | None) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "cached", "failed", "pending")}
    lines = [
        "# Sweep results",
        "",
        f"{len(outcomes)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ". "
        "Accuracy per evaluation language (and, on the held-out groups, loss in nats per reference token); "
        "* marks a language the run trained on.",
    ]
    for benchmark in list(dict.fromkeys(r["benchmark"] for r in rows if r.get("benchmark"))) or [HELD_OUT]:
        lines += [
            "",
            f"## {benchmark}",
            "",
            *_table(outcomes, [r for r in rows if r.get("benchmark") == benchmark]),
        ]
    if plot is not None:
        lines += ["", f"![accuracy and loss vs number of training languages]({plot.name})"]
    return "\n".join([*lines, ""])


def _table(outcomes: Sequence[Outcome], rows: Sequence[dict[str, Any]]) -> list[str]:
    """One row per run: accuracy per evaluation language, consistency (and correct), loss where there is one."""
    eval_langs = list(dict.fromkeys(r["eval_lang"] for r in rows))
    loss_langs = [x for x in eval_langs if any(r["eval_lang"] == x and r["loss"] is not None for r in rows)]
    by_run: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_run[r["run"]][r["eval_lang"]] = r
    lines = [
        "| run | status | langs | objective | policy | seed | "
        + per_lang_cells(
            [f"{x} accuracy" for x in eval_langs],
            "consistency (and correct)",
            [f"{x} loss" for x in loss_langs],
        )
        + " | error |",
        "|---|---|---|---|---|---:|" + "---:|" * (len(eval_langs) + len(loss_langs) + 1) + "---|",
    ]
    for o in outcomes:
        cells = by_run.get(o.run.name, {})
        first = next(iter(cells.values()), None)
        consistency = consistency_cell(first["consistency"], first["consistent_correct"]) if first else "-"
        lines.append(
            f"| {o.run.name} | {o.status} | {'+'.join(o.run.langs)} | {o.run.objective} | {o.run.policy} "
            f"| {o.run.seed} | "
            + per_lang_cells(
                _per_lang(cells, eval_langs, "accuracy", percent),
                consistency,
                _per_lang(cells, loss_langs, "loss", number),
            )
            + f" | {o.error or ''} |"
        )
    return lines


def _per_lang(
    cells: dict[str, dict[str, Any]], langs: Sequence[str], metric: str, fmt: Callable[[float | None], str]
) -> list[str]:
    """A run's ``metric`` per evaluation language, * where the run trained on it, - where not evaluated."""
    return [fmt(cells[x][metric]) + ("*" if cells[x]["seen"] else "") if x in cells else "-" for x in langs]


def plot_accuracy_vs_langs(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy and loss against the number of training languages: one column per (objective, policy), one
    row per measure (held-out accuracy and loss, then each benchmark's accuracy), one colour per evaluation
    language, a line through the mean over runs and a marker per run, filled where the run trained on the
    language and hollow where it did not. None when no run has results."""
    evaluated = [r for r in rows if r.get("eval_lang")]
    if not evaluated:
        return None
    panels = sorted({(r["objective"], r["policy"]) for r in evaluated})
    measures = [
        (benchmark, metric)
        for benchmark in dict.fromkeys(r["benchmark"] for r in evaluated)
        for metric in (("accuracy", "loss") if benchmark == HELD_OUT else ("accuracy",))
    ]
    langs = list(dict.fromkeys(r["eval_lang"] for r in evaluated))
    colours = {lang: f"C{i % 10}" for i, lang in enumerate(langs)}
    sizes = sorted({r["num_langs"] for r in evaluated})
    fig, axes = plt.subplots(
        len(measures), len(panels), figsize=(4.5 * len(panels) + 1, 3.2 * len(measures)), squeeze=False
    )
    for column, (objective, policy) in enumerate(panels):
        mine = [r for r in evaluated if (r["objective"], r["policy"]) == (objective, policy)]
        for row, (benchmark, metric) in enumerate(measures):
            ax = axes[row][column]
            for lang in langs:
                points = [r for r in mine if r["eval_lang"] == lang and r["benchmark"] == benchmark]
                _plot_lang(points, metric, ax, colours[lang])
            ax.set_xticks(sizes)
            ax.set_xlabel("training languages")
            if metric == "accuracy":
                ax.set_ylim(-0.05, 1.05)
            if column == 0:
                unit = "loss (nats per reference token)" if metric == "loss" else "accuracy"
                ax.set_ylabel(f"{benchmark}: {unit}")
        axes[0][column].set_title(f"{objective}, policy {policy}")
    handles = [plt.Line2D([], [], color=colours[lang], label=lang) for lang in langs]
    handles += [
        plt.Line2D([], [], marker="o", linestyle="", color="grey", label="seen in training"),
        plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="grey", label="unseen"),
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_lang(rows: Sequence[dict[str, Any]], metric: str, ax: Any, colour: str) -> None:
    """One evaluation language: the mean of ``metric`` per number of training languages, and each run."""
    points = [r for r in rows if r[metric] is not None]
    by_size: dict[int, list[float]] = defaultdict(list)
    for r in points:
        by_size[r["num_langs"]].append(r[metric])
    xs = sorted(by_size)
    ax.plot(xs, [sum(by_size[x]) / len(by_size[x]) for x in xs], color=colour)
    for seen in (True, False):
        marked = [r for r in points if r["seen"] == seen]
        ax.scatter(
            [r["num_langs"] for r in marked],
            [r[metric] for r in marked],
            facecolors=colour if seen else "none",
            edgecolors=colour,
            zorder=3,
        )
