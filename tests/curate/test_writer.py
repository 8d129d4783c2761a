from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from datasets import load_dataset

from curate.executors.base import count_rows, run_chunk
from curate.readers import Chunk
from curate.stages.base import FilterStage, Verdict, empty_rejects, to_rejects
from curate.writer import ShardWriter
from schemas import LangCounts, OutOfSpaceError, sha256_file, validate
from tests.curate.rows import row, table
from tests.disk import PAGE, small_disk


class DropGerman(FilterStage):
    """Rejects every German translation: enough to see the executor's bookkeeping."""

    name = "test"

    def judge(self, batch: pa.Table) -> Verdict:
        langs = batch.column("lang").to_pylist()
        return Verdict(reasons=["german" if lang == "de" else None for lang in langs])


class LosesRows(FilterStage):
    name = "lossy"

    def judge(self, batch: pa.Table) -> Verdict:
        return Verdict(reasons=[None] * batch.num_rows)

    def process(self, batch):  # type: ignore[no-untyped-def]
        result = super().process(batch)
        result.kept = result.kept.slice(1)
        return result


def chunk(index: int = 0) -> Chunk:
    rows = table(
        row("g2", "en", "Hi."),
        row("g1", "en", "Hello."),
        row("g1", "de", "Hallo."),
        row("g1", "fr", "Salut."),
    )
    bad = to_rejects(table(row("g3", "en", "x")), stage="read", reasons=["bad_json"], raw=["{oops"])
    return Chunk(index=index, rows=rows, rejects=bad, read=Counter({"en": 3, "de": 1, "fr": 1}))


def test_run_chunk_accounts_for_every_row(tmp_path) -> None:
    out = run_chunk([DropGerman()], chunk()).commit(ShardWriter(tmp_path))
    assert out.shard.rows == 3
    assert out.counts["de"] == LangCounts(read=1, kept=0, rejected={"test.german": 1})
    assert out.counts["en"] == LangCounts(read=3, kept=2, rejected={"read.bad_json": 1})
    assert all(c.balanced for c in out.counts.values())


def test_run_chunk_refuses_a_stage_that_loses_rows() -> None:
    with pytest.raises(RuntimeError, match="lost rows"):
        run_chunk([LosesRows()], chunk())


def test_count_rows_refuses_unbalanced_counts() -> None:
    with pytest.raises(RuntimeError, match="do not balance"):
        count_rows(Counter({"en": 5}), table(row("g1", "en", "x")), empty_rejects())


def test_commit_writes_sorted_shards_that_arrow_tools_read(tmp_path) -> None:
    record = run_chunk([DropGerman()], chunk()).commit(ShardWriter(tmp_path))
    shard = tmp_path / record.shard.file
    assert record.shard.rows == 3 and record.shard.groups == 2 and record.shard.langs == {"en": 2, "fr": 1}
    assert record.shard.sha256 == sha256_file(shard)
    frame = pl.read_ipc(shard)
    assert list(zip(frame["group_id"], frame["lang"], strict=True)) == [
        ("g1", "en"),
        ("g1", "fr"),
        ("g2", "en"),
    ]
    ds = load_dataset("arrow", data_files=str(shard), split="train")
    assert ds.num_rows == 3 and ds[0]["messages"][0]["content"] == "Hello."
    rejects = pl.read_ipc(tmp_path / record.rejects.file)
    assert sorted(rejects["reason"].to_list()) == ["bad_json", "german"]
    validate(pa.ipc.open_file(str(shard)).read_all())
    assert not list(tmp_path.rglob("*.tmp"))


def test_committed_chunk_is_skipped_until_its_files_change(tmp_path) -> None:
    writer = ShardWriter(tmp_path)
    state = run_chunk([DropGerman()], chunk())
    assert writer.committed(0) is None
    record = state.commit(writer)
    assert writer.committed(0) == record
    (tmp_path / record.shard.file).write_bytes(b"truncated")
    assert writer.committed(0) is None


def test_same_chunk_gives_byte_identical_shards(tmp_path) -> None:
    paths = []
    for name in ("a", "b"):
        record = run_chunk([DropGerman()], chunk()).commit(ShardWriter(tmp_path / name))
        paths.append(tmp_path / name / record.shard.file)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def _incompressible_chunk() -> Chunk:
    """Two groups whose text zstd cannot shrink much: a shard of about 40 KB."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=7)) for _ in range(5000)]
    rows = table(row("g1", "en", " ".join(words[:2500])), row("g2", "en", " ".join(words[2500:])))
    return Chunk(index=0, rows=rows, rejects=empty_rejects(), read=Counter({"en": 2}))


def test_a_disk_filling_while_a_shard_is_written_is_one_line_and_the_retry_writes_the_same_bytes(
    tmp_path,
) -> None:
    reference = run_chunk([], _incompressible_chunk()).commit(ShardWriter(tmp_path / "reference"))
    expected = (tmp_path / "reference" / reference.shard.file).read_bytes()
    assert len(expected) > 6 * PAGE
    with small_disk(tmp_path / "disk", 4 * PAGE) as resize:
        writer = ShardWriter(tmp_path / "disk" / "out")
        state = run_chunk([], _incompressible_chunk())
        with pytest.raises(OutOfSpaceError) as caught:
            state.commit(writer)
        shard = tmp_path / "disk" / "out" / "shards" / "part-000000.arrow"
        assert str(caught.value).startswith(
            f"the disk is full: could not write {shard} (No space left on device)"
        )
        assert "\n" not in str(caught.value)
        assert writer.committed(0) is None
        assert not [
            p for p in (tmp_path / "disk").rglob("*") if p.is_file() and p.name != "lock"
        ]  # no debris
        resize(32 * PAGE)  # space freed
        record = state.commit(writer)
        assert record == reference and shard.read_bytes() == expected
