"""The files of an evaluation: ``metrics.json``, ``report.md``, ``accuracy.png`` and ``predictions.jsonl``,
for the held-out groups (:mod:`align_train.eval.summary`) and the benchmarks
(:mod:`align_train.eval.benchmarks`); and the same numbers as model-index results for the scored model's
card (:func:`card_results`)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from align_train.eval.benchmarks import BenchmarkReport
from align_train.eval.summary import Agreement, EvalReport, RowResult
from align_train.model_card import language_results
from schemas import MANIFEST_FILE, sha256_file

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"


def write_report(
    out: Path,
    held_out: EvalReport | None,
    results: Sequence[RowResult],
    benchmarks: dict[str, BenchmarkReport],
    *,
    header: dict[str, Any],
) -> Path:
    """Write predictions, the PNG chart, the markdown report and, last, ``metrics.json``; returns its path.

    ``metrics.json`` holds the header, the held-out report's fields (when there is one) and
    ``benchmarks``; it appears (renamed into place) only once everything else is written, so its presence
    means the evaluation finished.
    """
    out.mkdir(parents=True, exist_ok=True)
    with (out / PREDICTIONS_FILE).open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(dataclasses.asdict(r) | {"correct": r.correct}, ensure_ascii=False) + "\n")
    chart = plot_accuracy(held_out, benchmarks, out / "accuracy.png")
    text = markdown(held_out, benchmarks, header=header, chart=chart.name)
    (out / "report.md").write_text(text, encoding="utf-8")
    metrics = header | (dataclasses.asdict(held_out) if held_out is not None else {})
    metrics["benchmarks"] = {name: dataclasses.asdict(b) for name, b in benchmarks.items()}
    path = out / METRICS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def card_results(
    held_out: EvalReport | None,
    benchmarks: dict[str, BenchmarkReport],
    *,
    data: Path | None,
    split: str,
) -> list[dict[str, Any]]:
    """The numbers of an evaluation as model-index results (:mod:`align_train.model_card`): per language,
    accuracy, loss and gap to the anchor; over languages, consistency, consistent-and-correct and the mean
    gap. The held-out groups' dataset is the build, by the sha256 of its manifest (the ``datasets`` of a
    training card); a benchmark's is its lm-eval name."""
    out = []
    if held_out is not None and data is not None:
        out += language_results(
            dataset_name=f"{split} groups of {data.name}",
            dataset_type=sha256_file(data / MANIFEST_FILE),
            split=split,
            anchor_lang=held_out.anchor_lang,
            langs={
                lang: {"accuracy": r.overall.accuracy, "gap": r.gap, "loss": r.overall.loss}
                for lang, r in held_out.langs.items()
            },
            overall={
                "consistency": held_out.consistency.share,
                "consistent_correct": held_out.consistent_correct.share,
                "mean_gap": held_out.mean_gap,
            },
        )
    for name, b in benchmarks.items():
        out += language_results(
            dataset_name=f"{name} (lm-evaluation-harness, {b.metric})",
            dataset_type=name,
            split=None,
            anchor_lang=b.anchor_lang,
            langs={lang: {"accuracy": r.accuracy, "gap": r.gap} for lang, r in b.langs.items()},
            overall={
                "consistency": b.consistency.share,
                "consistent_correct": b.consistent_correct.share,
                "mean_gap": b.mean_gap,
            },
        )
    return out


def markdown(
    held_out: EvalReport | None, benchmarks: dict[str, BenchmarkReport], *, header: dict[str, Any], chart: str
) -> str:
    lines = [f"# Evaluation of `{header.get('model') or 'the tiny demo model'}`", ""]
    if held_out is not None:
        lines += _held_out_markdown(held_out, header)
    if benchmarks:
        lines += _benchmarks_markdown(benchmarks)
    lines += ["", f"![accuracy per language]({chart})", ""]
    return "\n".join(lines)


