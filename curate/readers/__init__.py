"""The input side of ``curate build``: JSON Lines, Parquet and ``datasets`` directories → chunks of groups.

Every input record ends in exactly one place: a row of ``schemas.PARALLEL_SCHEMA`` or a reject row
(``stage="read"``) whose ``detail`` says where the record was and what is wrong with it. Bad rows never stop
a run; only mistakes of the user (a missing path, a format that cannot be recognised, a configured field
that no row of a file has) raise :class:`InputError`, before the first chunk.

    sources.py    formats: which records each input holds          (path → Item)
    records.py    what a record means: its row, or why it is none  (Item → row | BadRecord)
    grouping.py   parallel groups, repeated ids, subsets, chunks   (rows → Chunk)
    dedup.py      exact and near-duplicate examples                (before translation)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curate.config import DedupConfig, InputConfig
from curate.readers.dedup import Deduplicator
from curate.readers.grouping import Chunk, chunks, events, first_groups, sampled
from curate.readers.records import AUTO_ID_PREFIX, RecordReader
from curate.readers.sources import InputError, fingerprint_inputs


def read_chunks(
    paths: list[Path],
    *,
    config: InputConfig,
    anchor_lang: str,
    langs: list[str],
    chunk_size: int,
    dedup: DedupConfig | None = None,
) -> Iterator[Chunk]:
    """Read ``paths`` in order into deterministic chunks of whole groups.

    Every path is checked (and JSON Lines files scanned for their fields) before this returns, so user
    mistakes surface as :class:`InputError` at once. JSON Lines, Parquet and ``datasets`` inputs then stream
    with memory bounded by a chunk; long-form parallel input is loaded whole, grouped by id across files and
    chunked by first appearance of each id. Groups outside ``config.sample`` are not read; duplicates
    (``dedup``) become rejects; reading stops after ``config.limit`` groups.
    """
    if chunk_size < 1:
        msg = f"chunk_size must be at least 1, got {chunk_size}"
        raise ValueError(msg)
    reader = RecordReader(config, anchor_lang=anchor_lang, langs=langs)
    sources = [reader.inspect(Path(p)) for p in paths]
    stream = events(reader, sources, batch_size=chunk_size)
    if config.sample < 1:
        stream = sampled(stream, config.sample)
    if dedup is not None and dedup.enabled:
        stream = Deduplicator(dedup).filter(stream)
    if config.limit is not None:
        stream = first_groups(stream, config.limit)
    return chunks(stream, chunk_size)


__all__ = ["AUTO_ID_PREFIX", "Chunk", "InputError", "fingerprint_inputs", "read_chunks"]
