"""The experiment's numbers, from the predictions ``align-train eval`` wrote for every run.

For each arm, every measure is computed over its seeds together (each seed's answers to the same
held-out groups) and given a 95% confidence interval by a percentile bootstrap over the **groups**: a
resample draws groups with replacement, and the same draw is applied to every seed, language and arm, so
differences between arms are paired. The spread over seeds is reported beside it.

- ``accuracy`` per language: share of rows whose final number is the reference's;
- ``gap``: accuracy − English accuracy; ``mean_gap`` over es and ca; ``non_en``: mean of es and ca;
- ``consistency``: share of groups whose three languages gave the same (non-missing) answer, and
  ``consistent_correct``: share whose three languages were all right (as ``align-train eval`` reports);
- ``loss``: nats per reference-answer token, per language.

    python -m experiments.parallel_gap.analyze experiments/parallel_gap/experiment.yaml   # redo from files
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.parallel_gap.config import ARMS, LANGS, ExperimentConfig, load, plan

ANCHOR = LANGS[0]
TARGETS = LANGS[1:]
RunRef = tuple[str, int | None, Path]
MEASURES = ("non_en", "mean_gap", "consistency", "consistent_correct")


@dataclass
class ArmData:
    """One arm's evaluation as arrays over [seed, group, language] (languages in ``LANGS`` order)."""

    name: str
    seeds: list[int | None]
    correct: np.ndarray  # bool
    answer: np.ndarray  # int codes of the predicted answers; -1 = no answer
    nll: np.ndarray
    tokens: np.ndarray


