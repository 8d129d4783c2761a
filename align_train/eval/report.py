"""Per-language metrics of an evaluation, the gap to the anchor language, cross-lingual consistency, and
the files that report them (``metrics.json``, ``report.md``, ``accuracy.png``, ``predictions.jsonl``).

Everything here works on :class:`RowResult` records, so the numbers can be checked on hand-made rows and
recomputed from ``predictions.jsonl`` without a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass(frozen=True)
class RowResult:
    """One evaluated row: the loss of its reference answer and, when its task has a scorer, the answer read
    from the reference (``expected``) and from the model's generation (``predicted``)."""

    group_id: str
    lang: str
    task: str
    nll: float  # summed over the reference answer's tokens, natural log
    tokens: int
    scorer: str | None = None
    expected: str | None = None
    predicted: str | None = None
    generation: str | None = None

    @property
    def correct(self) -> bool | None:
        if self.scorer is None:
            return None
        return self.predicted is not None and self.predicted == self.expected


@dataclass(frozen=True)
class Metrics:
    """Accuracy over the rows that have a scorer, and the per-token loss of the reference answers."""

    rows: int
    scored: int
    correct: int
    loss_tokens: int
    accuracy: float | None
    loss: float | None

    @classmethod
    def of(cls, results: Sequence[RowResult]) -> Metrics:
        scored = [r for r in results if r.scorer is not None]
        correct = sum(bool(r.correct) for r in scored)
        tokens = sum(r.tokens for r in results)
        return cls(
            rows=len(results),
            scored=len(scored),
            correct=correct,
            loss_tokens=tokens,
            accuracy=correct / len(scored) if scored else None,
            loss=sum(r.nll for r in results) / tokens if tokens else None,
        )


@dataclass(frozen=True)
class Agreement:
    """Of ``groups`` groups, ``agreeing`` gave the same answer: all their languages (consistency) or one
    language and the anchor (pairwise); or, for ``consistent_correct``, the right answer in every language.
    A missing answer (no number, no tool call, an unreadable call) agrees with nothing."""

    groups: int
    agreeing: int
    share: float | None

    @classmethod
    def of(cls, agrees: Sequence[bool]) -> Agreement:
        return cls(len(agrees), sum(agrees), sum(agrees) / len(agrees) if agrees else None)


@dataclass(frozen=True)
class LangReport:
    """One language: overall and per-task metrics, and how it compares with the anchor language.

    ``gap`` is its accuracy minus the anchor's; ``relative_gap`` is ``gap`` over the anchor's accuracy
    (None when that is 0); ``agreement`` is the pairwise agreement of its answers with the anchor's.
    """

    overall: Metrics
    tasks: dict[str, Metrics]
    gap: float | None
    relative_gap: float | None
    agreement: Agreement | None


@dataclass(frozen=True)
class EvalReport:
    anchor_lang: str
    groups: int
    langs: dict[str, LangReport]
    consistency: Agreement
    consistency_by_task: dict[str, Agreement]
    # Consistency alone rewards agreeing on a wrong answer; read it beside this: the same correct answer.
    consistent_correct: Agreement
    consistent_correct_by_task: dict[str, Agreement]
    mean_gap: float | None  # over the non-anchor languages that have a gap


def summarize(results: Sequence[RowResult], *, anchor_lang: str, langs: Sequence[str]) -> EvalReport:
    """Metrics per language (in ``langs`` order), gaps to ``anchor_lang`` and consistency across languages.

    Consistency counts the groups whose scored rows span at least two languages; such a group is
    consistent when every language gave the same, non-missing answer, and consistent and correct when every
    language answered correctly.
    """
    by_lang: dict[str, list[RowResult]] = defaultdict(list)
    answers: dict[str, dict[str, str | None]] = defaultdict(dict)
    correct: dict[str, list[bool]] = defaultdict(list)
    task_of: dict[str, str] = {}
    for r in results:
        by_lang[r.lang].append(r)
        if r.scorer is not None:
            answers[r.group_id][r.lang] = r.predicted
            correct[r.group_id].append(bool(r.correct))
            task_of[r.group_id] = r.task
    anchor = Metrics.of(by_lang[anchor_lang]).accuracy
    reports = {}
    for lang in langs:
        rows = by_lang[lang]
        overall = Metrics.of(rows)
        tasks = {
            task: Metrics.of([r for r in rows if r.task == task]) for task in sorted({r.task for r in rows})
        }
        gap = None if overall.accuracy is None or anchor is None else overall.accuracy - anchor
        relative = None if gap is None or not anchor else gap / anchor
        pairs = None
        if lang != anchor_lang:
            pairs = Agreement.of(
                [
                    _agree([group[lang], group[anchor_lang]])
                    for group in answers.values()
                    if lang in group and anchor_lang in group
                ]
            )
        reports[lang] = LangReport(overall, tasks, gap, relative, pairs)
    multilingual = {g: list(group.values()) for g, group in answers.items() if len(group) >= 2}
    tasks = sorted({task_of[g] for g in multilingual})
    by_task = {
        task: Agreement.of([_agree(a) for g, a in multilingual.items() if task_of[g] == task])
        for task in tasks
    }
    correct_by_task = {
        task: Agreement.of([all(correct[g]) for g in multilingual if task_of[g] == task]) for task in tasks
    }
    gaps = [r.gap for lang, r in reports.items() if lang != anchor_lang and r.gap is not None]
    return EvalReport(
        anchor_lang=anchor_lang,
        groups=len({r.group_id for r in results}),
        langs=reports,
        consistency=Agreement.of([_agree(a) for a in multilingual.values()]),
        consistency_by_task=by_task,
        consistent_correct=Agreement.of([all(correct[g]) for g in multilingual]),
        consistent_correct_by_task=correct_by_task,
        mean_gap=sum(gaps) / len(gaps) if gaps else None,
    )


