"""Make ``wordproblems.jsonl``: short English word problems and their Apertium translations.

The English comes from the experiment's generator (``experiments/parallel_gap/problems.py``): each problem
is a question, its worked answer and a wrong worked answer ("4 × 6 = 24. The answer is 24."), the short,
digit-heavy texts of a math SFT or preference corpus. Each is translated by every English direction Debian's
Apertium packages: ``eng-spa``, ``eng-cat``, ``en-gl``, ``en-eo`` and ``eng-hbs`` (whose ``_HR``, ``_SR``
and ``_BS`` variants give the same output on these texts, so it is kept once, as ``hbs``). Texts are
translated as ``curate build --translator apertium`` translates them (``apertium -u``, blanks tidied).
Needs Apertium and its pairs, so it is not run by the tests: the file it writes is committed next to it.

    sudo apt-get install apertium apertium-eng-spa apertium-eng-cat apertium-en-gl apertium-eo-en \
        apertium-hbs-eng
    python tests/data/wordproblems/make_extract.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from curate.config import ApertiumTranslatorConfig  # noqa: E402
from curate.translators.apertium import ApertiumTranslator  # noqa: E402
from experiments.parallel_gap.problems import problems  # noqa: E402

# Our code → the Apertium mode translating English into it.
MODES = {"es": "eng-spa", "ca": "eng-cat", "gl": "en-gl", "eo": "en-eo", "hbs": "eng-hbs"}
FIELDS = ("prompt", "chosen", "rejected")
SEED = 23
COUNT = 200
TWO_STEP_SHARE = 0.25  # as the experiment's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("wordproblems.jsonl"))
    args = parser.parse_args()
    drawn = problems(random.Random(SEED), COUNT, two_step_share=TWO_STEP_SHARE, seen=set())
    english = [text for p in drawn for text in (p.question, p.answer, p.wrong)]
    texts = {"en": english}
    for lang, mode in MODES.items():
        code = "hr" if lang == "hbs" else lang
        translator = ApertiumTranslator(ApertiumTranslatorConfig(modes={code: mode}))
        texts[lang] = translator.translate(english, src="en", tgt=code)
    lines = []
    for i, problem in enumerate(drawn):
        for lang, found in texts.items():
            record = {"unit": f"p{i:03d}", "kind": problem.kind, "lang": lang}
            record |= {name: found[3 * i + j].strip() for j, name in enumerate(FIELDS)}
            lines.append(json.dumps(record, ensure_ascii=False))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} lines → {args.out}")


if __name__ == "__main__":
    main()