def load_arm(name: str, runs: Sequence[RunRef], groups: list[str]) -> ArmData:
    """The predictions of ``runs`` (one arm, one per seed) on ``groups``; each run's own summary must agree."""
    index = {g: i for i, g in enumerate(groups)}
    shape = (len(runs), len(groups), len(LANGS))
    correct, nll, tokens = np.zeros(shape, bool), np.zeros(shape), np.zeros(shape)
    answer = np.full(shape, -1, np.int64)
    codes: dict[str, int] = {}
    seen = np.zeros(shape, bool)
    for s, (_, _, folder) in enumerate(runs):
        for line in (folder / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            at = (s, index[row["group_id"]], LANGS.index(row["lang"]))
            seen[at] = True
            correct[at] = bool(row["correct"])
            nll[at], tokens[at] = row["nll"], row["tokens"]
            if row["predicted"] is not None:
                answer[at] = codes.setdefault(row["predicted"], len(codes))
        _check_against_report(folder, correct[s])
    if not seen.all():
        msg = f"arm {name}: some runs lack predictions for some held-out groups and languages"
        raise ValueError(msg)
    return ArmData(name, [seed for _, seed, _ in runs], correct, answer, nll, tokens)


def measures(arm: ArmData, draw: np.ndarray) -> dict[str, float]:
    """Every measure of ``arm`` on the groups ``draw`` (indices, repeats allowed), all seeds pooled."""
    correct, answer = arm.correct[:, draw], arm.answer[:, draw]
    nll, tokens = arm.nll[:, draw], arm.tokens[:, draw]
    accuracy = correct.mean(axis=(0, 1))
    out = {f"accuracy/{lang}": float(accuracy[i]) for i, lang in enumerate(LANGS)}
    out |= {f"gap/{lang}": float(accuracy[i] - accuracy[0]) for i, lang in enumerate(LANGS) if i}
    out |= {f"loss/{lang}": float(nll[..., i].sum() / tokens[..., i].sum()) for i, lang in enumerate(LANGS)}
    out["non_en"] = float(accuracy[1:].mean())
    out["mean_gap"] = float(accuracy[1:].mean() - accuracy[0])
    same = (answer >= 0).all(axis=2) & (answer == answer[..., :1]).all(axis=2)
    out["consistency"] = float(same.mean())
    out["consistent_correct"] = float(correct.all(axis=2).mean())
    return out


def analyze(cfg: ExperimentConfig, runs: Sequence[RunRef]) -> dict[str, Any]:
    """Tables, plot and ``results.json`` in ``cfg.out`` from the finished runs."""
    groups = _eval_groups(runs)
    arms = {}
    for name in dict.fromkeys(arm for arm, _, _ in runs):
        arms[name] = load_arm(name, [r for r in runs if r[0] == name], groups)
    rng = np.random.default_rng(0)
    draws = rng.integers(len(groups), size=(cfg.bootstrap, len(groups)))
    everything = np.arange(len(groups))
    point = {name: measures(arm, everything) for name, arm in arms.items()}
    boot = {name: [measures(arm, d) for d in draws] for name, arm in arms.items()}
    result: dict[str, Any] = {"groups": len(groups), "bootstrap": cfg.bootstrap, "arms": {}}
    for name, arm in arms.items():
        result["arms"][name] = {
            "seeds": arm.seeds,
            "description": ARMS[name].description,
            "point": point[name],
            "ci95": {k: _ci([b[k] for b in boot[name]]) for k in point[name]},
            "per_seed": [
                measures(ArmData(name, [seed], *(a[i : i + 1] for a in _arrays(arm))), everything)
                for i, seed in enumerate(arm.seeds)
            ],
        }
    if "parallel" in arms:
        result["parallel_minus"] = {
            other: {
                k: {
                    "point": point["parallel"][k] - point[other][k],
                    "ci95": _ci([p[k] - o[k] for p, o in zip(boot["parallel"], boot[other], strict=True)]),
                }
                for k in MEASURES
            }
            for other in arms
            if other != "parallel"
        }
    result["by_problem"] = _by_problem(cfg, arms, groups)
    result["benchmarks"] = _benchmarks(runs)
    result["data"] = json.loads((cfg.out / "data.json").read_text(encoding="utf-8"))
    result["tokens"] = _trained_tokens(cfg)
    (cfg.out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (cfg.out / "results.md").write_text(markdown(cfg, result), encoding="utf-8")
    plot(result, cfg.out / "accuracy.png")
    return result


def markdown(cfg: ExperimentConfig, result: dict[str, Any]) -> str:
    """The tables of docs/results.md."""
    arms = result["arms"]
    lines = [
        f"Held-out groups: {result['groups']}, each scored in {', '.join(LANGS)}; seeds pooled per arm; "
        f"95% CI: percentile bootstrap over groups ({result['bootstrap']} resamples).",
        "",
        "| arm | seeds | " + " | ".join(f"{lang} accuracy" for lang in LANGS) + " | mean gap to en | "
        "consistency (all correct) |",
        "|---|---:|" + "---:|" * (len(LANGS) + 2),
    ]
    for name, arm in arms.items():
        p, ci = arm["point"], arm["ci95"]
        cells = [_pct(p[f"accuracy/{lang}"], ci[f"accuracy/{lang}"]) for lang in LANGS]
        cells.append(_pts(p["mean_gap"], ci["mean_gap"]))
        cells.append(f"{100 * p['consistency']:.1f}% ({100 * p['consistent_correct']:.1f}%)")
        lines.append(f"| {name} | {len(arm['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "Answer loss (nats per reference token, all seeds):", ""]
    lines += ["| arm | " + " | ".join(LANGS) + " |", "|---|" + "---:|" * len(LANGS)]
    for name, arm in arms.items():
        cells = [f"{arm['point'][f'loss/{lang}']:.3f}" for lang in LANGS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "parallel_minus" in result:
        lines += ["", "Parallel batches minus each other arm (paired over the same groups; 95% CI):", ""]
        lines += [
            "| against | non-English accuracy | mean gap to en | consistency | all correct |",
            "|---|---:|---:|---:|---:|",
        ]
        for other, diff in result["parallel_minus"].items():
            cells = [_pts(diff[k]["point"], diff[k]["ci95"]) for k in MEASURES]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (accuracy en / es / ca, mean gap):", ""]
    lines += [
        "| arm | " + " | ".join(f"seed {s}" for s in cfg.seeds) + " |",
        "|---|" + "---|" * len(cfg.seeds),
    ]
    for name, arm in arms.items():
        cells = [
            " / ".join(f"{100 * m[f'accuracy/{lang}']:.0f}" for lang in LANGS)
            + f", {100 * m['mean_gap']:+.0f}"
            for m in arm["per_seed"]
        ]
        cells += ["-"] * (len(cfg.seeds) - len(cells))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    by_problem = result["by_problem"]
    lines += ["", "Accuracy by problem type (all languages and seeds):", ""]
    kinds = sorted({k for arm in by_problem.values() for k in arm})
    lines += ["| arm | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for name, arm in by_problem.items():
        cells = [f"{100 * arm[k]['accuracy']:.1f}% (n={arm[k]['groups']})" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for bench, per_arm in result["benchmarks"].items():
        langs = sorted({lang for arm in per_arm.values() for lang in arm["accuracy"]})
        lines += ["", f"{bench} through lm-evaluation-harness (mean over seeds):", ""]
        lines += ["| arm | " + " | ".join(langs) + " | mean gap |", "|---|" + "---:|" * (len(langs) + 1)]
        for name, arm in per_arm.items():
            cells = [f"{100 * arm['accuracy'][lang]:.1f}%" for lang in langs]
            gap = arm["mean_gap"]
            cells.append("-" if gap is None else f"{100 * gap:+.1f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy per language per arm with 95% CIs, and the mean gap to English per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["arms"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / len(LANGS)
    x = np.arange(len(names))
    for i, lang in enumerate(LANGS):
        key = f"accuracy/{lang}"
        values = np.array([100 * result["arms"][n]["point"][key] for n in names])
        ci = np.array([[100 * v for v in result["arms"][n]["ci95"][key]] for n in names])
        errors = np.abs(ci.T - values)
        left.bar(x + (i - 1) * width, values, width, yerr=errors, capsize=2, label=lang)
    left.set_xticks(x, names)
    left.set_ylabel("accuracy on held-out groups (%)")
    left.set_title("accuracy per language (95% CI over groups, seeds pooled)")
    left.legend(title="language")
    gaps = np.array([100 * result["arms"][n]["point"]["mean_gap"] for n in names])
    ci = np.array([[100 * v for v in result["arms"][n]["ci95"]["mean_gap"]] for n in names])
    right.barh(x, gaps, xerr=np.abs(ci.T - gaps), capsize=2, color="tab:gray")
    right.axvline(0, color="black", linewidth=0.8)
    right.set_yticks(x, names)
    right.invert_yaxis()
    right.set_xlabel("mean gap of es, ca to en (points)")
    right.set_title("gap to English")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _arrays(arm: ArmData) -> tuple[np.ndarray, ...]:
    return arm.correct, arm.answer, arm.nll, arm.tokens


def _eval_groups(runs: Sequence[RunRef]) -> list[str]:
    """The held-out groups, from the first run's predictions (every run scores the same ones)."""
    first = runs[0][2] / "eval" / "predictions.jsonl"
    lines = first.read_text(encoding="utf-8").splitlines()
    return sorted({json.loads(line)["group_id"] for line in lines})


def _check_against_report(folder: Path, correct: np.ndarray) -> None:
    """The accuracy recomputed here must be the one ``align-train eval`` reported for the run."""
    report = json.loads((folder / "eval" / "metrics.json").read_text(encoding="utf-8"))
    for i, lang in enumerate(LANGS):
        reported = report["langs"][lang]["overall"]["accuracy"]
        if abs(reported - correct[:, i].mean()) > 1e-9:
            msg = f"{folder}: accuracy of {lang} recomputed as {correct[:, i].mean()}, reported {reported}"
            raise ValueError(msg)


def _by_problem(cfg: ExperimentConfig, arms: dict[str, ArmData], groups: list[str]) -> dict[str, Any]:
    """Accuracy by problem type (one or two steps) of each arm, every language and seed pooled."""
    source = cfg.out / "sources" / "eval.jsonl"
    kinds = {}
    for line in source.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        kinds[record["id"]] = "two-step" if "_then_" in record["problem"] else "one-step"
    kind = np.array([kinds[g] for g in groups])
    return {
        name: {
            k: {"accuracy": float(arm.correct[:, kind == k].mean()), "groups": int((kind == k).sum())}
            for k in sorted(set(kind))
        }
        for name, arm in arms.items()
    }


def _benchmarks(runs: Sequence[RunRef]) -> dict[str, dict[str, Any]]:
    """Standard benchmarks the evaluations ran (``eval.tasks``): accuracy per language and mean gap per
    arm, averaged over its seeds. Empty when none ran."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, _, folder in runs:
        report = json.loads((folder / "eval" / "metrics.json").read_text(encoding="utf-8"))
        for bench, data in report.get("benchmarks", {}).items():
            found.setdefault(bench, {}).setdefault(name, []).append(data)
    out: dict[str, dict[str, Any]] = {}
    for bench, per_arm in found.items():
        out[bench] = {}
        for name, reports in per_arm.items():
            langs = sorted({lang for r in reports for lang in r["langs"]})
            gaps = [r["mean_gap"] for r in reports if r["mean_gap"] is not None]
            out[bench][name] = {
                "accuracy": {
                    lang: float(np.mean([r["langs"][lang]["accuracy"] for r in reports])) for lang in langs
                },
                "mean_gap": float(np.mean(gaps)) if gaps else None,
                "seeds": len(reports),
            }
    return out


def _trained_tokens(cfg: ExperimentConfig) -> dict[str, Any]:
    """Rows and tokens (chat template applied, as the collator renders them) each training arm reads."""
    import pyarrow.feather as feather
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    out = {}
    for name in cfg.arms:
        arm = ARMS[name]
        if not arm.trains:
            continue
        rows = [
            row
            for shard in sorted((cfg.out / "corpora" / str(arm.corpus) / "shards").glob("*.arrow"))
            for row in feather.read_table(shard).to_pylist()
            if arm.langs is None or row["lang"] in arm.langs
        ]
        completions = ["chosen", "rejected"] if arm.objective != "sft" else ["chosen"]
        tokens = sum(
            _token_count(tokenizer, row["messages"] + row[completion])
            for row in rows
            for completion in completions
        )
        out[name] = {"rows": len(rows), "sequences": len(rows) * len(completions), "tokens": tokens}
    return out


def _token_count(tokenizer: Any, messages: list[dict[str, Any]]) -> int:
    text = tokenizer.apply_chat_template(_plain(messages), tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _ci(values: Sequence[float]) -> list[float]:
    low, high = np.percentile(np.array(values), [2.5, 97.5])
    return [float(low), float(high)]


def _pct(value: float, ci: Sequence[float]) -> str:
    return f"{100 * value:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _pts(value: float, ci: Sequence[float]) -> str:
    return f"{100 * value:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Redo the analysis of a finished experiment from its files.")
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load(args.config, args.overrides)
    analyze(cfg, [(r.arm.name, r.seed, r.folder) for r in plan(cfg)])
    print((cfg.out / "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
