"""Per-language metrics, gaps and consistency on hand-made rows: no model involved."""

from __future__ import annotations

import pytest

from align_train.eval.summary import RowResult, summarize


def row(
    group: str, lang: str, predicted: str | None, *, expected: str = "7", task: str = "math"
) -> RowResult:
    return RowResult(
        group, lang, task, nll=2.0, tokens=4, scorer="math", expected=expected, predicted=predicted
    )


def test_gap_consistency_and_agreement_on_hand_made_rows() -> None:
    results = [
        # g1: every language right -> consistent
        row("g1", "en", "7"),
        row("g1", "de", "7"),
        row("g1", "sw", "7"),
        # g2: en right, de the same wrong answer as sw -> not consistent; de and sw disagree with en
        row("g2", "en", "7"),
        row("g2", "de", "8"),
        row("g2", "sw", "8"),
        # g3: en and de agree on a wrong answer -> consistent and agreeing, but not correct; no sw row
        row("g3", "en", "5"),
        row("g3", "de", "5"),
        # g4: no answer anywhere -> a missing answer agrees with nothing
        row("g4", "en", None),
        row("g4", "de", None),
        # a loss-only row: counts for the loss, not for accuracy
        RowResult("g5", "en", "chat", nll=6.0, tokens=2),
    ]
    report = summarize(results, anchor_lang="en", langs=["en", "de", "sw"])
    en, de, sw = (report.langs[lang] for lang in ("en", "de", "sw"))
    assert (en.overall.rows, en.overall.scored, en.overall.correct) == (5, 4, 2)
    assert en.overall.accuracy == 0.5 and de.overall.accuracy == 0.25 and sw.overall.accuracy == 0.5
    assert en.overall.loss == pytest.approx((4 * 2.0 + 6.0) / (4 * 4 + 2))
    assert en.gap == 0.0 and en.relative_gap == 0.0 and en.agreement is None
    assert de.gap == pytest.approx(-0.25) and de.relative_gap == pytest.approx(-0.5)
    assert sw.gap == 0.0
    assert report.mean_gap == pytest.approx(-0.125)
    # Pairwise with en: de agrees in g1 and g3 of g1..g4; sw in g1 of g1, g2.
    assert (de.agreement.groups, de.agreement.agreeing) == (4, 2)
    assert (sw.agreement.groups, sw.agreement.agreeing) == (2, 1)
    assert (report.consistency.groups, report.consistency.agreeing) == (4, 2)
    assert report.consistency_by_task["math"].share == 0.5
    # Beside it, what cannot be misread: only g1 agrees on the correct answer (g3 agrees on a wrong one).
    assert (report.consistent_correct.groups, report.consistent_correct.agreeing) == (4, 1)
    assert report.consistent_correct_by_task["math"].share == 0.25
    assert set(en.tasks) == {"chat", "math"} and en.tasks["chat"].accuracy is None


def test_relative_gap_is_undefined_when_the_anchor_scores_zero() -> None:
    report = summarize([row("g1", "en", "1"), row("g1", "de", "7")], anchor_lang="en", langs=["en", "de"])
    assert report.langs["de"].gap == 1.0 and report.langs["de"].relative_gap is None


def test_calling_no_tool_in_every_language_is_not_consistency() -> None:
    from align_train.eval.scoring import SCORERS

    silent = SCORERS["tool"].predicted("I cannot look that up.")  # no call in any language
    expected = '[{"arguments":{"city":"Paris"},"name":"get_weather"}]'
    results = [
        RowResult(
            g, lang, "tool_calling", nll=1.0, tokens=1, scorer="tool", expected=expected, predicted=silent
        )
        for g in ("g1", "g2")
        for lang in ("en", "de", "sw")
    ]
    report = summarize(results, anchor_lang="en", langs=["en", "de", "sw"])
    assert report.langs["en"].overall.accuracy == 0.0
    assert (report.consistency.groups, report.consistency.agreeing) == (2, 0)
    assert report.consistent_correct.agreeing == 0
    assert report.langs["de"].agreement.agreeing == 0


def test_loglikelihood_scoring_reports_all_correct_and_no_consistency() -> None:
    """A row whose reference is not the greedy answer has an unknown answer: accuracy and all-correct are
    known, consistency and agreement are not (``share`` None), and the report and chart say so."""
    from align_train.eval.report import consistency_cell, markdown

    results = [  # predicted = the reference's answer where the reference is the greedy continuation
        row("g1", "en", "7"),
        row("g1", "de", "7"),
        row("g2", "en", "7"),
        row("g2", "de", None),
    ]
    report = summarize(results, anchor_lang="en", langs=["en", "de"], scoring="loglikelihood")
    assert report.scoring == "loglikelihood"
    assert report.langs["en"].overall.accuracy == 1.0 and report.langs["de"].overall.accuracy == 0.5
    assert (report.consistent_correct.groups, report.consistent_correct.agreeing) == (2, 1)
    assert (report.consistency.groups, report.consistency.agreeing, report.consistency.share) == (
        2,
        None,
        None,
    )
    assert report.consistency_by_task["math"].share is None
    assert report.langs["de"].agreement.share is None and report.langs["de"].agreement.groups == 2
    cell = consistency_cell(report.consistency, report.consistent_correct)
    assert cell == "- (50.0% correct)"
    header = {"data": "d", "split": "all", "holdout": 0.0, "max_new_tokens": 8, "backend": "transformers"}
    text = markdown(report, {}, header=header | {"wall_s": 1.0, "model": None}, chart="a.png")
    assert "greedy continuation" in text and "not available under log-likelihood scoring" in text
    assert "1 of 2 groups (50.0%) are correct in every language" in text
    generated = summarize(results, anchor_lang="en", langs=["en", "de"])
    assert generated.scoring == "generate" and generated.consistency.share == 0.5
