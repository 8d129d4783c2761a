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
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from schemas import ConfigError, canonical_json, out_of_space
from schemas.errors import FULL_DISK_ERRNOS

_QUERY_CHUNK = 500  # keys per SELECT, well below SQLite's bound-parameter limit


def cache_key(text: str, *, identity: str, src: str, tgt: str) -> str:
    return hashlib.sha256(canonical_json([identity, src, tgt, text]).encode("utf-8")).hexdigest()


class TranslationCache:
    """One SQLite file in WAL mode, one connection (opened on first use, so the object pickles before).

    A path that is not a SQLite database (a folder, another file) is the user's to fix and ends the build
    with one line, as does a disk that fills while the cache grows.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def check(self) -> None:
        """Open the file once and close it, so that a path that cannot hold the cache fails before any
        work (the connection itself opens where it is used: SQLite ties it to its thread)."""
        self._connect().close()

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            msg = f"translate.cache {self.path} is a folder: give the path of a SQLite file (new or a cache)"
            raise ConfigError(msg)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno in FULL_DISK_ERRNOS:
                raise out_of_space(self.path.parent, e) from e
            msg = f"translate.cache {self.path}: its folder cannot be made ({e.strerror})"
            raise ConfigError(msg) from e
        with self._sqlite_errors():
            conn = sqlite3.connect(self.path)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS translations (key TEXT PRIMARY KEY, "
                    "translation TEXT NOT NULL) WITHOUT ROWID"
                )
                conn.commit()
            except BaseException:
                conn.close()
                raise
        return conn

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """SQLite's answers for a full disk and for a file that is not a database, as one line each."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            code = getattr(e, "sqlite_errorcode", None)
            # A full disk is SQLITE_FULL, or an I/O error (SQLITE_IOERR_SHMSIZE, _WRITE, ...) on a disk
            # with no space left, depending on which file SQLite was growing.
            if code == sqlite3.SQLITE_FULL or (
                code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and _no_space(self.path)
            ):
                raise out_of_space(self.path, e) from e
            if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_CORRUPT):
                msg = (
                    f"translate.cache {self.path} cannot be used as a translation cache ({e}): give the path "
                    "of a new file, or of a cache an earlier build wrote"
                )
                raise ConfigError(msg) from e
            raise

    def get_many(self, texts: Sequence[str], *, identity: str, src: str, tgt: str) -> dict[str, str]:
        """The cached translation of each text that has one."""
        keys = {cache_key(t, identity=identity, src=src, tgt=tgt): t for t in texts}
        found: dict[str, str] = {}
        key_list = list(keys)
        with self._sqlite_errors():
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
        with self._sqlite_errors(), self._db:
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


def _no_space(path: Path) -> bool:
    """Whether the disk holding ``path`` has less than 1 MiB left for this user."""
    stat = os.statvfs(path.parent)
    return stat.f_bavail * stat.f_frsize < 1 << 20
