"""The pre-translated backend: rows already in every language, nothing created."""

from collections import Counter

from curate.stages.translate import Translate
from curate.translators import PretranslatedTranslator
from tests.curate.rows import row, table


def test_pretranslated_creates_no_rows_and_sorts() -> None:
    batch = table(row("g2", "en", "Hi"), row("g1", "es", "Hola", anchor=False), row("g1", "en", "Hello"))
    stage = Translate(PretranslatedTranslator(), anchor_lang="en", langs=["es", "de"])
    stage.setup()
    result = stage.process(batch)
    assert result.created == Counter()
    assert result.rejected.num_rows == 0
    assert list(zip(result.kept["group_id"].to_pylist(), result.kept["lang"].to_pylist(), strict=True)) == [
        ("g1", "en"),
        ("g1", "es"),
        ("g2", "en"),
    ]
