"""Arrow schemas of the data contract and :func:`validate`, which names the bad column and row."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from schemas.errors import DataError
from schemas.langs import UnknownLanguageError, normalize_lang
from schemas.records import ROLES

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
