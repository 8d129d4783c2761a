"""``report/``: what a build kept and dropped, per language, and where the score thresholds cut.

Everything is derived from ``manifest.json`` and the score columns of the shards and rejects, so the report
can be redrawn at any time (``curate report DIR``) without re-running the build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from schemas import Manifest, read_ipc, writing

# Prefix of the manifest's threshold keys that say a value was estimated from the data (curate.manifest).
_ESTIMATED = "estimated."

REPORT_DIR = "report"
_SCORE_COLUMNS = ("lang", "is_anchor", "lid_prob", "equivalence", "length_ratio")


def load_scores(out: Path, manifest: Manifest) -> pl.DataFrame:
    """Score columns of every kept and rejected translation, with ``outcome`` = kept / stage.reason."""
    frames = []
    for info in manifest.shards:
        frame = _read(out / info.file, "parallel", list(_SCORE_COLUMNS))
        frames.append(frame.with_columns(pl.lit("kept").alias("outcome")))
    for info in manifest.rejects:
        frame = _read(out / info.file, "reject", [*_SCORE_COLUMNS, "stage", "reason"])
        frames.append(
            frame.with_columns(pl.concat_str("stage", pl.lit("."), "reason").alias("outcome")).drop(
                "stage", "reason"
            )
        )
    if not frames:
        return pl.DataFrame(schema={c: pl.Utf8 for c in (*_SCORE_COLUMNS, "outcome")})
    scores = pl.concat(frames, how="vertical_relaxed")
    return scores.filter(pl.col("is_anchor").not_() & pl.col("lang").is_not_null())


def _read(path: Path, kind: str, columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame(read_ipc(path, kind, columns=columns))


def low_keep_rates(manifest: Manifest, floor: float) -> dict[str, str]:
    """Languages that kept less than ``floor`` of the rows they read, each with a line saying why."""
    out = {}
    for lang, c in manifest.counts.items():
        if c.read and c.kept / c.read < floor:
            top = sorted(c.rejected.items(), key=lambda kv: -kv[1])[:3]
            reasons = ", ".join(f"{r} {n}" for r, n in top)
            out[lang] = (
                f"{lang} kept {c.kept} of {c.read} rows ({c.kept / c.read:.0%}), below {floor:.0%}: {reasons}"
            )
    return out


def write_report(out: Path, *, min_keep_rate: float = 0.5) -> Path:
    """Write ``report/report.md`` and its PNG plots; returns the markdown path. Languages that keep less
    than ``min_keep_rate`` of their rows are flagged."""
    manifest = Manifest.load(out)
    scores = load_scores(out, manifest)
    report = out / REPORT_DIR
    with writing(report):  # a full disk ends with one line; the report is drawn again on the next run
        report.mkdir(parents=True, exist_ok=True)
        return _draw(report, manifest, scores, low_keep_rates(manifest, min_keep_rate))


def _draw(report: Path, manifest: Manifest, scores: pl.DataFrame, low: dict[str, str]) -> Path:
    plots = [_plot_keep_rate(manifest, report / "keep_rate.png")]
    cuts = manifest.thresholds

    def per_lang(key: str) -> Callable[[str], list[float]]:
        return lambda lang: [x for x in (cuts.get(f"{key}.{lang}", cuts.get(key)),) if x is not None]

    def fixed(*keys: str) -> Callable[[str], list[float]]:
        return lambda lang: [cuts[k] for k in keys if k in cuts]

    for column, title, lines in (
        ("equivalence", "equivalence (cosine to anchor)", fixed("equivalence_floor", "equivalence")),
        ("lid_prob", "language ID probability", per_lang("lid_min_prob")),
        (
            "length_ratio",
            "length ratio (translation / anchor)",
            fixed("length_ratio_min", "length_ratio_max"),
        ),
    ):
        path = _plot_histograms(scores, column, title, lines, report / f"{column}.png")
        if path is not None:
            plots.append(path)
    md = report / "report.md"
    md.write_text(_markdown(manifest, scores, plots, low), encoding="utf-8")
    return md


def _markdown(manifest: Manifest, scores: pl.DataFrame, plots: list[Path], low: dict[str, str]) -> str:
    lines = [
        "# Curation report",
        "",
        f"Anchor language `{manifest.anchor_lang}`; targets {', '.join(f'`{x}`' for x in manifest.langs)}. "
        f"{sum(s.rows for s in manifest.shards)} rows kept in {len(manifest.shards)} shards, "
        f"{sum(s.rows for s in manifest.rejects)} rejected. Config hash `{manifest.config_hash}`.",
        "",
    ]
    if low:
        lines += ["**Warning: keep rate below the floor** (see the reasons and the score plots below):", ""]
        lines += [f"- {line}" for line in low.values()] + [""]
    lines += [
        "## Rows per language",
        "",
        "| lang | read | kept | keep rate | rejected |",
        "|---|---:|---:|---:|---|",
    ]
    for lang, c in manifest.counts.items():
        rate = f"{c.kept / c.read:.1%}" if c.read else "-"
        rate += " ⚠" if lang in low else ""
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(c.rejected.items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"| {lang} | {c.read} | {c.kept} | {rate} | {reasons} |")
    reasons = sorted({r for c in manifest.counts.values() for r in c.rejected})
    if reasons:
        langs = list(manifest.counts)
        lines += [
            "",
            "## Rejections by reason",
            "",
            "| reason | " + " | ".join(langs) + " | total |",
            "|---|" + "---:|" * (len(langs) + 1),
        ]
        for reason in reasons:
            per = [manifest.counts[lang].rejected.get(reason, 0) for lang in langs]
            lines.append(f"| `{reason}` | " + " | ".join(map(str, per)) + f" | {sum(per)} |")
    if scores.height:
        lines += [
            "",
            "## Scores of translations (kept and rejected)",
            "",
            "| lang | n | equivalence p10 / p50 / p90 | lid_prob p10 / p50 | length ratio p50 |",
            "|---|---:|---|---|---:|",
        ]
        for lang in sorted(scores["lang"].unique().to_list()):
            s = scores.filter(pl.col("lang") == lang)
            eq = _quantiles(s["equivalence"], (0.1, 0.5, 0.9))
            lid = _quantiles(s["lid_prob"], (0.1, 0.5))
            ratio = _quantiles(s["length_ratio"], (0.5,))
            lines.append(f"| {lang} | {s.height} | {eq} | {lid} | {ratio} |")
    cuts = {k: v for k, v in manifest.thresholds.items() if not k.startswith(_ESTIMATED)}
    if cuts:
        lines += ["", "Thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in sorted(cuts.items()))]
    estimated = {
        k[len(_ESTIMATED) :]: int(v) for k, v in manifest.thresholds.items() if k.startswith(_ESTIMATED)
    }
    if estimated:
        lines += [
            "",
            f"Estimated from the data, label-free, on the first {max(estimated.values())} groups of the input "
            f"(the embedder has no calibration for them): {', '.join(sorted(estimated))}. Check them against "
            "the histograms below before trusting them; see docs/curation.md.",
        ]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(lines)


def _quantiles(values: pl.Series, qs: tuple[float, ...]) -> str:
    values = values.drop_nulls().cast(pl.Float64)
    if values.is_empty():
        return "-"
    return " / ".join(f"{values.quantile(q, interpolation='linear'):.2f}" for q in qs)


def _plot_keep_rate(manifest: Manifest, path: Path) -> Path:
    langs = [lang for lang, c in manifest.counts.items() if c.read]
    rates = [manifest.counts[lang].kept / manifest.counts[lang].read for lang in langs]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(langs) + 2), 3.2))
    bars = ax.bar(langs, rates, color="#4C72B0")
    ax.bar_label(bars, labels=[f"{r:.0%}" for r in rates], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("kept / read")
    ax.set_title("keep rate per language")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bin_edges(values: list[float], cuts: list[float], *, bins: int = 20) -> np.ndarray:
    """About ``bins`` equal bins over ``values`` such that every cut is an edge: no bar mixes rows on
    both sides of a threshold."""
    inside = sorted({c for c in cuts if min(values) < c < max(values)})
    lo, hi = min(values), max(values)
    if hi <= lo:
        return np.array([lo - 0.5, hi + 0.5])
    width = (hi - lo) / bins
    start = inside[0] if inside else lo
    grid = start + width * np.arange(np.floor((lo - start) / width), np.ceil((hi - start) / width) + 1)
    keep = [e for e in grid if all(abs(e - c) >= width / 2 for c in inside)]
    return np.unique(np.array([*keep, *inside, lo, hi]).clip(lo, hi))


def _plot_histograms(
    scores: pl.DataFrame, column: str, title: str, lines: Callable[[str], list[float]], path: Path
) -> Path | None:
    data = scores.filter(pl.col(column).is_not_null())
    if data.is_empty():
        return None
    langs = sorted(data["lang"].unique().to_list())
    fig, axes = plt.subplots(1, len(langs), figsize=(3 * len(langs) + 1, 2.8), squeeze=False, sharey=False)
    for ax, lang in zip(axes[0], langs, strict=True):
        s = data.filter(pl.col("lang") == lang)
        kept = s.filter(pl.col("outcome") == "kept")[column].cast(pl.Float64).to_list()
        dropped = s.filter(pl.col("outcome") != "kept")[column].cast(pl.Float64).to_list()
        cuts = lines(lang)
        ax.hist(
            [kept, dropped],
            bins=bin_edges(kept + dropped, cuts),
            stacked=True,
            color=["#55A868", "#C44E52"],
            label=["kept", "rejected"],
        )
        for x in cuts:
            ax.axvline(x, color="black", linestyle="--", linewidth=1)
        ax.set_title(lang)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
