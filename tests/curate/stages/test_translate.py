"""The translate stage (curate/stages/translate.py): what it sends to a backend, what it copies, and how it
uses the cache. Each backend's own tests are in tests/curate/translators/."""

from collections import Counter
from pathlib import Path

import pytest

from curate.stages.translate import Translate
from curate.translators import PretranslatedTranslator, TranslationCache
from schemas import content_hash
from tests.curate.rows import preference_row, row, table, tool_row
from tests.curate.translation import CountingApertium, assert_accounted, contents, needs_apertium


def test_stage_refuses_an_anchor_in_another_language() -> None:
    stage = Translate(PretranslatedTranslator(), anchor_lang="en", langs=["es"])
    with pytest.raises(ValueError, match="expected anchor_lang 'en'"):
        stage.process(table(row("g1", "de", "Hallo", anchor=True)))


@needs_apertium
def test_apertium_stage_translates_prose_and_copies_structure() -> None:
    code = "```python\nprint(sum([1, 2]))\n```"
    batch = table(
        row(
            "g3",
            "en",
            f"Run this:\n{code}\nWhat does it print?",
            "It prints 3.\nSee https://docs.python.org/3/.",
        ),
        tool_row("g1"),
        preference_row("g2"),
        row("g2b", "en", "I like dogs."),
        row("g2b", "es", "Me gustan los perros (a mano).", anchor=False),
    )
    stage = Translate(CountingApertium(), anchor_lang="en", langs=["es", "ca"])
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 3, "ca": 4})
    assert result.rejected.num_rows == 0

    user, answer = contents(result, "g3", "es")
    assert f"\n{code}\n" in user and user.endswith("imprime?") and not user.startswith("Run")
    assert answer.startswith("Imprime 3.\n") and answer.endswith("https://docs.python.org/3/.")
    assert contents(result, "g2b", "es") == ["Me gustan los perros (a mano)."]

    anchor = next(r for r in batch.to_pylist() if r["group_id"] == "g1")
    translated = next(r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == ("g1", "ca"))
    assert [m["role"] for m in translated["messages"]] == [m["role"] for m in anchor["messages"]]
    for a, t in zip(anchor["messages"], translated["messages"], strict=True):
        assert (t["tool_calls"], t["tool_call_id"], t["name"]) == (
            a["tool_calls"],
            a["tool_call_id"],
            a["name"],
        )
    assert translated["messages"][2]["content"] == ""
    assert translated["messages"][3]["content"] == anchor["messages"][3]["content"]
    assert "París" in translated["messages"][1]["content"]
    assert translated["is_anchor"] is False and translated["translator"] == "apertium"
    assert translated["task"] == "tool_calling" and translated["lid_prob"] is None
    assert translated["content_hash"] == content_hash(translated["messages"])
    sent = [t for call in stage.translator.calls for t in call]
    assert not any("temp_c" in t or "get_weather" in t for t in sent)

    pref = next(r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == ("g2", "es"))
    assert pref["kind"] == "preference"
    (question,) = (m["content"] for m in pref["messages"])
    assert "animal" in question and not question.startswith("Which")
    assert "perro" in pref["chosen"][0]["content"] and "gato" in pref["rejected"][0]["content"]
    assert pref["content_hash"] == content_hash(pref["messages"], pref["chosen"], pref["rejected"])


@needs_apertium
def test_cache_makes_a_second_run_translate_nothing(tmp_path: Path) -> None:
    batch = table(
        row("g1", "en", "The cat is on the table.", "Use `ls` to list files."),
        row("g2", "en", "The cat is on the table.", "Good night."),
    )
    first = CountingApertium()
    stage = Translate(
        first, anchor_lang="en", langs=["es", "ca"], cache=TranslationCache(tmp_path / "t.sqlite")
    )
    stage.setup()
    before = stage.process(batch)
    assert sorted(len(call) for call in first.calls) == [3, 3]  # unique texts, once per target
    assert sum(t == "Use ⟦0⟧ to list files." for call in first.calls for t in call) == 2
    assert len(stage.cache) == 6

    second = CountingApertium()
    rerun = Translate(
        second, anchor_lang="en", langs=["es", "ca"], cache=TranslationCache(tmp_path / "t.sqlite")
    )
    rerun.setup()
    after = rerun.process(batch)
    assert second.calls == [] and second.processes == 0
    assert after.kept.equals(before.kept)
    restored = contents(after, "g1", "es")[1]
    assert "`ls`" in restored and "files" not in restored
