"""Views of a row's conversations shared by the filter stages that read translated text."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.masking import strip_protected

CONVERSATION_COLUMNS = ("messages", "chosen", "rejected")
# Roles whose content is written in the row's language; tool output is data and may be in any language.
PROSE_ROLES = frozenset({"system", "user", "assistant"})

Message = dict[str, Any]
Conversation = dict[str, list[Message]]


def conversations(batch: pa.Table) -> list[Conversation]:
    """Each row's message lists by column name; ``chosen``/``rejected`` only where the row has them."""
    columns = {name: batch.column(name).to_pylist() for name in CONVERSATION_COLUMNS}
    return [
        {name: values[row] for name, values in columns.items() if values[row] is not None}
        for row in range(batch.num_rows)
    ]


def prose_by_row(batch: pa.Table) -> list[dict[str, str]]:
    """Each row's prose (protected spans removed) per prose-role message that has any, keyed
    ``messages[i]`` / ``chosen[i]`` / ``rejected[i]`` in that order.

    Reads only the ``role`` and ``content`` fields, column by column, instead of building every message
    as a dict: language ID spends most of its time here otherwise.
    """
    out: list[dict[str, str]] = [{} for _ in range(batch.num_rows)]
    for column in CONVERSATION_COLUMNS:
        lists = batch.column(column).combine_chunks()
        flat = lists.flatten()
        if not len(flat):
            continue
        rows = pc.list_parent_indices(lists).to_pylist()
        starts = lists.offsets.to_pylist()
        roles = flat.field("role").to_pylist()
        contents = flat.field("content").to_pylist()
        for k, (row, role, content) in enumerate(zip(rows, roles, contents, strict=True)):
            if role not in PROSE_ROLES:
                continue
            text = strip_protected(content)
            if text:
                out[row][f"{column}[{k - starts[row] + starts[0]}]"] = text
    return out
