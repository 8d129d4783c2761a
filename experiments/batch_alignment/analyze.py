"""The experiment's numbers, from the rows ``align-train eval`` scored in every run.

A seed fixes the LoRA initialisation and the group order in every arm (common random numbers), and every
run scores the same test groups. A unit is one (seed, group) pair. Confidence intervals come from a
**two-way paired bootstrap**: a resample draws the seeds with replacement *and* the groups with
replacement, and the same draw serves every arm, so a difference between arms keeps both pairings and its
interval carries the variation of training runs as well as of questions (resampling both ways over-counts
their interaction: the intervals are, if anything, conservative). Every trained arm has the config's
``seeds``; the arms of ``arm_seeds`` have more, and a difference pairs the seeds both arms have.

Measures, per arm (seeds and groups pooled):

- ``accuracy/<lang>``: share of rows answered right (by the evaluation's scoring: the reference is the
  greedy answer, or the generated final number);
- ``non_en``: mean accuracy over the trained non-English languages; ``gap``: ``non_en`` − English;
- ``heldout``: mean accuracy over the languages never trained on;
- ``all_correct``: share of units right in English and every trained language;
- ``loss/<lang>`` and ``non_en_loss``: nats per reference-answer token (teacher-forced), a paired measure
  far more sensitive than accuracy.

The **minimum detectable effect** of a paired difference is ``(z₀.₉₇₅ + z₀.₈) · SE ≈ 2.80 · SE``, SE the
bootstrap standard deviation of the difference: the true difference a two-sided test at α = 0.05 detects
with 80% power.

    python -m experiments.batch_alignment.analyze experiments/batch_alignment/experiment.yaml  # redo
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.batch_alignment.config import ARMS, ExperimentConfig, load
from experiments.batch_alignment.plan import arm_runs

RunRef = tuple[str, int | None, Path]
Z_POWER = 1.959963984540054 + 0.8416212335729143  # z of α/2 = 0.025 plus z of 80% power

# (claim of the papers, arm, against, measure, direction the papers claim)
CLAIMS: list[tuple[str, str, str, str, int]] = [
    ("Batch composition alone (SFT): translations in the same step", "parallel", "shuffled", "non_en", +1),
    ("... and the gap to English", "parallel", "shuffled", "gap", +1),
    ("... and the non-English answer loss", "parallel", "shuffled", "non_en_loss", -1),
    ("Coupled term: cosine to the anchor", "cosine", "shuffled", "non_en", +1),
    ("Coupled term: in-batch contrastive", "contrastive", "shuffled", "non_en", +1),
    ("Coupled term: answer-likelihood consistency", "consistency", "shuffled", "non_en", +1),
    ("DPO on parallel batches (gap 13.9 → 4.1 in the paper)", "dpo-parallel", "dpo-shuffled", "non_en", +1),
    ("... and the gap to English", "dpo-parallel", "dpo-shuffled", "gap", +1),
    ("... and the non-English answer loss", "dpo-parallel", "dpo-shuffled", "non_en_loss", -1),
    (
        "ORPO on parallel batches (gap 13.6 → 3.6 in the paper)",
        "orpo-parallel",
        "orpo-shuffled",
        "non_en",
        +1,
    ),
    ("... and the gap to English", "orpo-parallel", "orpo-shuffled", "gap", +1),
    ("... and the non-English answer loss", "orpo-parallel", "orpo-shuffled", "non_en_loss", -1),
    ("Unseen languages improve with parallel batches", "parallel", "shuffled", "heldout", +1),
    ("... in answer loss", "parallel", "shuffled", "heldout_loss", -1),
    ("Unseen languages improve with parallel training at all", "parallel", "base", "heldout", +1),
    ("... in answer loss", "parallel", "base", "heldout_loss", -1),
    ("One extra language helps English", "bilingual", "english", "accuracy/en", +1),
    ("More languages help English", "parallel", "english", "accuracy/en", +1),
    ("Translations narrow the gap", "parallel", "english", "gap", +1),
]
DIFFERENCE_KEYS = ("non_en", "gap", "heldout", "accuracy/en", "non_en_loss", "heldout_loss", "all_correct")
# Differences reported besides the claims (each coupled term against parallel batches without it).
EXTRA = [("cosine", "parallel"), ("contrastive", "parallel"), ("consistency", "parallel")]


@dataclass
class ArmData:
    """One arm's scored rows as arrays over [seed, group, language]."""

    name: str
    seeds: list[int | None]
    correct: np.ndarray
    nll: np.ndarray
    tokens: np.ndarray


