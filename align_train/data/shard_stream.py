"""Stream whole parallel groups out of ``curate build`` shards, split disjointly across data-parallel ranks.

Shards are memory-mapped and read one record batch at a time, so a rank holds at most one record batch
and its shuffle buffer in memory. The order of an epoch is a pure function of ``(seed, epoch)``:

1. the shard files are permuted with a generator seeded from ``(seed, epoch)``;
2. groups are numbered globally in that order (``g = 0, 1, ...``) and group ``g`` goes to rank
   ``g % world_size``; groups with ``g >= groups_per_rank() * world_size`` are dropped, so every rank
   yields the same number of groups and DDP ranks step together;
3. each rank shuffles its groups through a buffer seeded from ``(seed, epoch, rank)``.

With ``split='train'`` or ``'eval'`` only the groups of that side of the held-out split are numbered and
yielded (see :mod:`align_train.split`); the group and row counts of the split are then read once from the
``group_id`` and ``lang`` columns, since the manifest only counts whole shards.

Nothing is trained on before every shard has been checked against ``manifest.json`` and the contract: its
bytes (sha256), its schema, no null where a value is required, and its groups and rows per language. A
shard changed or damaged after the build, or a manifest edited by hand (even signed again), stops the run
at start-up with one line naming the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from align_train.split import Split, check_split, in_split
from schemas import ConfigError, DataError, Manifest, ShardInfo, normalize_lang, read_ipc


@dataclass(frozen=True)
class Group:
    """One source example and its translations: rows sorted by language, anchor included."""

    group_id: str
    rows: list[dict[str, Any]]

    @property
    def anchor(self) -> dict[str, Any]:
        return next(row for row in self.rows if row["is_anchor"])

    @property
    def langs(self) -> list[str]:
        return [row["lang"] for row in self.rows]


class ShardStream:
    """This rank's groups of a shard directory, epoch by epoch, resumable from :meth:`state_dict`.

    Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``. Iteration continues from the
    cursor (groups already consumed in the current epoch are skipped, by replaying the epoch), and the
    cursor rewinds only when the epoch changes: restoring a state and calling ``set_epoch`` with the same
    epoch resumes exactly where the saved run stopped.
    """

    def __init__(
        self,
        shard_dir: Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1024,
        langs: Sequence[str] | None = None,
        split: Split = "all",
        holdout: float = 0.0,
    ) -> None:
        check_split(split, holdout)
        if world_size < 1:
            msg = f"world_size={world_size} is invalid: expected at least 1"
            raise ValueError(msg)
        if not 0 <= rank < world_size:
            msg = f"rank={rank} is invalid for world_size={world_size}: expected 0 <= rank < world_size"
            raise ValueError(msg)
        if shuffle_buffer < 1:
            msg = f"shuffle_buffer={shuffle_buffer} is invalid: expected at least 1 (1 keeps file order)"
            raise ValueError(msg)
        self.shard_dir = Path(shard_dir)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.manifest = Manifest.load(self.shard_dir)
        self.langs = self._kept_langs(langs)
        self._filter = None if langs is None else pa.array(self.langs, pa.string())
        self.split = split
        self.holdout = holdout
        self._whole_shards = split == "all" or (split == "train" and holdout == 0)
        self._shard_groups_in_split, self._lang_rows = self._check_shards()
        self.num_groups = sum(self._shard_groups_in_split)
        if self.num_groups == 0 and not self._whole_shards:
            msg = (
                f"split={split!r} with holdout={holdout} selects none of the "
                f"{sum(shard.groups for shard in self.manifest.shards)} groups in {self.shard_dir}: "
                "change holdout or split"
            )
            raise ConfigError(msg)
        self._groups_per_rank = self.num_groups // world_size
        if self._groups_per_rank == 0:
            msg = (
                f"world_size={world_size} is larger than the {self.num_groups} groups in {self.shard_dir}: "
                "every rank needs at least one group"
            )
            raise ConfigError(msg)
        self._epoch = 0
        self._consumed = 0

    def _kept_langs(self, langs: Sequence[str] | None) -> list[str]:
        if langs is None:
            return sorted(self.manifest.langs)
        wanted = {normalize_lang(code) for code in langs}
        unknown = sorted(wanted - set(self.manifest.langs))
        if unknown:
            msg = f"langs={list(langs)} names {unknown}, not in the corpus: expected some of {self.manifest.langs}"
            raise ConfigError(msg)
        return sorted(wanted | {self.manifest.anchor_lang})

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def lang_rows(self) -> dict[str, int]:
        """Rows per kept language in the split over all shards."""
        return self._lang_rows

    def _check_shards(self) -> tuple[list[int], dict[str, int]]:
        """Check every shard against the manifest, then count the groups per shard and the rows per kept
        language of the split (the manifest's counts for whole shards, two columns of each otherwise)."""
        groups: list[int] = []
        rows: Counter[str] = Counter()
        kept_langs = pa.array(self.langs, pa.string())
        for shard in self.manifest.shards:
            table = _checked_columns(shard, self.shard_dir)
            if self._whole_shards:
                groups.append(shard.groups)
                rows.update({lang: n for lang, n in shard.langs.items() if lang in self.langs})
                continue
            members = [
                g for g in pc.unique(table["group_id"]).to_pylist() if in_split(g, self.split, self.holdout)
            ]
            groups.append(len(members))
            selected = pc.and_(
                pc.is_in(table["group_id"], pa.array(members, pa.string())),
                pc.is_in(table["lang"], kept_langs),
            )
            rows.update(table["lang"].filter(selected).to_pylist())
        return groups, dict(sorted(rows.items()))

    def shard_kinds(self) -> dict[str, set[str]]:
        """The row kinds (``sft``, ``preference``) in each shard file, from its ``kind`` column."""
        kinds = {}
        for shard in self.manifest.shards:
            table = feather.read_table(self.shard_dir / shard.file, columns=["kind"], memory_map=True)
            kinds[shard.file] = set(pc.unique(table["kind"]).to_pylist())
        return kinds

    def groups_per_rank(self) -> int:
        return self._groups_per_rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self._groups_per_rank:
            msg = f"state consumed={consumed} is invalid: expected 0..{self._groups_per_rank} groups per rank"
            raise ValueError(msg)
        self._epoch = int(state["epoch"])
        self._consumed = consumed

    def __iter__(self) -> Iterator[Group]:
        skip = self._consumed
        for index, group in enumerate(self._shuffled(self._epoch)):
            if index < skip:
                continue
            self._consumed = index + 1
            yield group

    def _shuffled(self, epoch: int) -> Iterator[Group]:
        rng = np.random.default_rng((self.seed, epoch, self.rank))
        buffer: list[Group] = []
        for group in self._in_file_order(epoch):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(group)
                continue
            slot = int(rng.integers(len(buffer)))
            yield buffer[slot]
            buffer[slot] = group
        rng.shuffle(buffer)  # type: ignore[arg-type]
        yield from buffer

    def _in_file_order(self, epoch: int) -> Iterator[Group]:
        order = np.random.default_rng((self.seed, epoch)).permutation(len(self.manifest.shards))
        limit = self._groups_per_rank * self.world_size
        first = 0
        for s in order:
            shard = self.manifest.shards[int(s)]
            if first >= limit:
                break
            yield from self._shard_groups(shard, first, limit)
            first += self._shard_groups_in_split[int(s)]

    def _shard_groups(self, shard: ShardInfo, first: int, limit: int) -> Iterator[Group]:
        """This rank's groups of one shard, whose groups in the split are numbered globally from ``first``."""
        path = self.shard_dir / shard.file
        index = first - 1
        current: str | None = None
        selected = False
        pending: list[dict[str, Any]] = []
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                if self._filter is not None:
                    keep = pc.or_(batch.column("is_anchor"), pc.is_in(batch.column("lang"), self._filter))
                    batch = batch.filter(keep)
                take: list[int] = []
                for i, group_id in enumerate(batch.column("group_id").to_pylist()):
                    if group_id != current:
                        current = group_id
                        selected = self._whole_shards or in_split(group_id, self.split, self.holdout)
                        if selected:
                            index += 1
                    if selected and index < limit and index % self.world_size == self.rank:
                        take.append(i)
                if not take:
                    continue
                # A group may continue in the next record batch, so it is yielded only once a row of
                # another group (or the end of the shard) shows it is complete.
                for record in batch.take(pa.array(take, pa.int64())).to_pylist():
                    if pending and record["group_id"] != pending[0]["group_id"]:
                        yield _group(pending)
                        pending = []
                    pending.append(record)
        if pending:
            yield _group(pending)


def _group(rows: list[dict[str, Any]]) -> Group:
    return Group(rows[0]["group_id"], sorted(rows, key=lambda row: row["lang"]))


def _checked_columns(shard: ShardInfo, root: Path) -> pa.Table:
    """The ``group_id`` and ``lang`` columns of a shard whose bytes, schema, values and counts match the
    manifest.

    A shard that disagrees with its manifest entry would be trained on as something else, or give ranks
    unequal work; one holding a null where the contract requires a value (a conversation, say) would reach
    the collator. Refuse either at start-up, on every rank, naming the file: a rank failing mid-run would
    leave the others waiting in a collective.
    """
    path = shard.verify(root)
    table = read_ipc(path, "parallel")
    groups = len(pc.unique(table["group_id"]))
    lang_rows = Counter(table["lang"].to_pylist())
    if groups != shard.groups or dict(lang_rows) != {k: v for k, v in shard.langs.items() if v}:
        msg = (
            f"shard {path} holds {groups} groups and rows per language {dict(sorted(lang_rows.items()))}, "
            f"but manifest.json records {shard.groups} groups and {shard.langs}: rebuild the corpus"
        )
        raise DataError(msg)
    return table.select(["group_id", "lang"])
