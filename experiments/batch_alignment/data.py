"""The experiment's data, made with the project's own pipeline, as in :mod:`experiments.parallel_gap`.

1. **Sources**: English preference records (prompt, chosen = the correct worked answer, rejected = a
   wrong one) in three disjoint pools: ``train``, ``dev`` (settings are chosen on it) and ``test`` (the
   results; nothing is chosen on it). No question appears in two pools.
2. **One `curate build` per language** (``data.builds``): Apertium translates every record, and the
   build's checks (structure, language ID, equivalence) keep or reject each translation, at their
   default settings.
3. **Assembly** into three corpora of ordinary shards (``curate build`` of pre-translated records, every
   check already done): ``train``, the first G training groups kept in English and every training
   language (a share of their translated rows get the English correct answer as rejected answer: the
   right answer in the wrong language); ``dev`` and ``test``, groups kept in every language, held-out
   languages included.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from experiments.batch_alignment.config import ExperimentConfig
from experiments.parallel_gap.data import (
    ASSEMBLE,
    build_counts,
    kept_rows,
    run_cli,
    swap_rejected,
    write_parallel,
)
from experiments.parallel_gap.problems import problems
from schemas import MANIFEST_FILE

ANCHOR = "en"
POOLS = ("test", "dev", "train")
Row = dict[str, Any]


def write_sources(cfg: ExperimentConfig, folder: Path) -> list[Path]:
    """``test.jsonl``, ``dev.jsonl`` and ``train.jsonl``, drawn in that order, no question twice."""
    rng = random.Random(cfg.data.seed)
    seen: set[str] = set()
    sizes = {"test": cfg.data.test_pool, "dev": cfg.data.dev_pool, "train": cfg.data.train_pool}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for pool in POOLS:
        path = folder / f"{pool}.jsonl"
        drawn = problems(rng, sizes[pool], two_step_share=cfg.data.two_step_share, seen=seen)
        records = [
            {
                "id": f"{pool}-{i:05d}",
                "task": "math",
                "problem": p.kind,
                "prompt": p.question,
                "chosen": p.answer,
                "rejected": p.wrong,
            }
            for i, p in enumerate(drawn)
        ]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        paths.append(path)
    return paths


def build_languages(cfg: ExperimentConfig, sources: list[Path], out: Path) -> dict[str, Path]:
    """One `curate build` per language; a finished build is skipped."""
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


def assemble(cfg: ExperimentConfig, builds: dict[str, Path], out: Path) -> dict[str, Path]:
    """The ``train``, ``dev`` and ``test`` corpora, each a `curate build` output folder."""
    by_lang = {lang: kept_rows(folder) for lang, folder in builds.items()}
    # An anchor row counts when every build kept it (each build checks its anchors).
    anchors = set.intersection(*({g for g, lang in rows if lang == ANCHOR} for rows in by_lang.values()))

    def complete(pool: str, langs: list[str]) -> list[str]:
        return sorted(
            g
            for g in anchors
            if g.startswith(f"{pool}-")
            and all((g, lang) in by_lang[lang] for lang in langs if lang != ANCHOR)
        )

    def row(group: str, lang: str) -> Row:
        source = by_lang[lang] if lang != ANCHOR else next(iter(by_lang.values()))
        return source[group, lang]

    every = [ANCHOR, *cfg.data.train_langs, *cfg.data.heldout_langs]
    trained = [ANCHOR, *cfg.data.train_langs]
    plan: dict[str, list[Row]] = {}
    for pool, wanted, langs in (
        ("test", cfg.data.test_groups, every),
        ("dev", cfg.data.dev_groups, every),
        ("train", cfg.data.train_groups, trained),
    ):
        groups = complete(pool, langs)
        if len(groups) < wanted:
            msg = (
                f"data.{pool}_groups={wanted} needs as many groups kept in {langs}, the builds kept "
                f"{len(groups)}: raise data.{pool}_pool (curation rejects part of every language)"
            )
            raise SystemExit(msg)
        chosen = groups[:wanted]
        if pool == "train":
            share = cfg.data.wrong_language_share
            plan[pool] = [
                swap_rejected(row(g, lang), row(g, ANCHOR), share) for g in chosen for lang in langs
            ]
        else:
            plan[pool] = [row(g, lang) for g in chosen for lang in langs]
    corpora = {}
    for name, rows in plan.items():
        folder = out / "corpora" / name
        if not (folder / MANIFEST_FILE).is_file():
            source = out / "corpora" / f"{name}.jsonl"
            source.parent.mkdir(parents=True, exist_ok=True)
            write_parallel(rows, source)
            langs = sorted({r["lang"] for r in rows} - {ANCHOR})
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
                    ANCHOR,
                    "--set",
                    f"langs={json.dumps(langs)}",
                    "--no-progress",
                ],
                log=out / "logs" / f"assemble-{name}.log",
            )
        corpora[name] = folder
    return corpora


def prepare(cfg: ExperimentConfig) -> dict[str, Path]:
    """Sources, per-language builds and corpora under ``cfg.out`` (what exists is reused); their counts in
    ``OUT/data.json``."""
    sources = write_sources(cfg, cfg.out / "sources")
    builds = build_languages(cfg, sources, cfg.out)
    corpora = assemble(cfg, builds, cfg.out)
    summary = {
        "builds": {lang: build_counts(folder) for lang, folder in builds.items()},
        "corpora": {name: build_counts(folder) for name, folder in corpora.items()},
    }
    (cfg.out / "data.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return corpora
