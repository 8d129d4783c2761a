"""Tiny lm-evaluation-harness tasks over local parallel files, for the benchmark tests."""

from __future__ import annotations

import json
from pathlib import Path

FACTS = {
    "en": (
        "True or false: {}",
        ["false", "true"],
        ["Water is wet.", "Fire is cold.", "The sun is hot.", "Ice is warm.", "Snow is white."],
    ),
    "de": (
        "Wahr oder falsch: {}",
        ["falsch", "wahr"],
        ["Wasser ist nass.", "Feuer ist kalt.", "Die Sonne ist heiß.", "Eis ist warm.", "Schnee ist weiß."],
    ),
    "es": (
        "¿Verdadero o falso? {}",
        ["falso", "verdadero"],
        [
            "El agua moja.",
            "El fuego es frío.",
            "El sol calienta.",
            "El hielo es cálido.",
            "La nieve es blanca.",
        ],
    ),
}
# Spanish differs on two items, so that languages score differently whatever the tiny model answers.
LABELS = {"en": [1, 0, 1, 0, 1], "de": [1, 0, 1, 0, 1], "es": [0, 0, 0, 0, 1]}
SUMS = [(1, 1), (2, 3), (4, 4), (10, 5)]


def write_lm_eval_tasks(root: Path) -> Path:
    """``tinymc_{en,de,es}`` (multiple choice, grouped as ``tinymc``) and ``tinysum_{en,de,es}`` (generation
    with a number-extracting filter), over JSON Lines files parallel by line, written under ``root``."""
    for lang, (template, choices, sentences) in FACTS.items():
        mc = root / f"mc_{lang}.jsonl"
        mc.write_text(
            "".join(
                json.dumps({"s": s, "label": y}) + "\n" for s, y in zip(sentences, LABELS[lang], strict=True)
            )
        )
        prompt = template.format("{{s}}")
        (root / f"tinymc_{lang}.yaml").write_text(
            f"task: tinymc_{lang}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {mc}\n"
            f"test_split: test\noutput_type: multiple_choice\ndoc_to_text: {json.dumps(prompt)}\n"
            f"doc_to_choice: {json.dumps(choices)}\ndoc_to_target: label\n"
            "metric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n"
        )
        gen = root / f"sum_{lang}.jsonl"
        gen.write_text(
            "".join(json.dumps({"q": f"{a} + {b} =", "answer": str(a + b)}) + "\n" for a, b in SUMS)
        )
        (root / f"tinysum_{lang}.yaml").write_text(
            f"task: tinysum_{lang}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {gen}\n"
            "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: answer\n"
            "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 3\n  do_sample: false\n"
            "filter_list:\n  - name: number\n    filter:\n      - function: regex\n"
            "        regex_pattern: '(-?[0-9]+)'\n      - function: take_first\n"
            "metric_list:\n  - metric: exact_match\nmetadata:\n  version: 1.0\n"
        )
    (root / "tinymc.yaml").write_text("group: tinymc\ntask: [tinymc_en, tinymc_de, tinymc_es]\n")
    return root
