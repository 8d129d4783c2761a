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
overall and for each close relative.

    python bench/quality.py                  # ~2 min on 2 CPU cores
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

from curate.build import make_stages
from tests.curate import udhr


def run(units: dict, rows: list, folder: Path, *, chunk_size: int, **sections: dict) -> dict:
    path = udhr.write_parallel(units, rows, folder / "dev.jsonl")
    langs = sorted({r.lang for r in rows})
    config = udhr.config(path, langs, chunk_size=chunk_size, **sections)
    stages = make_stages(config)
    for stage in stages:
        stage.setup()
    return udhr.judge(config, stages)


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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
