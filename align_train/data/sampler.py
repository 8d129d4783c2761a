"""Turn a rank's stream of groups into training batches under one of three language policies.

``all``
    every language of each group. A batch of ``groups_per_batch`` groups holds, for each of its groups,
    the anchor and all of its translations, so every batch is balanced by construction: each language
    appears exactly as often as the groups that carry it.
``sample``
    the anchor plus ``k`` of the group's translations, drawn without replacement with probability
    ``p_l ∝ (n_l / N) ** (1 / temperature)``, ``n_l`` being the rows of language ``l`` in the manifest
    (restricted to the languages the group has, then renormalised). ``temperature = 1`` follows the corpus
    frequencies, larger values flatten them towards uniform and so lift rare languages. With ``k = 1`` the
    share of language ``l`` among the drawn translations converges, over many batches, to the mean over
    groups of ``p_l`` renormalised within each group (exactly ``p_l`` when every group has every language).
``shuffled``
    the control for ``all``: the same rows, and every batch with the same number of rows of each language
    as the batch of ``all`` in its place, but no two rows of one group in one optimizer step. Batches are
    taken in blocks of ``n`` steps of ``all`` (``n`` = the corpus's languages); within a block, the rows of
    the ``j``-th language (the anchor is the 0th and stays) move ``j`` steps on, cyclically::

        all        step 0: en₀ es₀ ca₀   step 1: en₁ es₁ ca₁   step 2: en₂ es₂ ca₂
        shuffled   step 0: en₀ es₁ ca₂   step 1: en₁ es₂ ca₀   step 2: en₂ es₀ ca₁

    (``xᵢ``: the rows of language ``x`` from the groups of step ``i``.) A group's translations are thus seen
    within ``n`` steps of each other, in the same language mix per step: the only difference from ``all``
    is whether they share a step. (A last block shorter than ``n`` steps cannot separate every language.)
``monolingual``
    an older baseline: the same rows as ``all``, shuffled freely through a row-level buffer so that a
    batch mixes rows of unrelated groups. Batch ``b`` has exactly as many rows as batch ``b`` of ``all``,
    but not the same mix of languages.

Every policy yields ``len(sampler)`` batches per epoch on every rank (the last one may be smaller), and
each ``ParallelBatch`` reports its realised language mix in ``lang_counts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from align_train.choices import POLICIES, Policy, check_choice
from align_train.data.batch import ParallelBatch
from align_train.data.shard_stream import Group, ShardStream
from schemas import normalize_lang


class ParallelBatchSampler:
    """One epoch of this rank's batches per iteration, resumable from :meth:`state_dict`.

    The epoch is the stream's (``stream.set_epoch`` or :meth:`set_epoch`). Each iteration replays the
    epoch from its first group with a generator seeded from ``(seed, epoch, rank)`` and skips the batches
    already yielded, so a restored state continues with exactly the batches the saved run would have seen.
    """

    def __init__(
        self,
        stream: ShardStream,
        *,
        policy: Policy,
        groups_per_batch: int,
        anchor_lang: str,
        k: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
        batches_per_step: int = 1,
    ) -> None:
        """``batches_per_step`` (the loop's gradient accumulation) is the unit ``shuffled`` moves rows by, so
        that a group's rows never share an optimizer step."""
        check_choice("policy", policy, POLICIES)
        if groups_per_batch < 1:
            msg = f"groups_per_batch={groups_per_batch} is invalid: expected at least 1"
            raise ValueError(msg)
        if k < 1:
            msg = f"k={k} is invalid: expected at least 1 translation per group"
            raise ValueError(msg)
        if batches_per_step < 1:
            msg = f"batches_per_step={batches_per_step} is invalid: expected at least 1"
            raise ValueError(msg)
        if not temperature > 0:
            msg = f"temperature={temperature} is invalid: expected > 0 (1 = corpus frequencies)"
            raise ValueError(msg)
        anchor = normalize_lang(anchor_lang)
        if anchor != stream.manifest.anchor_lang:
            msg = (
                f"anchor_lang={anchor_lang!r} does not match the corpus, whose anchor is "
                f"{stream.manifest.anchor_lang!r}: set anchor_lang to it"
            )
            raise ValueError(msg)
        self.stream = stream
        self.policy = policy
        self.groups_per_batch = groups_per_batch
        self.anchor_lang = anchor
        self.k = k
        self.temperature = temperature
        self.seed = seed
        self.batches_per_step = batches_per_step
        self.lang_probs = _temperature_probs(
            {lang: n for lang, n in stream.lang_rows.items() if lang != anchor}, temperature
        )
        self._policies: dict[Policy, Callable[[np.random.Generator], Iterator[ParallelBatch]]] = {
            "all": lambda rng: self._grouped(rng, lambda group, _: group.rows),
            "sample": lambda rng: self._grouped(rng, self._sample_langs),
            "shuffled": self._shuffled,
            "monolingual": self._monolingual,
        }
        self._epoch = stream.epoch
        self._batches = 0

    def __len__(self) -> int:
        return math.ceil(self.stream.groups_per_rank() / self.groups_per_batch)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state["batches"])
        if not 0 <= batches <= len(self):
            msg = f"state batches={batches} is invalid: expected 0..{len(self)} batches per epoch"
            raise ValueError(msg)
        self._epoch = int(state["epoch"])
        self._batches = batches
        self.stream.load_state_dict({"epoch": self._epoch, "consumed": 0})

    def __iter__(self) -> Iterator[ParallelBatch]:
        if self.stream.epoch != self._epoch:
            self._epoch, self._batches = self.stream.epoch, 0
        skip = self._batches
        self.stream.load_state_dict({"epoch": self._epoch, "consumed": 0})
        rng = np.random.default_rng((self.seed, self._epoch, self.stream.rank))
        for index, batch in enumerate(self._policies[self.policy](rng)):
            if index < skip:
                continue
            self._batches = index + 1
            yield batch

    def _grouped(
        self,
        rng: np.random.Generator,
        pick: Callable[[Group, np.random.Generator], list[dict[str, Any]]],
    ) -> Iterator[ParallelBatch]:
        rows: list[dict[str, Any]] = []
        groups = 0
        for group in self.stream:
            rows.extend(pick(group, rng))
            groups += 1
            if groups == self.groups_per_batch:
                yield ParallelBatch.of(rows)
                rows, groups = [], 0
        if rows:
            yield ParallelBatch.of(rows)

    def _sample_langs(self, group: Group, rng: np.random.Generator) -> list[dict[str, Any]]:
        """The anchor plus ``k`` translations (all of them when the group has fewer)."""
        translations = [i for i, row in enumerate(group.rows) if not row["is_anchor"]]
        if len(translations) <= self.k:
            return group.rows
        weights = np.array([self.lang_probs[group.rows[i]["lang"]] for i in translations])
        drawn = rng.choice(len(translations), size=self.k, replace=False, p=weights / weights.sum())
        chosen = {translations[int(j)] for j in drawn}
        return [row for i, row in enumerate(group.rows) if row["is_anchor"] or i in chosen]

    def _shuffled(self, rng: np.random.Generator) -> Iterator[ParallelBatch]:
        langs = [
            self.anchor_lang,
            *sorted(lang for lang in self.stream.lang_rows if lang != self.anchor_lang),
        ]
        block_size = len(langs) * self.batches_per_step
        block: list[list[dict[str, Any]]] = []
        for batch in self._grouped(rng, lambda group, _: group.rows):
            block.append(batch.rows)
            if len(block) == block_size:
                yield from _rotated(block, langs, self.batches_per_step)
                block = []
        if block:
            yield from _rotated(block, langs, self.batches_per_step)

    def _monolingual(self, rng: np.random.Generator) -> Iterator[ParallelBatch]:
        # Batch b takes as many rows as the groups of batch b of ``all`` hold, drawn from a buffer of
        # about ``shuffle_buffer`` groups' worth of rows; total rows in equal total rows out.
        rows_per_group = sum(self.stream.lang_rows.values()) / self.stream.num_groups
        capacity = max(1, round(self.stream.shuffle_buffer * rows_per_group))
        buffer: list[dict[str, Any]] = []
        sizes: list[int] = []
        for batch in self._grouped(rng, lambda group, _: group.rows):
            buffer.extend(batch.rows)
            sizes.append(len(batch.rows))
            while sizes and len(buffer) >= max(capacity, sizes[0]):
                yield ParallelBatch.of(_draw(buffer, sizes.pop(0), rng))
        for size in sizes:
            yield ParallelBatch.of(_draw(buffer, size, rng))


