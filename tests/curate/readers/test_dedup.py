"""Duplicate source examples become ``dedup`` rejects before translation; trial subsets are deterministic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from curate.config import DedupConfig, InputConfig
from curate.readers import read_chunks
from schemas import stable_fraction

COAT = "A winter coat is marked down 25% from $140, and a coupon takes a further 5% off the reduced price."
ANSWER = "After the markdown it costs 105 dollars. The coupon takes 5% of that: 99.75 dollars. The answer is 99.75."
OTHER = (
    "A farmer has 12 cows and buys 7 more at the market on Monday. How many cows does the farmer have now?"
)


def chat(question: str, answer: str = ANSWER, *, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def write(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "input.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


DEDUP = DedupConfig()


def read(path: Path, dedup: DedupConfig | None = DEDUP, **input_settings: Any) -> tuple[list, list]:
    chunks = list(
        read_chunks(
            [path],
            config=InputConfig(**input_settings),
            anchor_lang="en",
            langs=["de"],
            chunk_size=4,
            dedup=dedup,
        )
    )
    kept = [row for c in chunks for row in c.rows.to_pylist()]
    rejects = [row for c in chunks for row in c.rejects.to_pylist()]
    for c in chunks:  # every record read is a row or a reject
        assert c.read == Counter(r["lang"] for r in c.rows.to_pylist() + c.rejects.to_pylist())
    return kept, rejects


def test_exact_and_near_duplicates_are_rejected_naming_the_kept_group(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"id": "coat", "messages": chat(COAT)},
            {"id": "farm", "messages": chat(OTHER, "12 + 7 = 19. The answer is 19.")},
            {"id": "coat-again", "messages": chat(COAT)},
            {"id": "jacket", "messages": chat(COAT.replace("winter coat", "jacket"))},
            {"id": "spaced", "messages": chat(COAT.upper().replace(" ", "  "))},
            # Same system prompt and answer shape, another problem: kept.
            {"id": "shirt", "messages": chat(OTHER.replace("cows", "goats"), "12 + 7 = 19 goats.")},
        ],
    )
    kept, rejects = read(path)
    assert [r["group_id"] for r in kept] == ["coat", "farm", "shirt"]
    found = {r["group_id"]: r for r in rejects}
    assert {g: (r["stage"], r["reason"]) for g, r in found.items()} == {
        "coat-again": ("dedup", "exact"),
        "jacket": ("dedup", "near"),
        "spaced": ("dedup", "near"),
    }
    assert found["coat-again"]["detail"] == "the same conversation as group 'coat', which is kept"
    assert found["jacket"]["detail"].startswith("a near-duplicate of group 'coat', which is kept")
    assert found["jacket"]["messages"][0]["content"].startswith("A jacket")  # the whole row, for inspection


def test_near_duplicates_can_be_left_in_and_dedup_switched_off(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"id": "coat", "messages": chat(COAT)},
            {"id": "jacket", "messages": chat(COAT.replace("winter coat", "jacket"))},
            {"id": "coat-again", "messages": chat(COAT)},
        ],
    )
    kept, rejects = read(path, DedupConfig(near=False))
    assert [r["group_id"] for r in kept] == ["coat", "jacket"]
    assert [(r["group_id"], r["reason"]) for r in rejects] == [("coat-again", "exact")]
    kept, rejects = read(path, DedupConfig(enabled=False))
    assert len(kept) == 3 and not rejects


def test_a_duplicate_parallel_group_goes_whole(tmp_path: Path) -> None:
    rows = []
    for group, question in (("a", COAT), ("b", COAT.replace("winter coat", "jacket"))):
        rows.append({"id": group, "lang": "en", "messages": chat(question)})
        rows.append({"id": group, "lang": "de", "messages": chat("Ein Mantel kostet 140 Dollar.", "99,75")})
    kept, rejects = read(write(tmp_path, rows))
    assert sorted((r["group_id"], r["lang"]) for r in kept) == [("a", "de"), ("a", "en")]
    assert sorted((r["group_id"], r["lang"], r["reason"]) for r in rejects) == [
        ("b", "de", "near"),
        ("b", "en", "near"),
    ]


def test_sample_and_limit_choose_the_same_groups_every_time(tmp_path: Path) -> None:
    records = [
        {"id": f"q{i:03d}", "messages": chat(f"What is {i} times {i + 3}?", f"{i * (i + 3)}")}
        for i in range(60)
    ]
    path = write(tmp_path, records)
    kept, _ = read(path, sample=0.5)
    expected = [r["id"] for r in records if stable_fraction(r["id"]) < 0.5]
    assert [r["group_id"] for r in kept] == expected and 15 < len(expected) < 45
    assert read(path, sample=0.5) == (kept, [])
    shuffled = write(tmp_path / "..", list(reversed(records)))
    assert sorted(r["group_id"] for r in read(shuffled, sample=0.5)[0]) == sorted(
        expected
    )  # by id, not position
    kept, _ = read(path, limit=7)
    assert [r["group_id"] for r in kept] == [f"q{i:03d}" for i in range(7)]


@pytest.mark.parametrize("setting", [{"sample": 0.0}, {"sample": 1.5}, {"limit": 0}])
def test_subset_settings_are_checked(setting: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"sample|limit"):
        InputConfig(**setting)