def read_rows(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def load_arm(name: str, runs: Sequence[RunRef], groups: list[str], langs: list[str]) -> ArmData:
    index = {g: i for i, g in enumerate(groups)}
    shape = (len(runs), len(groups), len(langs))
    correct, nll, tokens = np.zeros(shape, bool), np.zeros(shape), np.zeros(shape)
    seen = np.zeros(shape, bool)
    for s, (_, _, folder) in enumerate(runs):
        for row in read_rows(folder):
            if row["lang"] not in langs:
                continue
            at = (s, index[row["group_id"]], langs.index(row["lang"]))
            seen[at] = True
            correct[at] = bool(row["correct"])
            nll[at], tokens[at] = row["nll"], row["tokens"]
    if not seen.all():
        msg = f"arm {name}: some runs lack scored rows for some test groups and languages"
        raise ValueError(msg)
    return ArmData(name, [seed for _, seed, _ in runs], correct, nll, tokens)


def measures(
    arm: ArmData, seed_weights: np.ndarray, group_weights: np.ndarray, langs: list[str], cfg: ExperimentConfig
) -> dict[str, np.ndarray]:
    """Every measure for a batch of resamples: ``seed_weights`` [B, seeds] and ``group_weights`` [B, groups]
    count how often each seed and group is drawn. An arm with one run (the base model) uses it for every
    seed drawn."""
    if arm.correct.shape[0] == 1:
        seed_weights = seed_weights.sum(1, keepdims=True)
    units = seed_weights.sum(1) * group_weights.sum(1)

    def pooled(values: np.ndarray) -> np.ndarray:
        return np.einsum("bs,bg,sg...->b...", seed_weights, group_weights, values)

    accuracy = pooled(arm.correct.astype(float)) / units[:, None]
    loss = pooled(arm.nll) / np.maximum(pooled(arm.tokens), 1)
    out = {f"accuracy/{lang}": accuracy[:, i] for i, lang in enumerate(langs)}
    out |= {f"loss/{lang}": loss[:, i] for i, lang in enumerate(langs)}
    trained = [langs.index(lang) for lang in cfg.data.train_langs]
    heldout = [langs.index(lang) for lang in cfg.data.heldout_langs]
    out["non_en"] = accuracy[:, trained].mean(1)
    out["gap"] = out["non_en"] - accuracy[:, 0]
    out["heldout"] = accuracy[:, heldout].mean(1) if heldout else np.full(len(units), np.nan)
    out["non_en_loss"] = loss[:, trained].mean(1)
    out["heldout_loss"] = loss[:, heldout].mean(1) if heldout else np.full(len(units), np.nan)
    out["all_correct"] = pooled(arm.correct[..., [0, *trained]].all(-1).astype(float)) / units
    return out


def analyze(cfg: ExperimentConfig, runs: Sequence[RunRef], tuning: dict[str, Any]) -> dict[str, Any]:
    """Tables, plot and ``results.json`` in ``cfg.out`` from the finished runs."""
    langs = cfg.langs
    groups = sorted({row["group_id"] for row in read_rows(runs[0][2])})
    arms = {
        name: load_arm(name, [r for r in runs if r[0] == name], groups, langs)
        for name in dict.fromkeys(arm for arm, _, _ in runs)
    }
    rng = np.random.default_rng(0)
    draws = {
        tuple(cfg.seeds): _counts(
            rng.integers(len(cfg.seeds), size=(cfg.bootstrap, len(cfg.seeds))), len(cfg.seeds)
        )
    }
    group_weights = _counts(rng.integers(len(groups), size=(cfg.bootstrap, len(groups))), len(groups))
    ones_g = np.ones((1, len(groups)))

    def seed_draw(seeds: Sequence[int | None]) -> np.ndarray:
        """One resampling of ``seeds`` per bootstrap round, the same for every arm paired on them."""
        key = tuple(cfg.seeds) if seeds == [None] else tuple(seeds)
        if key not in draws:
            more = np.random.default_rng([0, *key])
            draws[key] = _counts(more.integers(len(key), size=(cfg.bootstrap, len(key))), len(key))
        return draws[key]

    def point_and_boot(arm: ArmData) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        point = measures(arm, np.ones((1, len(arm.seeds))), ones_g, langs, cfg)
        return {k: float(v[0]) for k, v in point.items()}, measures(
            arm, seed_draw(arm.seeds), group_weights, langs, cfg
        )

    whole = {name: point_and_boot(arm) for name, arm in arms.items()}
    result: dict[str, Any] = {
        "groups": len(groups),
        "seeds": cfg.seeds,
        "arm_seeds": {name: arm.seeds for name, arm in arms.items() if arm.seeds not in (cfg.seeds, [None])},
        "units": len(groups) * len(cfg.seeds),
        "bootstrap": cfg.bootstrap,
        "langs": langs,
        "tuning": tuning,
        "arms": {},
    }
    for name, arm in arms.items():
        point, boot = whole[name]
        result["arms"][name] = {
            "seeds": arm.seeds,
            "units": len(groups) * len(arm.seeds),
            "description": ARMS[name].description,
            "point": point,
            "ci95": {k: _ci(boot[k]) for k in point},
            "per_seed": [
                {
                    k: float(v[0])
                    for k, v in measures(_seeds(arm, [s]), np.ones((1, 1)), ones_g, langs, cfg).items()
                }
                for s in arm.seeds
            ],
        }

    def difference(arm: str, other: str) -> dict[str, Any]:
        """Every measure of ``arm`` − ``other`` over the seeds both have (all of ``arm``'s against the base
        model's one run)."""
        a, b = arms[arm], arms[other]
        common = a.seeds if b.seeds == [None] else [s for s in a.seeds if s in b.seeds]
        (pa, ba), (pb, bb) = (
            whole[x.name] if x.seeds in (common, [None]) else point_and_boot(_seeds(x, common))
            for x in (a, b)
        )
        out: dict[str, Any] = {"seeds": common}
        for key in DIFFERENCE_KEYS:
            values = ba[key] - bb[key]
            se = float(np.std(values, ddof=1))
            out[key] = {"point": pa[key] - pb[key], "ci95": _ci(values), "se": se, "mde": Z_POWER * se}
        return out

    pairs = [(a, b) for _, a, b, _, _ in CLAIMS] + EXTRA
    result["differences"] = {
        f"{a} - {b}": difference(a, b) for a, b in dict.fromkeys(pairs) if a in arms and b in arms
    }
    result["claims"] = [
        {
            "claim": claim,
            "arm": a,
            "against": b,
            "measure": key,
            "seeds": result["differences"][f"{a} - {b}"]["seeds"],
            **_verdict(result["differences"][f"{a} - {b}"][key], sign),
        }
        for claim, a, b, key, sign in CLAIMS
        if f"{a} - {b}" in result["differences"]
    ]
    result["data"] = json.loads((cfg.out / "data.json").read_text(encoding="utf-8"))
    (cfg.out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (cfg.out / "results.md").write_text(markdown(result), encoding="utf-8")
    plot(result, cfg.out / "accuracy.png")
    return result


def dev_score(folders: Sequence[Path], train_langs: Sequence[str]) -> dict[str, float]:
    """Dev accuracy and answer loss over the trained non-English languages, runs pooled: what tuning
    compares."""
    rows = [row for folder in folders for row in read_rows(folder) if row["lang"] in train_langs]
    return {
        "accuracy": float(np.mean([bool(r["correct"]) for r in rows])),
        "loss": float(sum(r["nll"] for r in rows) / max(1, sum(r["tokens"] for r in rows))),
        "rows": len(rows),
    }


def _verdict(diff: dict[str, Any], sign: int) -> dict[str, Any]:
    low, high = sorted(sign * bound for bound in diff["ci95"])
    verdict = "supported" if low > 0 else "contradicted" if high < 0 else "not detected"
    return {**diff, "verdict": verdict}


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/results.md."""
    langs = result["langs"]
    more = "".join(
        f"; {name}: seeds {seeds}, {result['groups'] * len(seeds)} units"
        for name, seeds in result.get("arm_seeds", {}).items()
    )
    lines = [
        f"Test groups: {result['groups']}, each scored in {', '.join(langs)}; seeds {result['seeds']}: "
        f"{result['units']} seed × group units per arm{more}; 95% CI: paired bootstrap over seeds and groups "
        f"({result['bootstrap']} resamples; a difference pairs the seeds both arms have).",
        "",
        "| claim | arm − control | measure | difference [95% CI] | minimum detectable effect | verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    for c in result["claims"]:
        lines.append(
            f"| {c['claim']} | {c['arm']} − {c['against']} | {_measure_name(c['measure'])} | "
            f"{_difference(c['measure'], c['point'], c['ci95'])} | {_size(c['measure'], c['mde'])} | "
            f"{c['verdict']} |"
        )
    lines += [
        "",
        "| arm | seeds | " + " | ".join(langs) + " | non-English | gap | all correct |",
        "|---|---:|" + "---:|" * (len(langs) + 3),
    ]
    for name, arm in result["arms"].items():
        p, ci = arm["point"], arm["ci95"]
        cells = [_pct(p[f"accuracy/{lang}"], ci[f"accuracy/{lang}"]) for lang in langs]
        cells += [
            _pct(p["non_en"], ci["non_en"]),
            _pts(p["gap"], ci["gap"]),
            f"{100 * p['all_correct']:.1f}%",
        ]
        lines.append(f"| {name} | {len(arm['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "Answer loss (nats per reference token, all seeds):", ""]
    lines += ["| arm | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs)]
    for name, arm in result["arms"].items():
        lines.append(
            f"| {name} | " + " | ".join(f"{arm['point'][f'loss/{lang}']:.3f}" for lang in langs) + " |"
        )
    lines += [
        "",
        "Paired differences (95% CI; MDE = minimum detectable effect, points):",
        "",
        "| arm − control | seeds | non-English accuracy | MDE | gap | held-out | English | non-English loss "
        "| held-out loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pair, d in result["differences"].items():
        lines.append(
            f"| {pair} | {len(d['seeds'])} | {_pts(d['non_en']['point'], d['non_en']['ci95'])} | "
            f"{100 * d['non_en']['mde']:.1f} | "
            f"{_pts(d['gap']['point'], d['gap']['ci95'])} | {_pts(d['heldout']['point'], d['heldout']['ci95'])} | "
            f"{_pts(d['accuracy/en']['point'], d['accuracy/en']['ci95'])} | "
            f"{_difference('non_en_loss', d['non_en_loss']['point'], d['non_en_loss']['ci95'])} | "
            f"{_difference('heldout_loss', d['heldout_loss']['point'], d['heldout_loss']['ci95'])} |"
        )
    lines += ["", "Per seed (accuracy " + " / ".join(langs) + "):", ""]
    columns = sorted({s for arm in result["arms"].values() for s in arm["seeds"] if s is not None})
    lines += ["| arm | " + " | ".join(f"seed {s}" for s in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, arm in result["arms"].items():
        by_seed = {
            s: " / ".join(f"{100 * m[f'accuracy/{lang}']:.0f}" for lang in langs)
            for s, m in zip(arm["seeds"], arm["per_seed"], strict=True)
        }
        cells = [by_seed.get(s, "-") for s in columns] if None not in by_seed else [by_seed[None]]
        cells += ["-"] * (len(columns) - len(cells))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result["tuning"]:
        lines += [
            "",
            "Settings chosen on the dev groups (dev accuracy over the trained non-English languages, answer loss):",
            "",
        ]
        lines += ["| key | candidate | dev accuracy | dev loss | chosen |", "|---|---|---:|---:|---|"]
        for key, choice in result["tuning"].items():
            for name, score in choice["dev"].items():
                mark = "yes" if name == choice["chosen"] else ""
                lines.append(
                    f"| {key} | {name} | {100 * score['accuracy']:.1f}% | {score['loss']:.3f} | {mark} |"
                )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy per language per arm (95% CIs), and each claim's paired difference with its MDE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs, names = result["langs"], list(result["arms"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(langs)
    x = np.arange(len(names))
    for i, lang in enumerate(langs):
        key = f"accuracy/{lang}"
        values = np.array([100 * result["arms"][n]["point"][key] for n in names])
        ci = np.array([[100 * v for v in result["arms"][n]["ci95"][key]] for n in names])
        left.bar(
            x + (i - (len(langs) - 1) / 2) * width,
            values,
            width,
            yerr=np.abs(ci.T - values),
            capsize=1.5,
            label=lang,
        )
    left.set_xticks(x, names, rotation=30, ha="right")
    left.set_ylabel("accuracy on the test groups (%)")
    left.set_title("accuracy per language (95% CI over seeds and groups)")
    left.legend(title="language", ncol=len(langs), fontsize=8)
    claims = [c for c in result["claims"] if not _is_loss(c["measure"])]  # accuracy points only
    y = np.arange(len(claims))
    points = np.array([100 * c["point"] for c in claims])
    ci = np.array([[100 * v for v in c["ci95"]] for c in claims])
    right.errorbar(points, y, xerr=np.abs(ci.T - points), fmt="o", capsize=3, color="black")
    for i, c in enumerate(claims):
        right.plot([-100 * c["mde"], 100 * c["mde"]], [i, i], color="tab:orange", alpha=0.35, linewidth=6)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_yticks(
        y, [f"{c['arm']} − {c['against']} ({_measure_name(c['measure'])})" for c in claims], fontsize=8
    )
    right.invert_yaxis()
    right.set_xlabel("paired difference (points); orange: ± minimum detectable effect")
    right.set_title("the claims")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _seeds(arm: ArmData, seeds: Sequence[int | None]) -> ArmData:
    """``arm``'s runs of ``seeds``, in that order."""
    at = [arm.seeds.index(s) for s in seeds]
    return ArmData(arm.name, list(seeds), arm.correct[at], arm.nll[at], arm.tokens[at])


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items appears in each row of ``draws``."""
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)


def _measure_name(key: str) -> str:
    return {
        "non_en": "non-English accuracy",
        "gap": "gap to English",
        "heldout": "held-out accuracy",
        "non_en_loss": "non-English answer loss (nats/token)",
        "heldout_loss": "held-out answer loss (nats/token)",
    }.get(key, key.replace("accuracy/", "accuracy "))


def _is_loss(key: str) -> bool:
    return key.endswith("loss") or key.startswith("loss/")


def _difference(key: str, value: float, ci: Sequence[float]) -> str:
    """A difference in points of accuracy, or in nats per token for a loss."""
    if _is_loss(key):
        return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
    return _pts(value, ci)


def _size(key: str, mde: float) -> str:
    return f"{mde:.3f}" if _is_loss(key) else f"{100 * mde:.1f}"


def _ci(values: np.ndarray) -> list[float]:
    low, high = np.nanpercentile(values, [2.5, 97.5])
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
    tuning = json.loads((cfg.out / "tuned.json").read_text(encoding="utf-8"))
    tuned = {key: choice["settings"] for key, choice in tuning.items()}
    analyze(cfg, [(r.arm.name, r.seed, r.folder) for r in arm_runs(cfg, cfg.arms, tuned)], tuning)
    print((cfg.out / "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
