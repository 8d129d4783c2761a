"""Filter quality on real parallel text with planted faults: the UDHR dev set of ``tests/data/udhr``.

Every target-language paragraph of the extract is a true translation of its English anchor; a share of
them (``--rate``) is replaced, deterministically per ``--seeds``, by a fault: the same paragraph in an
unrelated language (``wrong_lang``), in a closely related but different one (``related_lang``) or in a
neighbouring standard language ID does not separate (``neighbour_lang``: Malay under ``id``, Danish under
``nb``; no goal), another article's paragraph (``misaligned``), the translation cut to 30-60% (``truncated``), or the
English text itself (``untranslated``). The stages ``curate build`` runs on pre-translated input judge
the set, chunked as a build chunks it (``--chunk-sizes``: 256 groups put the whole set in one chunk, 4
is a small batch). Printed per kind: clean rows kept, faults rejected (by any stage), on the *tune* part
(preamble and articles 1-15, where settings were chosen) and the *held-out* part (articles 16-30).

Two language sets: those the default encoder (multilingual USE) separates from unrelated text, where
every goal applies (keep >= 95% of clean rows, reject >= 95% of each fault), and those it does not
(bs, hr, sr, nb, da, sv), where only language ID can judge. Then language ID alone (the build's stages
with equivalence off) on the paragraphs and on short snippets (each paragraph's first 60 characters),
overall and for each close relative. The languages USE reads and the others are built apart, as
``equivalence.backend: auto`` then gives each its encoder (USE; multilingual-e5-small).

Then the Apertium dev set (``tests/curate/apertium_dev.py``): word problems and UDHR paragraphs in every
language Apertium translates English into, each source and language built on its own with default
settings (as the experiment builds them), clean rows kept per language and each fault rejected, tune and
held-out parts.

    python bench/quality.py                  # ~15 min on 2 busy CPU cores (multilingual-e5 is the slow part)
    python bench/quality.py --seeds 0 --chunk-sizes 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from corpus import ROOT, machine

sys.path.insert(0, str(ROOT))

import numpy as np

from curate.build import make_stages
from curate.stages.embedders import Embedder
from curate.stages.equivalence import Equivalence
from tests.curate import apertium_dev as dev
from tests.curate import udhr


class Cached:
    """An embedder whose vectors are kept across the builds of this run, set up once."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.calibration = inner, inner.name, inner.calibration
        self.vectors: dict[str, np.ndarray] = {}
        self.ready = False

    def setup(self) -> None:
        if not self.ready:
            self.inner.setup()
            self.ready = True

    def encode(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.inner.encode(new), strict=True))
        return np.stack([self.vectors[t] for t in texts])


EMBEDDERS: dict[str, Cached] = {}


def judged(path: Path, langs: list[str], *, chunk_size: int, **sections: dict) -> dict:
    """The default stages (each language set's own encoder, cached across builds) over ``path``."""
    config = udhr.config(path, langs, chunk_size=chunk_size, **sections)
    stages = make_stages(config)
    for i, stage in enumerate(stages):
        if isinstance(stage, Equivalence):
            cached = EMBEDDERS.setdefault(stage.embedder.name, Cached(stage.embedder))
            stages[i] = Equivalence(config.equivalence, cached)
    for stage in stages:
        stage.setup()
    return udhr.judge(config, stages)


def run(units: dict, rows: list, folder: Path, *, chunk_size: int, **sections: dict) -> dict:
    """The UDHR dev set's ``rows``: the languages USE reads in one build, the others in another."""
    out = {}
    for name, langs in (
        ("use", udhr.ENCODED),
        ("other", tuple(x for x in udhr.LANGS[1:] if x not in udhr.ENCODED)),
    ):
        part = [r for r in rows if r.lang in langs]
        (folder / name).mkdir()
        path = udhr.write_parallel(units, part, folder / name / "dev.jsonl")
        out |= judged(path, sorted({r.lang for r in part}), chunk_size=chunk_size, **sections)
    return out


def table(title: str, tallies: dict[str, udhr.Tally], kinds: tuple[str, ...]) -> None:
    print(f"\n{title}")
    columns = [(name, part) for name in tallies for part in udhr.PARTS]
    print(f"{'':14}" + "".join(f"{name + ' ' + part:>22}" for name, part in columns))
    for kind in kinds:
        cells = []
        for name, part in columns:
            right, n = tallies[name].count(part, kind)
            cells.append(f"{right:5d}/{n:<5d} {right / n if n else float('nan'):6.1%}")
        label = "clean kept" if kind == "clean" else f"{kind} rej."
        print(f"{label:14}" + "".join(f"{c:>22}" for c in cells))


