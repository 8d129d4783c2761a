"""Records into groups and groups into chunks: parallel files are grouped by id across files, repeated
ids are rejected, and the groups are cut into deterministic chunks of whole groups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from curate.readers.records import RecordReader, reject
from curate.readers.sources import BadRecord, Item, Source, items
from schemas import PARALLEL_SCHEMA, REJECT_SCHEMA, stable_fraction


@dataclass
class Chunk:
    """Up to ``chunk_size`` whole groups, rows sorted by (group_id, lang), and the read rejects among them.

    ``read`` counts input records per language (``"und"`` where a parallel record's language is unknown);
    it always equals rows + rejects per language, so downstream accounting starts balanced.
    """

    index: int
    rows: pa.Table
    rejects: pa.Table
    read: Counter[str] = field(default_factory=Counter)


class Event(NamedTuple):
    """What one record (or one parallel group) became: the rows of a whole group, or rejects."""

    rows: list[dict[str, Any]]
    rejects: list[dict[str, Any]]


def events(reader: RecordReader, sources: list[Source], *, batch_size: int) -> Iterator[Event]:
    """Records in input order; all parallel sources are read together where the first one stands."""
    seen: set[str] = set()
    max_bytes = reader.config.max_record_bytes
    parallel = [s for s in sources if s.parallel]
    for source in sources:
        if not source.parallel:
            yield from _stream(reader, items(source, batch_size=batch_size, max_bytes=max_bytes), seen)
        elif source is parallel[0]:
            records = (
                item for s in parallel for item in items(s, batch_size=batch_size, max_bytes=max_bytes)
            )
            yield from _grouped(reader, records, seen)


def _stream(reader: RecordReader, records: Iterable[Item], seen: set[str]) -> Iterator[Event]:
    """One group per record (the anchor row); an id read before is a duplicate."""
    for item in records:
        try:
            row = reader.row(item, parallel=False)
        except BadRecord as e:
            yield Event([], [reject(e.fields, e.reason, e.detail, item)])
            continue
        if row["group_id"] in seen:
            detail = f"{reader.config.id_field} {row['group_id']!r} was read before"
            yield Event([], [reject(row, "duplicate_id", detail, item)])
            continue
        seen.add(row["group_id"])
        yield Event([row], [])


def _grouped(reader: RecordReader, records: Iterable[Item], seen: set[str]) -> Iterator[Event]:
    """Long-form parallel records grouped by id, each group where its first row stood; a repeated
    (id, lang) is a duplicate and a group without a valid anchor row is rejected whole."""
    groups: dict[str, list[dict[str, Any]]] = {}
    order: list[str | dict[str, Any]] = []  # a group id where the group first appears, or a reject
    for item in records:
        try:
            row = reader.row(item, parallel=True)
        except BadRecord as e:
            order.append(reject(e.fields, e.reason, e.detail, item))
            continue
        group_id, lang = row["group_id"], row["lang"]
        rows = groups.get(group_id)
        if group_id in seen or (rows is not None and any(r["lang"] == lang for r in rows)):
            detail = f"({reader.config.id_field}, lang) = ({group_id!r}, {lang!r}) was read before"
            order.append(reject(row, "duplicate_id", detail, item))
        elif rows is None:
            groups[group_id] = [row]
            order.append(group_id)
        else:
            rows.append(row)
    seen.update(groups)
    for entry in order:
        if isinstance(entry, dict):
            yield Event([], [entry])
            continue
        rows = groups[entry]
        if any(r["is_anchor"] for r in rows):
            yield Event(rows, [])
        else:
            detail = f"group {entry!r} has no valid {reader.anchor!r} row"
            yield Event([], [reject(r, "missing_anchor", detail, None) for r in rows])


def sampled(events: Iterator[Event], fraction: float) -> Iterator[Event]:
    """The groups whose id falls in the first ``fraction`` of :func:`schemas.stable_fraction`, whatever the
    input order and size; rejects of records that never made a group are kept (they were read)."""
    for event in events:
        if not event.rows or stable_fraction(event.rows[0]["group_id"]) < fraction:
            yield event


def first_groups(events: Iterator[Event], limit: int) -> Iterator[Event]:
    """Events up to and including the ``limit``-th group; nothing after it is read."""
    groups = 0
    for event in events:
        yield event
        groups += bool(event.rows)
        if groups == limit:
            return


def chunks(events: Iterator[Event], chunk_size: int) -> Iterator[Chunk]:
    """Cut after ``chunk_size`` groups, or ``chunk_size`` rejects so that garbage cannot grow a chunk."""
    index, groups = 0, 0
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for event in events:
        rows += event.rows
        rejects += event.rejects
        groups += bool(event.rows)
        if groups == chunk_size or len(rejects) >= chunk_size:
            yield _chunk(index, rows, rejects)
            index, groups, rows, rejects = index + 1, 0, [], []
    if rows or rejects:
        yield _chunk(index, rows, rejects)


def _chunk(index: int, rows: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> Chunk:
    table = pa.Table.from_pylist(rows, schema=PARALLEL_SCHEMA)
    read = Counter(r["lang"] for r in rows)
    read.update(r.get("lang") or "und" for r in rejects)
    return Chunk(
        index=index,
        rows=table.sort_by([("group_id", "ascending"), ("lang", "ascending")]),
        rejects=pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA),
        read=read,
    )
