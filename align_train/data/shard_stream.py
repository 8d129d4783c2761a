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

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from align_train.split import Split, check_split, in_split
from schemas import ConfigError, DataError, Manifest, ShardInfo, normalize_lang, read_ipc

_SLOT_BLOCK = 4096  # shuffle-buffer slots drawn at a time


class Group(NamedTuple):
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
        """A shuffle buffer: once full, each new group takes the place of a random one, which is yielded.
        The slots are drawn in blocks, as many as there will be draws (the same numbers one draw at a
        time gives, at a fraction of the cost), so the buffer's final shuffle sees the same generator."""
        rng = np.random.default_rng((self.seed, epoch, self.rank))
        draws = max(0, self._groups_per_rank - self.shuffle_buffer)
        slots: Iterator[int] = iter(())
        buffer: list[Group] = []
        for group in self._in_file_order(epoch):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(group)
                continue
            slot = next(slots, None)
            if slot is None:
                block = min(draws, _SLOT_BLOCK)
                draws -= block
                slots = iter(rng.integers(len(buffer), size=block).tolist())
                slot = next(slots)
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
        """This rank's groups of one shard, whose groups in the split are numbered globally from ``first``.

        Per record batch, where groups start and which of them are this rank's is worked out on the group
        ids in Arrow and numpy; only the rows taken become Python objects, a column at a time.
        """
        path = self.shard_dir / shard.file
        index = first - 1  # the number of the last group of the split seen
        last_id: str | None = None  # the group the previous record batch ended in ...
        last_taken = False  # ... and whether it is this rank's
        pending_id: str | None = None  # a group this rank takes, held until it is complete
        pending: list[dict[str, Any]] = []
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                if self._filter is not None:
                    keep = pc.or_(batch.column("is_anchor"), pc.is_in(batch.column("lang"), self._filter))
                    batch = batch.filter(keep)
                if batch.num_rows == 0:
                    continue
                starts = _group_starts(batch, path)
                ids = batch.column("group_id").take(pa.array(starts)).to_pylist()
                fresh = np.ones(len(ids), dtype=bool)
                fresh[0] = ids[0] != last_id  # or the group goes on from the previous batch
                selected = fresh
                if not self._whole_shards:
                    selected = fresh & np.fromiter(
                        (in_split(g, self.split, self.holdout) for g in ids), dtype=bool, count=len(ids)
                    )
                numbers = index + np.cumsum(selected)
                taken = selected & (numbers < limit) & (numbers % self.world_size == self.rank)
                taken[0] |= not fresh[0] and last_taken
                index = int(numbers[-1])
                last_id, last_taken = ids[-1], bool(taken[-1])
                if not taken.any():
                    continue
                lengths = np.diff(starts, append=batch.num_rows)
                if not taken.all():
                    batch = batch.filter(pa.array(np.repeat(taken, lengths)))
                rows = _rows(batch)
                ends = np.cumsum(lengths[taken]).tolist()
                # A group may continue in the next record batch, so it is yielded only once a row of
                # another group (or the end of the shard) shows it is complete.
                for group_id, begin, end in zip(
                    itertools.compress(ids, taken), [0, *ends[:-1]], ends, strict=True
                ):
                    if group_id == pending_id:
                        pending += rows[begin:end]
                        continue
                    if pending:
                        yield Group(pending[0]["group_id"], pending)
                    pending_id, pending = group_id, rows[begin:end]
        if pending:
            yield Group(pending[0]["group_id"], pending)


def _group_starts(batch: pa.RecordBatch, path: Path) -> np.ndarray:
    """Positions where a new group starts in ``batch``, whose rows come in (group_id, lang) order as
    ``curate build`` writes them (so a group's rows are sorted by language); a shard in another order is
    refused."""
    group_ids, langs = batch.column("group_id"), batch.column("lang")
    n = batch.num_rows
    same = pc.equal(group_ids.slice(1), group_ids.slice(0, n - 1))
    if pc.any(pc.and_(same, pc.less(langs.slice(1), langs.slice(0, n - 1)))).as_py():
        msg = f"shard {path} is not in (group_id, lang) order, as curate build writes shards: rebuild the corpus"
        raise DataError(msg)
    changed = pc.invert(same).to_numpy(zero_copy_only=False)
    return np.concatenate([np.zeros(1, dtype=np.int64), np.flatnonzero(changed) + 1])


def _rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows of ``batch`` as dicts: the columns turned into Python lists by Arrow, then zipped into rows
    by ``map`` in C (``RecordBatch.to_pylist`` builds each row with a dict comprehension instead)."""
    columns = batch.to_pydict()
    return list(map(dict, map(zip, itertools.repeat(list(columns)), zip(*columns.values(), strict=True))))


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
