"""Exact and near-duplicate source examples, removed before anything is translated.

A group is judged by its anchor row, in input order; the first of a set of duplicates is kept and every
later one becomes a reject of stage ``dedup`` that names the group it repeats:

    exact   the same conversation (``content_hash`` of messages, chosen and rejected)
    near    MinHash LSH (``datasketch``) over word n-grams of the normalised text: an estimated Jaccard
            similarity of at least ``dedup.threshold`` to a kept group

The index lives in the process that reads the input (the driver, with either executor), and input order
is deterministic, so the same groups are kept on every run, on a resume and with Ray. Memory grows with
the kept groups: about ``8 × num_perm`` bytes of signature each (1 KiB at the default 128).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from datasketch import MinHash, MinHashLSH

from curate.config import DedupConfig
from curate.readers.grouping import Event
from schemas import CONVERSATION_COLUMNS

STAGE = "dedup"
_WORD = re.compile(r"\w+")


def normalised_words(row: dict[str, Any]) -> list[str]:
    """The words of a row's conversations (content and tool calls), case-folded and NFKC-normalised, so
    that spacing, punctuation and casing do not hide a repeat."""
    parts = [
        f"{m['content']} {m['tool_calls'] or ''}"
        for column in CONVERSATION_COLUMNS
        for m in row[column] or []
    ]
    return _WORD.findall(unicodedata.normalize("NFKC", " ".join(parts)).casefold())


class Deduplicator:
    """Keeps the first group of each set of duplicates; see the module docstring."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self._exact: dict[str, str] = {}  # content hash → group kept
        self._lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm) if config.near else None
        self._signatures: dict[str, MinHash] = {}  # group kept → its signature, in input order
        self._order: dict[str, int] = {}

    def filter(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` with each duplicate group turned into rejects."""
        for event in events:
            anchor = next((row for row in event.rows if row["is_anchor"]), None)
            found = None if anchor is None else self.judge(anchor)
            if found is None:
                yield event
                continue
            reason, detail = found
            rejects = [
                {**row, "stage": STAGE, "reason": reason, "detail": detail, "raw": None} for row in event.rows
            ]
            yield Event([], [*event.rejects, *rejects])

    def judge(self, anchor: dict[str, Any]) -> tuple[str, str] | None:
        """``(reason, detail)`` when the anchor repeats a kept group; otherwise it is kept and remembered."""
        group = anchor["group_id"]
        kept = self._exact.get(anchor["content_hash"])
        if kept is not None:
            return "exact", f"the same conversation as group {kept!r}, which is kept"
        self._exact[anchor["content_hash"]] = group
        if self._lsh is None:
            return None
        signature = self._signature(normalised_words(anchor))
        candidates = self._lsh.query(signature)
        if candidates:
            # The most similar kept group; ties go to the one read first.
            best = max(candidates, key=lambda g: (signature.jaccard(self._signatures[g]), -self._order[g]))
            similarity = signature.jaccard(self._signatures[best])
            if similarity >= self.config.threshold:
                del self._exact[anchor["content_hash"]]
                detail = (
                    f"a near-duplicate of group {best!r}, which is kept (estimated Jaccard similarity "
                    f"{similarity:.2f} of word {self.config.ngram}-grams ≥ {self.config.threshold})"
                )
                return "near", detail
        self._lsh.insert(group, signature)
        self._signatures[group] = signature
        self._order[group] = len(self._order)
        return None

    def _signature(self, words: list[str]) -> MinHash:
        n = self.config.ngram
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        signature = MinHash(num_perm=self.config.num_perm, seed=self.config.seed)
        signature.update_batch([s.encode("utf-8") for s in sorted(shingles)])
        return signature
