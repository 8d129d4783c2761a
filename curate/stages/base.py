"""What every pipeline stage shares: the batch contract, the keep/reject split and its bookkeeping.

A stage receives a batch of parallel rows (``schemas.PARALLEL_SCHEMA``) holding whole groups: each
translation travels with its anchor, so a stage can compare the two without looking elsewhere. It returns
the rows it keeps and the rows it rejects (``schemas.REJECT_SCHEMA``, with ``stage`` and ``reason``).
Stages never touch files or know which executor runs them; models are loaded in :meth:`Stage.setup`, once
per worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from schemas import PARALLEL_SCHEMA, REJECT_SCHEMA


@dataclass
class StageResult:
    """Rows kept and rejected by one stage; ``created`` counts rows the stage added, per language.

    Every stage conserves rows: ``len(batch) + sum(created) == len(kept) + len(rejected)``.
    """

    kept: pa.Table
    rejected: pa.Table
    created: Counter[str] = field(default_factory=Counter)


@dataclass
class Verdict:
    """A filter's judgement of each row: ``reasons[i]`` is None to keep row i, else why it is rejected.

    ``columns`` are values the stage sets on every row (kept or not), e.g. ``lid_prob``, so that scores
    are visible on rejects too.
    """

    reasons: list[str | None]
    details: list[str | None] | None = None
    columns: dict[str, pa.Array | list[Any]] = field(default_factory=dict)


class Stage(ABC):
    """A named step of ``curate build``."""

    name: ClassVar[str]

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or open connections; called once per worker before the first batch."""

    @abstractmethod
    def process(self, batch: pa.Table) -> StageResult:
        """Judge one batch of whole groups."""


class FilterStage(Stage):
    """A stage that only judges rows: subclasses implement :meth:`judge`, the base splits the batch."""

    @abstractmethod
    def judge(self, batch: pa.Table) -> Verdict:
        """Return a verdict for each row of ``batch`` (anchors are always kept)."""

    def process(self, batch: pa.Table) -> StageResult:
        if batch.num_rows == 0:
            return StageResult(kept=batch, rejected=empty_rejects())
        verdict = self.judge(batch)
        if len(verdict.reasons) != batch.num_rows:
            msg = f"stage {self.name!r} judged {len(verdict.reasons)} rows of a batch of {batch.num_rows}"
            raise RuntimeError(msg)
        batch = set_columns(batch, verdict.columns)
        return split(batch, verdict.reasons, stage=self.name, details=verdict.details)


def set_columns(table: pa.Table, columns: dict[str, pa.Array | list[Any]]) -> pa.Table:
    """Replace columns by name, cast to the column's contract type."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        typ = table.schema.field(name).type
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, type=typ)
        table = table.set_column(index, table.schema.field(name), array.cast(typ))
    return table


def split(
    batch: pa.Table,
    reasons: Sequence[str | None],
    *,
    stage: str,
    details: Sequence[str | None] | None = None,
) -> StageResult:
    """Split ``batch`` into kept rows and reject rows carrying ``stage`` and ``reason``."""
    drop = [i for i, r in enumerate(reasons) if r is not None]
    if not drop:
        return StageResult(kept=batch, rejected=empty_rejects())
    keep = np.ones(batch.num_rows, bool)
    keep[drop] = False
    rejected = to_rejects(
        batch.take(pa.array(drop, type=pa.int64())),
        stage=stage,
        reasons=[reasons[i] for i in drop],  # type: ignore[misc]
        details=[details[i] for i in drop] if details is not None else None,
    )
    return StageResult(kept=batch.filter(pa.array(keep)), rejected=rejected)


def to_rejects(
    rows: pa.Table,
    *,
    stage: str,
    reasons: Sequence[str],
    details: Sequence[str | None] | None = None,
    raw: Sequence[str | None] | None = None,
) -> pa.Table:
    """Turn parallel rows into reject rows (same columns, all nullable, plus stage/reason/detail/raw)."""
    n = rows.num_rows
    present = set(rows.column_names)
    arrays = [
        _as_type(rows.column(f.name), f.type) if f.name in present else pa.nulls(n, f.type)
        for f in REJECT_SCHEMA
        if f.name in _PARALLEL_NAMES
    ]
    arrays += [
        pa.array([stage] * n, pa.string()),
        pa.array(list(reasons), pa.string()),
        pa.array(list(details) if details is not None else [None] * n, pa.string()),
        pa.array(list(raw) if raw is not None else [None] * n, pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=REJECT_SCHEMA)


_PARALLEL_NAMES = frozenset(PARALLEL_SCHEMA.names)


def _as_type(column: pa.ChunkedArray, typ: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == typ else column.cast(typ)


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


def empty_rows() -> pa.Table:
    return PARALLEL_SCHEMA.empty_table()


def anchor_index(batch: pa.Table) -> dict[str, int]:
    """Row index of each group's anchor in ``batch``."""
    groups = batch.column("group_id").to_pylist()
    anchors = batch.column("is_anchor").to_pylist()
    return {g: i for i, (g, a) in enumerate(zip(groups, anchors, strict=True)) if a}