def _rotated(
    block: list[list[dict[str, Any]]], langs: list[str], batches_per_step: int
) -> Iterator[ParallelBatch]:
    """The batches of ``block`` with the rows of ``langs[j]`` moved ``j`` steps on (see ``shuffled``).

    Per language, the block's rows are laid end to end in batch order, the sequence is rotated to start
    at the first row of the batch ``j`` steps on, and batch ``b`` takes the next ``count[b]`` rows: each row
    is used once and every batch keeps its count of every language, also when groups lack languages.
    """
    out: list[list[dict[str, Any]]] = [[] for _ in block]
    for j, lang in enumerate(langs):
        per_batch = [[row for row in rows if row["lang"] == lang] for rows in block]
        flat = [row for rows in per_batch for row in rows]
        start = sum(len(rows) for rows in per_batch[: (j * batches_per_step) % len(block)])
        rotated = flat[start:] + flat[:start]
        taken = 0
        for b, rows in enumerate(per_batch):
            out[b].extend(rotated[taken : taken + len(rows)])
            taken += len(rows)
    unplaced = sum(len(rows) for rows in block) - sum(len(rows) for rows in out)
    if unplaced:  # a row of a language the manifest does not list
        msg = f"{unplaced} rows of the batch block are in none of the corpus languages {langs}"
        raise ValueError(msg)
    for rows in out:
        yield ParallelBatch.of(rows)


def _draw(buffer: list[dict[str, Any]], size: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Remove ``size`` random rows from ``buffer`` (swap with the last, pop) and return them."""
    out = []
    for _ in range(size):
        slot = int(rng.integers(len(buffer)))
        buffer[slot], buffer[-1] = buffer[-1], buffer[slot]
        out.append(buffer.pop())
    return out


def _temperature_probs(rows: dict[str, int], temperature: float) -> dict[str, float]:
    """``p_l ∝ (n_l / N) ** (1 / temperature)`` over the languages in ``rows``."""
    total = sum(rows.values())
    if total == 0:
        return {}
    weights = {lang: (n / total) ** (1 / temperature) for lang, n in rows.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}
