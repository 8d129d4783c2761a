"""Views of a row's conversations shared by the filter stages that read translated text."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

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


def prose(conversation: Conversation) -> dict[str, str]:
    """The prose (protected spans removed) of each prose-role message that has any, keyed ``messages[i]``."""
    out: dict[str, str] = {}
    for column, messages in conversation.items():
        for i, message in enumerate(messages):
            text = strip_protected(message["content"]) if message["role"] in PROSE_ROLES else ""
            if text:
                out[f"{column}[{i}]"] = text
    return out
