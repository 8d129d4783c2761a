"""Stage-test helpers over the shared row builders (:mod:`tests.rows`): short conversations, tables and
results keyed by ``group/lang``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate.stages.base import StageResult
from schemas import PARALLEL_SCHEMA, validate
from tests.rows import Messages, message, parallel_row


def convo(*contents: str) -> Messages:
    """Messages alternating user / assistant."""
    return [message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)]


def row(group_id: str, lang: str, *contents: str, **fields: Any) -> dict[str, Any]:
    """A row whose messages alternate user / assistant over ``contents``."""
    return parallel_row(group_id, lang, convo(*contents), **fields)


def table(*rows: dict[str, Any]) -> pa.Table:
    out = pa.Table.from_pylist(list(rows), schema=PARALLEL_SCHEMA)
    validate(out)
    return out


def by_key(result: StageResult) -> dict[str, dict[str, Any]]:
    """``group/lang`` → the row as kept or rejected (``reason`` None when kept)."""
    out = {f"{r['group_id']}/{r['lang']}": {**r, "reason": None} for r in result.kept.to_pylist()}
    out |= {f"{r['group_id']}/{r['lang']}": r for r in result.rejected.to_pylist()}
    return out
