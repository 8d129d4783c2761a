"""The experiment's data, made with the project's own pipeline.

1. **Sources**: English preference records (``prompt``, ``chosen`` = the correct worked answer, ``rejected``
   = a wrong one) for the training pool and, apart, for evaluation (no question appears in both).
2. **One `curate build` per target language** (``data.builds``): Apertium translates every record into
   that language, and the build's own checks (structure, language ID, equivalence) keep or reject each
   translation. The language check is set per language this way: lid.176 reads these short Catalan
   sentences as Hungarian half the time, so the Catalan build turns it off (see ``build_ca.yaml``; the
   ``lid_probe`` build records what it would have rejected) while the Spanish one keeps it.
3. **Assembly**: the kept rows of those builds become the corpora of the arms, written as long-form
   parallel records and passed once more through ``curate build`` (``assemble.yaml``: pre-translated, every
   check already done), so every arm reads ordinary shards with a manifest:

   ============  =====================================================================================
   ``eval``      the first ``eval_groups`` evaluation groups kept in en, es and ca
   ``parallel``  the first G training groups kept in en, es and ca (3G rows)
   ``english``   the parallel groups and the next 2G training groups, with whatever translations they
                 kept; the English arm reads their 3G anchors only (``langs: [en]`` in align-train)
   ``target``    es and ca of the parallel groups and of the next G/2 complete groups (3G rows), with
                 Spanish as the anchor so that no English row is left
   ============  =====================================================================================

   In ``parallel``, a share (``wrong_language_share``) of the translated rows get the English correct
   answer as their rejected answer ("the right answer in the wrong language"); the others keep their
   translated wrong answer. SFT reads prompt + chosen only, so this changes nothing but DPO and ORPO.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.feather as feather

from experiments.parallel_gap.config import HERE, LANGS, ROOT, ExperimentConfig
from experiments.parallel_gap.problems import problems
from schemas import MANIFEST_FILE, Manifest, stable_fraction

ANCHOR = LANGS[0]
ASSEMBLE = HERE / "assemble.yaml"
Row = dict[str, Any]


def run_cli(args: Sequence[str], *, log: Path, threads: int = 1) -> float:
    """``python -m ARGS`` from the repository root (this tree's code, not an installed copy), output to
    ``log``; a failure raises with the log's end. Returns the CPU seconds (user + system) it used."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ python -m {' '.join(args)}\n")
        out.flush()
        child = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        # wait4: this child's own resource use, whatever else runs beside it.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
        msg = f"python -m {' '.join(args)} exited with {child.returncode} (log {log}):\n{tail}"
        raise RuntimeError(msg)
    return usage.ru_utime + usage.ru_stime


def write_sources(cfg: ExperimentConfig, folder: Path) -> list[Path]:
    """``eval.jsonl`` and ``train.jsonl``: English preference records, evaluation questions drawn first,
    no question twice."""
    rng = random.Random(cfg.data.seed)
    seen: set[str] = set()
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("eval", cfg.data.eval_pool), ("train", cfg.data.train_pool)):
        path = folder / f"{split}.jsonl"
        drawn = problems(rng, count, two_step_share=cfg.data.two_step_share, seen=seen)
        with path.open("w", encoding="utf-8") as f:
            for i, p in enumerate(drawn):
                record = {
                    "id": f"{split}-{i:05d}",
                    "task": "math",
                    "problem": p.kind,
                    "prompt": p.question,
                    "chosen": p.answer,
                    "rejected": p.wrong,
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def build_languages(cfg: ExperimentConfig, sources: list[Path], out: Path) -> dict[str, Path]:
    """One `curate build` per target language, each with its own config; a finished build is skipped."""
    builds = {}
    for lang, config in sorted(cfg.data.builds.items()):
        folder = out / "builds" / lang
        if not (folder / MANIFEST_FILE).is_file():
            inputs = [arg for path in sources for arg in ("--input", str(path))]
            run_cli(
                [
                    "curate",
                    "build",
                    str(config),
                    *inputs,
                    "--out",
                    str(folder),
                    "--langs",
                    lang,
                    "--no-progress",
                ],
                log=out / "logs" / f"build-{lang}.log",
            )
        builds[lang] = folder
    return builds


def probe_lid(cfg: ExperimentConfig, sources: list[Path], out: Path) -> dict[str, Path]:
    """The builds of ``data.lid_probe`` once more with fastText language ID on: what it would have
    rejected where the experiment turns it off. Apertium's output is read from the real build's cache."""
    probes = {}
    for lang in cfg.data.lid_probe:
        folder = out / "builds" / f"{lang}-with-lid"
        if not (folder / MANIFEST_FILE).is_file():
            inputs = [arg for path in sources for arg in ("--input", str(path))]
            cache = out / "builds" / lang / ".state" / "translations.sqlite"
            run_cli(
                [
                    "curate",
                    "build",
                    str(cfg.data.builds[lang]),
                    *inputs,
                    "--out",
                    str(folder),
                    "--langs",
                    lang,
                    "--set",
                    "lid.enabled=true",
                    "--set",
                    f"translate.cache={cache}",
                    "--no-progress",
                ],
                log=out / "logs" / f"build-{lang}-with-lid.log",
            )
        probes[lang] = folder
    return probes


def kept_rows(folder: Path) -> dict[tuple[str, str], Row]:
    """The kept rows of a build by (group_id, lang)."""
    rows: dict[tuple[str, str], Row] = {}
    for shard in sorted((folder / "shards").glob("*.arrow")):
        for row in feather.read_table(shard).to_pylist():
            rows[row["group_id"], row["lang"]] = row
    return rows


def assemble(cfg: ExperimentConfig, builds: dict[str, Path], out: Path) -> dict[str, Path]:
    """The corpora of the arms and of the evaluation, each a `curate build` output folder."""
    by_lang = {lang: kept_rows(folder) for lang, folder in builds.items()}
    # An anchor is kept when every build kept it (only builds with language ID check anchors).
    anchors = set.intersection(*({g for g, lang in rows if lang == ANCHOR} for rows in by_lang.values()))
    complete = sorted(g for g in anchors if all((g, lang) in by_lang[lang] for lang in builds))
    row = {lang: (lambda g, lang=lang: by_lang[lang][g, lang]) for lang in builds}
    row[ANCHOR] = lambda g: next(iter(by_lang.values()))[g, ANCHOR]

    g = cfg.data.train_groups
    evals = [x for x in complete if x.startswith("eval-")]
    train = [x for x in complete if x.startswith("train-")]
    train_anchors = sorted(x for x in anchors if x.startswith("train-"))
    _enough("eval_groups", cfg.data.eval_groups, len(evals), "eval_pool")
    _enough("train_groups × 1.5 (the target arm)", g + g // 2, len(train), "train_pool")
    _enough("train_groups × 3 (the English arm)", 3 * g, len(train_anchors), "train_pool")
    parallel = train[:g]
    extra_english = [x for x in train_anchors if x not in set(parallel)][: 2 * g]
    plan: dict[str, tuple[list[Row], str]] = {
        "eval": ([row[lang](x) for x in evals[: cfg.data.eval_groups] for lang in LANGS], ANCHOR),
        "parallel": (
            [
                swap_rejected(row[lang](x), row[ANCHOR](x), cfg.data.wrong_language_share)
                for x in parallel
                for lang in LANGS
            ],
            ANCHOR,
        ),
        "english": (
            [row[lang](x) for x in [*parallel, *extra_english] for lang in LANGS if _has(by_lang, x, lang)],
            ANCHOR,
        ),
        "target": ([row[lang](x) for x in train[: g + g // 2] for lang in LANGS[1:]], LANGS[1]),
    }
    corpora = {}
    for name, (rows, anchor) in plan.items():
        folder = out / "corpora" / name
        if not (folder / MANIFEST_FILE).is_file():
            source = out / "corpora" / f"{name}.jsonl"
            source.parent.mkdir(parents=True, exist_ok=True)
            write_parallel(rows, source)
            langs = sorted({r["lang"] for r in rows} - {anchor})
            run_cli(
                [
                    "curate",
                    "build",
                    str(ASSEMBLE),
                    "--input",
                    str(source),
                    "--out",
                    str(folder),
                    "--anchor-lang",
                    anchor,
                    "--set",
                    f"langs={json.dumps(langs)}",
                    "--no-progress",
                ],
                log=out / "logs" / f"assemble-{name}.log",
            )
        corpora[name] = folder
    return corpora


def prepare(cfg: ExperimentConfig) -> dict[str, Path]:
    """Sources, per-language builds and corpora under ``cfg.out``; what exists is reused."""
    sources = write_sources(cfg, cfg.out / "sources")
    builds = build_languages(cfg, sources, cfg.out)
    corpora = assemble(cfg, builds, cfg.out)
    probes = probe_lid(cfg, sources, cfg.out)
    summary = {
        "builds": {lang: build_counts(folder) for lang, folder in builds.items()},
        "lid_probe": {lang: build_counts(folder) for lang, folder in probes.items()},
        "corpora": {name: build_counts(folder) for name, folder in corpora.items()},
    }
    (cfg.out / "data.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return corpora


def build_counts(folder: Path) -> dict[str, Any]:
    manifest = Manifest.load(folder)
    return {
        "groups": sum(s.groups for s in manifest.shards),
        "rows": sum(s.rows for s in manifest.shards),
        "counts": {lang: c.model_dump() for lang, c in manifest.counts.items()},
    }


def _has(by_lang: dict[str, dict[tuple[str, str], Row]], group: str, lang: str) -> bool:
    return lang == ANCHOR or (group, lang) in by_lang[lang]


def swap_rejected(row: Row, anchor: Row, share: float) -> Row:
    """A translated row whose rejected answer becomes the anchor's correct one, for ``share`` of the rows
    (chosen by a hash of group and language, so the same rows whatever the corpus size)."""
    if row["lang"] == ANCHOR or stable_fraction(f"{row['group_id']}/{row['lang']}") >= share:
        return row
    return {**row, "rejected": anchor["chosen"]}


def write_parallel(rows: list[Row], path: Path) -> None:
    """Rows as long-form parallel preference records (one per group and language) for `curate build`."""
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            record = {
                "id": r["group_id"],
                "lang": r["lang"],
                "task": r["task"],
                **json.loads(r["meta"] or "{}"),
                "prompt": _plain(r["messages"]),
                "chosen": _plain(r["chosen"]),
                "rejected": _plain(r["rejected"]),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _plain(messages: list[Row]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _enough(what: str, needed: int, have: int, pool: str) -> None:
    if have < needed:
        msg = (
            f"{what} needs {needed} groups but the builds kept {have}: raise data.{pool} "
            "(curation rejects part of every language)"
        )
        raise SystemExit(msg)
