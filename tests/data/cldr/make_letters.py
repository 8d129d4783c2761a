"""Extract the letters each language writes: the default of language ID's letter evidence.

CLDR's main exemplar characters (``exemplarCharacters`` of ``cldr-misc-full``, the set a language's
ordinary text is written with; loan letters are in the auxiliary set, left out) of every language, its
scripts together (``sr`` and ``sr-Latn``), regional locales left out (they share the language's letters).
Languages written with more than :data:`MAX_LETTERS` letters (Chinese, Japanese, Korean: syllables and
characters, not an alphabet) are left out. The table is written to ``curate/lid_letters.py``; nothing in
it is chosen by hand. Not run in CI (npm is not there):

    cd /tmp && npm pack cldr-misc-full@48.2.0 && tar xzf cldr-misc-full-48.2.0.tgz
    python tests/data/cldr/make_letters.py /tmp/package
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from schemas import UnknownLanguageError, base_lang  # noqa: E402

MAX_LETTERS = 150
OUT = ROOT / "curate" / "lid_letters.py"


def letters_of(exemplars: str) -> set[str]:
    """The letters of a CLDR exemplar set (``[aá b c {dž} ...]``), lower-cased and NFC."""
    text = unicodedata.normalize("NFC", exemplars.lower())
    return {ch for ch in text if ch.isalpha()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the unpacked npm package cldr-misc-full (holds main/)")
    args = parser.parse_args()
    table: dict[str, set[str]] = {}
    for folder in sorted((args.package / "main").iterdir()):
        subtags = folder.name.split("-")
        if len(subtags) > 2 or (len(subtags) == 2 and len(subtags[1]) != 4):  # a region: same letters
            continue
        try:
            lang = base_lang(subtags[0])
        except UnknownLanguageError:
            continue
        found = json.loads((folder / "characters.json").read_text(encoding="utf-8"))
        (data,) = found["main"].values()
        exemplars = data["characters"].get("exemplarCharacters")
        if exemplars:
            table.setdefault(lang, set()).update(letters_of(exemplars))
    kept = {
        lang: "".join(sorted(found)) for lang, found in sorted(table.items()) if len(found) <= MAX_LETTERS
    }
    version = json.loads((args.package / "package.json").read_text(encoding="utf-8"))["version"]
    lines = [
        '"""The letters each language writes: a language → the main exemplar characters of CLDR',
        f"(``cldr-misc-full`` {version}), lower-case, its scripts together. Extracted by",
        "``tests/data/cldr/make_letters.py``. Generated: do not edit. CLDR data: Copyright © Unicode, Inc.,",
        'Unicode License v3 (https://www.unicode.org/license.txt)."""',
        "",
        "LETTERS: dict[str, str] = {",
        *(f"    {lang!r}: {letters!r}," for lang, letters in kept.items()),
        "}",
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(OUT)], check=True)  # the repo's layout
    print(f"{len(kept)} languages of {len(table)} → {OUT}")


if __name__ == "__main__":
    main()
