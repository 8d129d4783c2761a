"""Per-language numbers of a held-out evaluation: accuracy and loss per language and task, the gap to the
anchor language, and cross-lingual consistency (beside consistent-and-correct).

Under ``scoring: loglikelihood`` a row's answer is known only when it is the reference (the reference is
the greedy continuation); a wrong answer is unknown, so whether two languages gave the same one is too:
consistency and agreement are then not available (``share`` None), and consistent-and-correct ("all
correct") is.

Everything here works on :class:`RowResult` records, so the numbers can be checked on hand-made rows and
recomputed from ``predictions.jsonl`` without a model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from align_train.choices import Scoring


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
    A missing answer (no number, no tool call, an unreadable call) agrees with nothing. ``agreeing`` and
    ``share`` are None where the answers are not known (:meth:`unknown`)."""

    groups: int
    agreeing: int | None
    share: float | None

    @classmethod
    def of(cls, agrees: Sequence[bool]) -> Agreement:
        return cls(len(agrees), sum(agrees), sum(agrees) / len(agrees) if agrees else None)

    @classmethod
    def unknown(cls, groups: int) -> Agreement:
        """Of ``groups`` groups, how many agree is not known."""
        return cls(groups, None, None)


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
    """Every number of a held-out evaluation; ``scoring`` says what made a row correct."""

    anchor_lang: str
    groups: int
    langs: dict[str, LangReport]
    consistency: Agreement
    consistency_by_task: dict[str, Agreement]
    # Consistency alone rewards agreeing on a wrong answer; read it beside this: the same correct answer.
    consistent_correct: Agreement
    consistent_correct_by_task: dict[str, Agreement]
    mean_gap: float | None  # over the non-anchor languages that have a gap
    scoring: Scoring = "generate"


def summarize(
    results: Sequence[RowResult], *, anchor_lang: str, langs: Sequence[str], scoring: Scoring = "generate"
) -> EvalReport:
    """Metrics per language (in ``langs`` order), gaps to ``anchor_lang`` and consistency across languages.

    Consistency counts the groups whose scored rows span at least two languages; such a group is
    consistent when every language gave the same, non-missing answer, and consistent and correct when every
    language answered correctly. Under ``loglikelihood`` consistency and agreement are not known (see the
    module docstring).
    """
    known = scoring == "generate"
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
            agrees = [
                _agree([group[lang], group[anchor_lang]])
                for group in answers.values()
                if lang in group and anchor_lang in group
            ]
            pairs = Agreement.of(agrees) if known else Agreement.unknown(len(agrees))
        reports[lang] = LangReport(overall, tasks, gap, relative, pairs)
    multilingual = {g: list(group.values()) for g, group in answers.items() if len(group) >= 2}
    tasks = sorted({task_of[g] for g in multilingual})
    by_task = {
        task: _consistency([a for g, a in multilingual.items() if task_of[g] == task], known)
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
        consistency=_consistency(list(multilingual.values()), known),
        consistency_by_task=by_task,
        consistent_correct=Agreement.of([all(correct[g]) for g in multilingual]),
        consistent_correct_by_task=correct_by_task,
        mean_gap=sum(gaps) / len(gaps) if gaps else None,
        scoring=scoring,
    )


def _consistency(groups: Sequence[Sequence[str | None]], known: bool) -> Agreement:
    return Agreement.of([_agree(a) for a in groups]) if known else Agreement.unknown(len(groups))


def _agree(answers: Sequence[str | None]) -> bool:
    return answers[0] is not None and all(a == answers[0] for a in answers)
