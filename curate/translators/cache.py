"""A SQLite cache of translations, so that re-runs and resumed builds never translate a text twice.

The key is a hash of (identity, source language, target language, masked text) and the value is the
backend's raw output for that masked text, before unmasking: whether the output is usable is decided
again on every run, so a fix to the checks needs no re-translation. The identity is everything else the
output depends on (the backend's model, endpoint, prompt and decoding settings, and the masking; see
:meth:`curate.translators.Translator.cache_identity`), so a change to any of them translates afresh
instead of reusing what another setting produced.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas import canonical_json

_QUERY_CHUNK = 500  # keys per SELECT, well below SQLite's bound-parameter limit


def cache_key(text: str, *, identity: str, src: str, tgt: str) -> str:
    return hashlib.sha256(canonical_json([identity, src, tgt, text]).encode("utf-8")).hexdigest()


class TranslationCache:
    """One SQLite file in WAL mode, one connection (opened on first use, so the object pickles before)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS translations (key TEXT PRIMARY KEY, translation TEXT NOT NULL)"
                " WITHOUT ROWID"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def get_many(self, texts: Sequence[str], *, identity: str, src: str, tgt: str) -> dict[str, str]:
        """The cached translation of each text that has one."""
        keys = {cache_key(t, identity=identity, src=src, tgt=tgt): t for t in texts}
        found: dict[str, str] = {}
        key_list = list(keys)
        for start in range(0, len(key_list), _QUERY_CHUNK):
            chunk = key_list[start : start + _QUERY_CHUNK]
            placeholders = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, translation FROM translations WHERE key IN ({placeholders})", chunk
            )
            found.update((keys[key], translation) for key, translation in rows)
        return found

    def put_many(self, translations: Mapping[str, str], *, identity: str, src: str, tgt: str) -> None:
        """Store ``{text: translation}`` in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO translations (key, translation) VALUES (?, ?)",
                [(cache_key(t, identity=identity, src=src, tgt=tgt), out) for t, out in translations.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM translations").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