def _held_out_markdown(report: EvalReport, header: dict[str, Any]) -> list[str]:
    anchor = report.anchor_lang
    langs = list(report.langs)
    rows = sum(r.overall.rows for r in report.langs.values())
    if report.scoring == "loglikelihood":
        how = (
            "Accuracy by log-likelihood scoring: a row is correct when its reference answer is the model's "
            "greedy continuation (the most likely token at every answer position), read from the loss pass; "
            "nothing is generated"
        )
    else:
        how = (
            f"Accuracy of generated answers: greedy decoding, at most {header['max_new_tokens']} new tokens, "
            f"backend {header['backend']}"
        )
    lines = [
        f"Data `{header['data']}`, split `{header['split']}` (holdout {header['holdout']:g}): "
        f"{report.groups} groups, {rows} rows. {how}; {header['wall_s']:.1f} s.",
        "",
        f"| lang | rows | scored | accuracy | gap to {anchor} | relative gap | agreement with {anchor} "
        "| loss (nats/token) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, r in report.langs.items():
        agreement = "-" if r.agreement is None else percent(r.agreement.share)
        lines.append(
            f"| {lang}{' (anchor)' if lang == anchor else ''} | {r.overall.rows} | {r.overall.scored} "
            f"| {percent(r.overall.accuracy)} | {_signed(r.gap)} | {_signed(r.relative_gap, pct=True)} "
            f"| {agreement} | {number(r.overall.loss)} |"
        )
    c, cc = report.consistency, report.consistent_correct
    if c.share is None and report.scoring == "loglikelihood":
        consistency = (
            f"Cross-lingual consistency: not available under log-likelihood scoring (a wrong answer is not "
            f"known, so neither is whether two languages gave the same one); {cc.agreeing} of {cc.groups} "
            f"groups ({percent(cc.share)}) are correct in every language they have."
        )
    else:
        consistency = (
            f"Cross-lingual consistency: {c.agreeing} of {c.groups} groups ({percent(c.share)}) give the same "
            f"answer in every language they have; {cc.agreeing} ({percent(cc.share)}) give the correct answer "
            "in every language. Consistency without correctness means the languages agree on wrong answers."
        )
    lines += [
        "",
        f"Mean gap of the other languages to {anchor}: {_signed(report.mean_gap)}. {consistency}",
        "",
        "## Per task",
        "",
        "| task | "
        + per_lang_cells(
            [f"{x} accuracy" for x in langs], "consistency (and correct)", [f"{x} loss" for x in langs]
        )
        + " |",
        "|---|" + "---:|" * (2 * len(langs) + 1),
    ]
    tasks = sorted({task for r in report.langs.values() for task in r.tasks})
    for task in tasks:
        per = [report.langs[lang].tasks.get(task) for lang in langs]
        accuracy = [percent(m.accuracy) if m else "-" for m in per]
        loss = [number(m.loss) if m else "-" for m in per]
        share = consistency_cell(
            report.consistency_by_task.get(task), report.consistent_correct_by_task.get(task)
        )
        lines.append(f"| {task} | " + per_lang_cells(accuracy, share, loss) + " |")
    return lines


def _benchmarks_markdown(benchmarks: dict[str, BenchmarkReport]) -> list[str]:
    lines = [
        "",
        "## Benchmarks (lm-evaluation-harness)",
        "",
        "Accuracy is lm-eval's own metric for each task; consistency compares the answers to the same item "
        "(`doc_id`) across languages.",
    ]
    for name, b in benchmarks.items():
        anchor = b.anchor_lang or "-"
        lines += [
            "",
            f"### {name} (`{b.metric}`)",
            "",
            f"| lang | task | items | accuracy | gap to {anchor} | relative gap | agreement with {anchor} |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for lang, r in b.langs.items():
            agreement = "-" if r.agreement is None else percent(r.agreement.share)
            lines.append(
                f"| {lang}{' (anchor)' if lang == b.anchor_lang else ''} | {r.task} | {r.items} "
                f"| {percent(r.accuracy)} | {_signed(r.gap)} | {_signed(r.relative_gap, pct=True)} "
                f"| {agreement} |"
            )
        c = b.consistency
        lines += [
            "",
            f"Mean gap to {anchor}: {_signed(b.mean_gap)}. Consistency over {c.groups} items in two or more "
            f"languages: {consistency_cell(b.consistency, b.consistent_correct)}.",
        ]
    return lines


def consistency_cell(consistent: Agreement | float | None, correct: Agreement | float | None) -> str:
    """ "36.0% (0.0% correct)": the share of groups consistent across languages, and of those consistent
    on the correct answer, side by side so neither is read alone; "- (8.0% correct)" where consistency is
    not known (log-likelihood scoring)."""
    shares = [a.share if isinstance(a, Agreement) else a for a in (consistent, correct)]
    if shares[0] is None and shares[1] is None:
        return "-"
    return f"{percent(shares[0])} ({percent(shares[1])} correct)"


def per_lang_cells(accuracy: Sequence[str], consistency: str, loss: Sequence[str]) -> str:
    """The cells of a per-language results row: accuracy per language, consistency, loss per language."""
    return " | ".join(accuracy) + f" | {consistency} | " + " | ".join(loss)


def plot_accuracy(held_out: EvalReport | None, benchmarks: dict[str, BenchmarkReport], path: Path) -> Path:
    """Bars of accuracy per language: for the held-out groups (overall and per scored task, next to bars
    of the loss) and for each benchmark."""
    panels = (2 if held_out is not None else 0) + len(benchmarks)
    widths = ([2, 1] if held_out is not None else []) + [1] * len(benchmarks)
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(max(6, 3.2 * panels + 2), 3.4),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    axes = list(axes[0])
    if held_out is not None:
        _plot_held_out(held_out, axes.pop(0), axes.pop(0))
    for (name, b), ax in zip(benchmarks.items(), axes, strict=True):
        values = [r.accuracy for r in b.langs.values()]
        bars = ax.bar([f"{x}*" if x == b.anchor_lang else x for x in b.langs], [v or 0.0 for v in values])
        ax.bar_label(bars, labels=[percent(v) for v in values], fontsize=7)
        ax.set_ylim(0, 1.1)
        ax.set_title(
            f"{name}\nconsistency {consistency_cell(b.consistency, b.consistent_correct)}", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_held_out(report: EvalReport, acc_ax: Any, loss_ax: Any) -> None:
    langs = list(report.langs)
    tasks = sorted({t for r in report.langs.values() for t, m in r.tasks.items() if m.scored})
    series = [("all tasks", [r.overall.accuracy for r in report.langs.values()])]
    series += [
        (t, [r.tasks[t].accuracy if t in r.tasks else None for r in report.langs.values()]) for t in tasks
    ]
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(langs))]
        bars = acc_ax.bar(xs, [v or 0.0 for v in values], width, label=label)
        acc_ax.bar_label(bars, labels=[percent(v) for v in values], fontsize=7)
    acc_ax.set_xticks(range(len(langs)), [f"{x}*" if x == report.anchor_lang else x for x in langs])
    acc_ax.set_ylim(0, 1.1)
    acc_ax.set_ylabel("accuracy")
    consistency = consistency_cell(report.consistency, report.consistent_correct)
    acc_ax.set_title(f"held-out groups (* anchor; consistency {consistency})", fontsize=9)
    acc_ax.legend(fontsize=7)
    losses = [r.overall.loss for r in report.langs.values()]
    bars = loss_ax.bar(langs, [v or 0.0 for v in losses], color="#8172B2")
    loss_ax.bar_label(bars, labels=[number(v) for v in losses], fontsize=7)
    loss_ax.set_ylabel("nats per reference token")
    loss_ax.set_title("loss per language", fontsize=9)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None, *, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if pct else f"{value * 100:+.1f} pts"
