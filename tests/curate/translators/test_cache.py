"""The translation cache (curate/translators/cache.py): an SQLite table keyed on text, backend identity and
language pair."""

import sqlite3
from pathlib import Path

from curate.translators import TranslationCache


def test_cache_round_trips_and_keys_on_identity_and_languages(tmp_path: Path) -> None:
    path = tmp_path / "state" / "translations.sqlite"
    cache = TranslationCache(path)
    cache.put_many({"Hello ⟦0⟧": "Hola ⟦0⟧", "Bye": "Adiós"}, identity="apertium", src="en", tgt="es")
    assert cache.get_many(["Hello ⟦0⟧", "Bye", "New"], identity="apertium", src="en", tgt="es") == {
        "Hello ⟦0⟧": "Hola ⟦0⟧",
        "Bye": "Adiós",
    }
    assert cache.get_many(["Bye"], identity="apertium", src="en", tgt="ca") == {}
    assert cache.get_many(["Bye"], identity="hf:/m", src="en", tgt="es") == {}
    cache.close()
    reopened = TranslationCache(path)
    assert len(reopened) == 2
    assert reopened.get_many(["Bye"], identity="apertium", src="en", tgt="es") == {"Bye": "Adiós"}
    reopened.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_looks_up_more_keys_than_one_query_holds(tmp_path: Path) -> None:
    cache = TranslationCache(tmp_path / "c.sqlite")
    texts = [f"text {i}" for i in range(1200)]
    cache.put_many({t: t.upper() for t in texts[::2]}, identity="b", src="en", tgt="es")
    found = cache.get_many(texts, identity="b", src="en", tgt="es")
    assert found == {t: t.upper() for t in texts[::2]}
