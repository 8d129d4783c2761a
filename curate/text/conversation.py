"""Views of a row's conversations shared by the filter stages that read translated text."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.text.masking import strip_protected_all
from schemas import CONVERSATION_COLUMNS

# Roles whose content is written in the row's language; tool output is data and may be in any language.
PROSE_ROLES = frozenset({"system", "user", "assistant"})
_PROSE_ROLES = pa.array(sorted(PROSE_ROLES), pa.string())

Message = dict[str, Any]
Conversation = dict[str, list[Message]]


def conversations(batch: pa.Table) -> list[Conversation]:
    """Each row's message lists by column name; ``chosen``/``rejected`` only where the row has them."""
    columns = {name: batch.column(name).to_pylist() for name in CONVERSATION_COLUMNS}
    return [
        {name: values[row] for name, values in columns.items() if values[row] is not None}
        for row in range(batch.num_rows)
    ]


class Prose(NamedTuple):
    """The prose (protected spans removed) of every prose-role message of a batch that has any, ordered
    by row, then column (``messages``, ``chosen``, ``rejected``), then position in the list."""

    rows: np.ndarray  # the row of each text
    columns: np.ndarray  # index into CONVERSATION_COLUMNS
    positions: np.ndarray  # index in the row's message list
    texts: pa.Array
    chars: np.ndarray  # the length of each text in characters

    def where(self, i: int) -> str:
        """Which message text ``i`` is, e.g. ``chosen[1]``."""
        return f"{CONVERSATION_COLUMNS[self.columns[i]]}[{self.positions[i]}]"


def prose(batch: pa.Table) -> Prose:
    """Every prose message of ``batch`` in bulk: Arrow picks the roles and
    :func:`~curate.text.masking.strip_protected_all` strips them natively, so language ID does not build a
    dict per message."""
    rows, columns, positions, texts = [], [], [], []
    for c, name in enumerate(CONVERSATION_COLUMNS):
        column = batch.column(name)
        if column.null_count == len(column):  # no chosen/rejected in an SFT batch
            continue
        lists = column.combine_chunks()
        flat = lists.flatten()
        if not len(flat):
            continue
        parents = pc.list_parent_indices(lists).to_numpy()
        starts = lists.offsets.to_numpy()
        keep = pc.is_in(flat.field("role"), value_set=_PROSE_ROLES).to_numpy(zero_copy_only=False)
        rows.append(parents[keep])
        columns.append(np.full(int(keep.sum()), c))
        positions.append((np.arange(len(flat)) - starts[parents] + starts[0])[keep])
        texts.append(flat.field("content").filter(pa.array(keep)))
    if not texts:
        empty = np.zeros(0, np.int64)
        return Prose(empty, empty, empty, pa.array([], pa.string()), empty)
    stripped, chars = strip_protected_all(pa.concat_arrays(texts) if len(texts) > 1 else texts[0])
    has_prose = chars > 0
    row = np.concatenate(rows)[has_prose]
    stripped = stripped.filter(pa.array(has_prose))
    chars, column_of = chars[has_prose], np.concatenate(columns)[has_prose]
    position = np.concatenate(positions)[has_prose]
    if len(texts) > 1:  # columns were read one after the other: order by row
        order = np.argsort(row, kind="stable")
        row, column_of, position, chars = row[order], column_of[order], position[order], chars[order]
        stripped = stripped.take(pa.array(order))
    return Prose(rows=row, columns=column_of, positions=position, texts=stripped, chars=chars)


def prose_by_row(batch: pa.Table) -> list[dict[str, str]]:
    """Each row's prose per prose-role message that has any, keyed ``messages[i]`` / ``chosen[i]`` /
    ``rejected[i]`` in that order."""
    found = prose(batch)
    out: list[dict[str, str]] = [{} for _ in range(batch.num_rows)]
    for i, (row, text) in enumerate(zip(found.rows.tolist(), found.texts.to_pylist(), strict=True)):
        out[row][found.where(i)] = text
    return out