LID_KINDS = ("clean", *udhr.LID_FAULTS)
RELATIVES = ("es", "ca", "gl", "pt", "hr", "bs", "sr", "id", "ms", "nb", "da", "sv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rate", type=float, default=0.2, help="share of translations made faulty")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[256, 4])
    parser.add_argument("--sets", nargs="+", choices=("udhr", "apertium"), default=["udhr", "apertium"])
    args = parser.parse_args()
    if "apertium" in args.sets:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            found = apertium(args.seeds, 0.3, Path(tmp))
        print(f"machine: {machine()}")
        print(
            f"Apertium dev set: seeds {args.seeds}, 30% of clean rows made faulty; {time.perf_counter() - start:.0f} s"
        )
        apertium_table(found)
    if "udhr" not in args.sets:
        return

    units = udhr.load_extract()
    short = udhr.snippets(units)
    start = time.perf_counter()
    planted = {seed: udhr.plant_faults(units, rate=args.rate, seed=seed) for seed in args.seeds}
    lid_kinds = LID_KINDS[1:]
    planted_short = {seed: udhr.plant_faults(short, kinds=lid_kinds, seed=seed) for seed in args.seeds}
    outcomes: dict[str, dict] = {}
    lid_only = {"equivalence": {"enabled": False}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs = [(f"chunk {size}", units, planted[seed], size, {}) for size in args.chunk_sizes]
            runs += [
                ("lid", units, planted[seed], 256, lid_only),
                ("lid snippets", short, planted_short[seed], 256, lid_only),
            ]
            for name, texts, rows, size, sections in runs:
                folder = Path(tmp) / f"{seed}-{name}"
                folder.mkdir()
                found = run(texts, rows, folder, chunk_size=size, **sections)
                outcomes.setdefault(name, {}).update(
                    {(f"{seed}/{u}", lang): v for (u, lang), v in found.items()}
                )
    seconds = time.perf_counter() - start

    def tallied(name: str, langs: tuple[str, ...] | None) -> udhr.Tally:
        source = planted_short if name == "lid snippets" else planted
        rows = [
            udhr.DevRow(f"{seed}/{r.unit}", r.article, r.lang, r.kind, r.text, r.source)
            for seed, rs in source.items()
            for r in rs
        ]
        return udhr.tally(rows, outcomes[name], langs=langs)

    print(f"machine: {machine()}")
    languages = sorted({r.lang for r in planted[args.seeds[0]]})
    other = tuple(lang for lang in languages if lang not in udhr.ENCODED)
    print(
        f"UDHR dev set: {len(units)} paragraphs in {len(languages)} languages besides English, seeds "
        f"{args.seeds}, {args.rate:.0%} of translations made faulty; {seconds:.0f} s"
    )
    chunked = [f"chunk {size}" for size in args.chunk_sizes]
    table(
        f"curate build's stages, languages the encoder separates ({', '.join(udhr.ENCODED)})",
        {name: tallied(name, udhr.ENCODED) for name in chunked},
        udhr.KINDS,
    )
    table(
        f"curate build's stages, languages it does not ({', '.join(other)})",
        {name: tallied(name, other) for name in chunked},
        udhr.KINDS,
    )
    table(
        "language ID alone, paragraphs, every language",
        {"lid": tallied("lid", None), "lid snippets": tallied("lid snippets", None)},
        LID_KINDS,
    )
    print("\nlanguage ID alone, clean rows kept per close relative (paragraphs | snippets)")
    for lang in RELATIVES:
        cells = []
        for name in ("lid", "lid snippets"):
            right, n = tallied(name, (lang,)).count(None, "clean")
            cells.append(f"{right:4d}/{n:<4d} {right / n:6.1%}")
        print(f"{lang:4}" + " | ".join(cells))


def apertium(seeds: list[int], rate: float, tmp: Path) -> dev.Tally:
    """The Apertium dev set, each source and language its own default build."""
    data = {"problems": dev.load_problems(), "udhr": dev.load_udhr()}
    tallies = []
    for seed in seeds:
        for source in dev.SOURCES:
            planted = dev.plant_faults(source, data[source], rate=rate, seed=seed)
            for lang in dev.LANGS:
                rows = [r for r in planted if r.lang == lang]
                folder = tmp / f"apertium-{seed}-{source}-{lang}"
                folder.mkdir()
                path = dev.write_parallel(data[source], rows, folder / "dev.jsonl")
                tallies.append(dev.tally(rows, judged(path, [lang], chunk_size=256)))
    return dev.merge(tallies)


def apertium_table(tally: dev.Tally) -> None:
    for part in dev.PARTS:
        print(f"\nApertium dev set, {part} part: clean rows kept per language, each fault rejected")
        print(f"{'':16}" + "".join(f"{lang:>14}" for lang in (*dev.LANGS, "all")))
        for kind in dev.KINDS:
            cells = []
            for langs in (*((lang,) for lang in dev.LANGS), dev.LANGS):
                right, n = tally.count(kind, parts=[part], langs=langs)
                cells.append(f"{right:3d}/{n:<3d} {right / n:5.1%}" if n else "-")
            label = "clean kept" if kind == "clean" else f"{kind} rej."
            print(f"{label:16}" + "".join(f"{c:>14}" for c in cells))
        for source in dev.SOURCES:
            right, n = tally.count("clean", parts=[part], sources=[source])
            print(f"  {source}: clean kept {right}/{n} {right / n:.1%}", end="")
        print()
        for kind in dev.KINDS:
            missed = {
                k: v for k, v in tally.why(kind, parts=[part]).items() if (k == "kept") != (kind == "clean")
            }
            if missed:
                print(f"  {kind}: {dict(missed)}")


if __name__ == "__main__":
    main()
