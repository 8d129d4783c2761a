"""Arrow schemas of the data contract and :func:`validate`, which names the bad column and row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from schemas.errors import DataError
from schemas.langs import UnknownLanguageError, normalize_lang
from schemas.records import KINDS, ROLES

MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("tool_calls", pa.string()),
        pa.field("tool_call_id", pa.string()),
        pa.field("name", pa.string()),
    ]
)
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
# The columns of a parallel row that hold a conversation, in the order they are read and shown.
CONVERSATION_COLUMNS = ("messages", "chosen", "rejected")

SOURCE_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("messages", MESSAGES_TYPE, nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)

PREFERENCE_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("prompt", MESSAGES_TYPE, nullable=False),
        pa.field("chosen", MESSAGES_TYPE, nullable=False),
        pa.field("rejected", MESSAGES_TYPE, nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)

PARALLEL_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("is_anchor", pa.bool_(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("messages", MESSAGES_TYPE, nullable=False),
        pa.field("chosen", MESSAGES_TYPE),
        pa.field("rejected", MESSAGES_TYPE),
        pa.field("meta", pa.string(), nullable=False),
        pa.field("translator", pa.string(), nullable=False),
        pa.field("lid_lang", pa.string()),
        pa.field("lid_prob", pa.float32()),
        pa.field("equivalence", pa.float32()),
        pa.field("length_ratio", pa.float32()),
        pa.field("content_hash", pa.string(), nullable=False),
    ]
)

REJECT_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in PARALLEL_SCHEMA]
    + [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "source": SOURCE_SCHEMA,
    "preference": PREFERENCE_SCHEMA,
    "parallel": PARALLEL_SCHEMA,
    "reject": REJECT_SCHEMA,
}


class SchemaValidationError(DataError):
    """A table that breaks the contract; ``column`` and ``row`` say where (``row`` is None for a column)."""

    def __init__(self, message: str, *, column: str, row: int | None = None) -> None:
        where = f"column {column!r}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message}")
        self.column = column
        self.row = row


def infer_kind(schema: pa.Schema) -> str:
    """Which contract schema a table claims to follow, judged by its columns."""
    names = set(schema.names)
    if "reason" in names:
        return "reject"
    if "group_id" in names:
        return "parallel"
    if "prompt" in names:
        return "preference"
    return "source"


def validate(table: pa.Table, schema: pa.Schema | str | None = None) -> None:
    """Check ``table`` against a contract schema (inferred from its columns when not given).

    Types are checked column by column, then values row by row: non-null required fields, known roles,
    normalised language codes, tool calls as a JSON list, and one row per (group_id, lang) with one anchor
    per group for parallel tables.
    """
    if schema is None:
        schema = infer_kind(table.schema)
    if isinstance(schema, str):
        schema = SCHEMAS[schema]
    for field in schema:
        if field.name not in table.column_names:
            raise SchemaValidationError(f"missing (expected {field.type})", column=field.name)
        actual = table.schema.field(field.name).type
        if not actual.equals(field.type):
            raise SchemaValidationError(f"has type {actual}, expected {field.type}", column=field.name)
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            row = table.column(field.name).is_null().to_pylist().index(True)
            raise SchemaValidationError("null in a required field", column=field.name, row=row)
    for name in ("messages", "prompt", "chosen", "rejected"):
        if name in schema.names:
            _check_messages(name, table.column(name).to_pylist())
    for name in ("lang", "lid_lang"):
        if name in schema.names:
            _check_langs(name, table.column(name).to_pylist())
    if schema.equals(PARALLEL_SCHEMA):
        _check_groups(table)


def read_ipc(path: Path, kind: str, *, columns: Sequence[str] | None = None) -> pa.Table:
    """``columns`` (all when None) of a build's Arrow IPC file, memory-mapped, once the file reads, its
    schema is the contract ``kind``'s (``parallel``, ``reject``) and the columns read hold no null where the
    contract requires a value, nor an empty conversation; a :class:`DataError` naming the file otherwise.

    A file can match the sha256 its manifest records and still break the contract (a column dropped or
    nulled, and the manifest signed again): readers would fail deep inside with a ``KeyError``, or train
    on ``None``.
    """
    try:
        with pa.memory_map(str(path)) as source:
            schema = pa.ipc.open_file(source).schema
    except (pa.ArrowException, OSError) as e:
        msg = f"{path} is not a readable Arrow IPC file ({e}): rebuild the corpus"
        raise DataError(msg) from e
    try:
        validate(schema.empty_table(), kind)
    except SchemaValidationError as e:
        msg = f"{path} does not follow the {kind} schema: {e}"
        raise DataError(msg) from e
    try:
        table = feather.read_table(path, columns=None if columns is None else list(columns), memory_map=True)
    except (pa.ArrowException, OSError) as e:
        msg = f"{path} is not a readable Arrow IPC file ({e}): rebuild the corpus"
        raise DataError(msg) from e
    try:
        check_columns(table, kind)
    except SchemaValidationError as e:
        msg = f"{path} does not follow the {kind} schema: {e}"
        raise DataError(msg) from e
    return table


def check_columns(table: pa.Table, kind: str) -> None:
    """Per column, without reading rows into Python: no null in a required field of the contract ``kind``,
    no empty ``messages`` list, and a ``chosen`` and a ``rejected`` on every preference row (each check
    only where ``table`` holds its columns)."""
    schema = SCHEMAS[kind]
    for field in schema:
        if field.name in table.column_names and not field.nullable and table.column(field.name).null_count:
            row = table.column(field.name).is_null().to_pylist().index(True)
            raise SchemaValidationError("null in a required field", column=field.name, row=row)
    if "messages" in table.column_names and not schema.field("messages").nullable and table.num_rows:
        empty = pc.equal(pc.list_value_length(table.column("messages")), 0)
        if pc.any(empty).as_py():
            raise SchemaValidationError(
                "empty conversation", column="messages", row=empty.to_pylist().index(True)
            )
    if "kind" in table.column_names:
        unknown = sorted(set(pc.unique(table.column("kind").drop_null()).to_pylist()) - set(KINDS))
        if unknown:
            row = table.column("kind").to_pylist().index(unknown[0])
            raise SchemaValidationError(
                f"unknown kind {unknown[0]!r}, expected one of {KINDS}", column="kind", row=row
            )
    if {"kind", "chosen", "rejected"} <= set(table.column_names):
        preference = pc.equal(table.column("kind"), "preference")
        for name in ("chosen", "rejected"):
            missing = pc.and_(preference, table.column(name).is_null())
            if pc.any(missing).as_py():
                raise SchemaValidationError(
                    "null on a preference row", column=name, row=missing.to_pylist().index(True)
                )


def _check_messages(column: str, values: list[list[dict[str, Any]] | None]) -> None:
    for row, messages in enumerate(values):
        if messages is None:
            continue
        if not messages and column != "rejected":
            raise SchemaValidationError("empty conversation", column=column, row=row)
        for m in messages:
            if m["role"] not in ROLES:
                raise SchemaValidationError(
                    f"unknown role {m['role']!r}, expected one of {ROLES}", column=column, row=row
                )
            if m["tool_calls"] is not None:
                try:
                    calls = json.loads(m["tool_calls"])
                except json.JSONDecodeError as e:
                    raise SchemaValidationError(
                        f"tool_calls is not JSON ({e})", column=column, row=row
                    ) from e
                if not isinstance(calls, list):
                    raise SchemaValidationError("tool_calls must be a JSON list", column=column, row=row)


def _check_langs(column: str, values: list[str | None]) -> None:
    for row, code in enumerate(values):
        if code is None:
            continue
        try:
            canonical = normalize_lang(code)
        except UnknownLanguageError as e:
            raise SchemaValidationError(str(e), column=column, row=row) from e
        if canonical != code:
            raise SchemaValidationError(
                f"language {code!r} is not normalised (use {canonical!r})", column=column, row=row
            )


def _check_groups(table: pa.Table) -> None:
    seen: set[tuple[str, str]] = set()
    anchors: dict[str, int] = {}
    groups = table.column("group_id").to_pylist()
    langs = table.column("lang").to_pylist()
    is_anchor = table.column("is_anchor").to_pylist()
    for row, (group, lang, anchor) in enumerate(zip(groups, langs, is_anchor, strict=True)):
        if (group, lang) in seen:
            raise SchemaValidationError(
                f"duplicate (group_id, lang) = ({group!r}, {lang!r})", column="group_id", row=row
            )
        seen.add((group, lang))
        if anchor:
            if group in anchors:
                raise SchemaValidationError(
                    f"second anchor row for group {group!r}", column="is_anchor", row=row
                )
            anchors[group] = row
    missing = sorted({g for g in groups if g not in anchors})
    if missing:
        row = groups.index(missing[0])
        raise SchemaValidationError(f"group {missing[0]!r} has no anchor row", column="is_anchor", row=row)