def _agree(answers: Sequence[str | None]) -> bool:
    return answers[0] is not None and all(a == answers[0] for a in answers)


def write_report(
    out: Path, report: EvalReport, results: Sequence[RowResult], *, header: dict[str, Any]
) -> Path:
    """Write predictions, the PNG chart, the markdown report and, last, ``metrics.json``; returns its path.

    ``metrics.json`` appears (renamed into place) only once everything else is written, so its presence
    means the evaluation finished.
    """
    out.mkdir(parents=True, exist_ok=True)
    with (out / PREDICTIONS_FILE).open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(dataclasses.asdict(r) | {"correct": r.correct}, ensure_ascii=False) + "\n")
    chart = plot_accuracy(report, out / "accuracy.png")
    (out / "report.md").write_text(markdown(report, header=header, chart=chart.name), encoding="utf-8")
    path = out / METRICS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(header | dataclasses.asdict(report), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def markdown(report: EvalReport, *, header: dict[str, Any], chart: str) -> str:
    anchor = report.anchor_lang
    langs = list(report.langs)
    rows = sum(r.overall.rows for r in report.langs.values())
    lines = [
        f"# Evaluation of `{header.get('model') or 'the tiny demo model'}`",
        "",
        f"Data `{header['data']}`, split `{header['split']}` (holdout {header['holdout']:g}): "
        f"{report.groups} groups, {rows} rows. Greedy decoding, at most {header['max_new_tokens']} new "
        f"tokens, backend {header['backend']}; {header['wall_s']:.1f} s.",
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
    lines += [
        "",
        f"Mean gap of the other languages to {anchor}: {_signed(report.mean_gap)}. Cross-lingual "
        f"consistency: {c.agreeing} of {c.groups} groups ({percent(c.share)}) give the same answer in every "
        f"language they have; {cc.agreeing} ({percent(cc.share)}) give the correct answer in every language. "
        "Consistency without correctness means the languages agree on wrong answers.",
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
    lines += ["", f"![accuracy per language]({chart})", ""]
    return "\n".join(lines)


def consistency_cell(consistent: Agreement | float | None, correct: Agreement | float | None) -> str:
    """ "36.0% (0.0% correct)": the share of groups consistent across languages, and of those consistent
    on the correct answer, side by side so neither is read alone."""
    shares = [a.share if isinstance(a, Agreement) else a for a in (consistent, correct)]
    if shares[0] is None:
        return "-"
    return f"{percent(shares[0])} ({percent(shares[1])} correct)"


def per_lang_cells(accuracy: Sequence[str], consistency: str, loss: Sequence[str]) -> str:
    """The cells of a per-language results row: accuracy per language, consistency, loss per language."""
    return " | ".join(accuracy) + f" | {consistency} | " + " | ".join(loss)


def plot_accuracy(report: EvalReport, path: Path) -> Path:
    """Bars of accuracy per language (overall and per scored task) next to bars of the loss."""
    langs = list(report.langs)
    tasks = sorted({t for r in report.langs.values() for t, m in r.tasks.items() if m.scored})
    series = [("all tasks", [r.overall.accuracy for r in report.langs.values()])]
    series += [
        (t, [r.tasks[t].accuracy if t in r.tasks else None for r in report.langs.values()]) for t in tasks
    ]
    width = 0.8 / len(series)
    fig, (acc_ax, loss_ax) = plt.subplots(
        1, 2, figsize=(max(6, 1.6 * len(langs) + 4), 3.4), gridspec_kw={"width_ratios": [2, 1]}
    )
    for k, (label, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(langs))]
        bars = acc_ax.bar(xs, [v or 0.0 for v in values], width, label=label)
        acc_ax.bar_label(bars, labels=[percent(v) for v in values], fontsize=7)
    acc_ax.set_xticks(range(len(langs)), [f"{x}*" if x == report.anchor_lang else x for x in langs])
    acc_ax.set_ylim(0, 1.1)
    acc_ax.set_ylabel("accuracy")
    consistency = consistency_cell(report.consistency, report.consistent_correct)
    acc_ax.set_title(f"accuracy per language (* anchor; consistency {consistency})")
    acc_ax.legend(fontsize=7)
    losses = [r.overall.loss for r in report.langs.values()]
    bars = loss_ax.bar(langs, [v or 0.0 for v in losses], color="#8172B2")
    loss_ax.bar_label(bars, labels=[number(v) for v in losses], fontsize=7)
    loss_ax.set_ylabel("nats per reference token")
    loss_ax.set_title("loss per language")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None, *, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if pct else f"{value * 100:+.1f} pts"
