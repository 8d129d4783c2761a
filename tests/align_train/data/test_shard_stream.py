from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from align_train.data.shard_stream import ShardStream
from schemas import ConfigError, DataError, UserError, sha256_file
from tests.align_train.corpus import HELD_OUT, read_groups


def ids(stream: ShardStream) -> list[str]:
    return [group.group_id for group in stream]


def copy_corpus(shard_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "corpus"
    shutil.copytree(shard_dir, out)
    return out


def rewrite_shard(corpus: Path, name: str, data: bytes) -> None:
    """Replace a shard's bytes and record their sha256 in the manifest, as a rebuild would."""
    (corpus / name).write_bytes(data)
    manifest = json.loads((corpus / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["file"] == name:
            shard["sha256"] = sha256_file(corpus / name)
    (corpus / "manifest.json").write_text(json.dumps(manifest))


def test_one_rank_yields_every_group_whole_across_record_batches(shard_dir: Path) -> None:
    reference = read_groups(shard_dir)
    stream = ShardStream(shard_dir)
    groups = list(stream)
    assert stream.groups_per_rank() == len(groups) == len(reference) == 20
    for group in groups:
        assert group.rows == reference[group.group_id]
        assert group.anchor["lang"] == "en" and group.anchor["is_anchor"]
        assert group.langs == sorted(group.langs)


def test_ranks_get_disjoint_equal_shares(shard_dir: Path) -> None:
    shares = [set(ids(ShardStream(shard_dir, rank=r, world_size=3, seed=5))) for r in range(3)]
    assert [len(s) for s in shares] == [6, 6, 6]
    assert len(set.union(*shares)) == 18  # 20 groups, the remainder of 2 dropped
    assert ids(ShardStream(shard_dir, rank=1, world_size=3, seed=5)) == ids(
        ShardStream(shard_dir, rank=1, world_size=3, seed=5)
    )


def test_order_is_a_function_of_seed_and_epoch(shard_dir: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        stream = ShardStream(shard_dir, seed=seed)
        stream.set_epoch(epoch)
        return ids(stream)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == sorted(order(1, 0))


def test_buffer_of_one_keeps_shard_file_order(shard_dir: Path) -> None:
    shards = [[f"g{i:03d}" for i in range(s, min(s + 7, 20))] for s in (0, 7, 14)]
    file_order = ids(ShardStream(shard_dir, shuffle_buffer=1, seed=3))
    shard_order = sorted(shards, key=lambda shard: file_order.index(shard[0]))
    assert file_order == [group_id for shard in shard_order for group_id in shard]
    assert ids(ShardStream(shard_dir, seed=3)) != file_order


def test_state_dict_resumes_exactly(shard_dir: Path) -> None:
    stream = ShardStream(shard_dir, rank=1, world_size=2, seed=7, shuffle_buffer=4)
    stream.set_epoch(3)
    it = iter(stream)
    head = [next(it).group_id for _ in range(4)]
    state = stream.state_dict()
    tail = [group.group_id for group in it]
    assert state == {"epoch": 3, "consumed": 4}

    resumed = ShardStream(shard_dir, rank=1, world_size=2, seed=7, shuffle_buffer=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # the same epoch keeps the cursor
    assert ids(resumed) == tail
    assert resumed.state_dict() == {"epoch": 3, "consumed": 10}
    resumed.set_epoch(4)
    assert len(ids(resumed)) == 10
    resumed.set_epoch(3)
    assert ids(resumed) == head + tail


def test_langs_filter_keeps_the_anchor(shard_dir: Path) -> None:
    stream = ShardStream(shard_dir, langs=["swa"])
    assert stream.langs == ["en", "sw"]
    assert stream.lang_rows == {"en": 20, "sw": 10}
    groups = list(stream)
    assert len(groups) == 20
    for group in groups:
        expected = ["en", "sw"] if int(group.group_id[1:]) % 2 == 0 else ["en"]
        assert group.langs == expected


def test_holdout_splits_groups_disjointly_whatever_the_seed_ranks_and_langs(shard_dir: Path) -> None:
    reference = read_groups(shard_dir)
    held = ShardStream(shard_dir, split="eval", holdout=0.3)
    trained = ShardStream(shard_dir, split="train", holdout=0.3, seed=4, langs=["de"])
    assert set(ids(held)) == HELD_OUT and held.num_groups == 7
    assert set(ids(trained)) == set(reference) - HELD_OUT and trained.num_groups == 13
    for group in held:
        assert group.rows == reference[group.group_id]  # whole groups, across record batches
    # Row counts of the split itself, not of the whole shards: g004, g006 and g014 have sw.
    assert ShardStream(shard_dir, split="eval", holdout=0.3, langs=["sw"]).lang_rows == {"en": 7, "sw": 3}
    assert trained.lang_rows == {"de": 13, "en": 13}
    shares = [
        set(ids(ShardStream(shard_dir, rank=r, world_size=2, split="train", holdout=0.3))) for r in range(2)
    ]
    assert [len(s) for s in shares] == [6, 6] and not shares[0] & shares[1]
    assert not (shares[0] | shares[1]) & HELD_OUT
    # A smaller fraction holds out a subset; training without a holdout sees everything.
    assert set(ids(ShardStream(shard_dir, split="eval", holdout=0.15))) == {
        "g003",
        "g006",
        "g014",
        "g015",
        "g017",
    }
    assert set(ids(ShardStream(shard_dir, split="train"))) == set(reference)


def test_a_split_that_selects_nothing_is_refused(shard_dir: Path) -> None:
    with pytest.raises(ValueError, match="holdout=0 holds none out"):
        ShardStream(shard_dir, split="eval")
    with pytest.raises(ValueError, match="selects none of the 20 groups"):
        ShardStream(shard_dir, split="eval", holdout=0.01)
    with pytest.raises(ValueError, match=r"holdout=1\.0 is invalid"):
        ShardStream(shard_dir, split="train", holdout=1.0)


def test_arguments_are_checked(shard_dir: Path) -> None:
    with pytest.raises(ValueError, match="rank=2 is invalid for world_size=2"):
        ShardStream(shard_dir, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size=21 is larger than the 20 groups"):
        ShardStream(shard_dir, world_size=21)
    with pytest.raises(ValueError, match="shuffle_buffer=0"):
        ShardStream(shard_dir, shuffle_buffer=0)
    with pytest.raises(ValueError, match=r"names \['fr'\], not in the corpus"):
        ShardStream(shard_dir, langs=["fr"])
    with pytest.raises(FileNotFoundError, match="no manifest"):
        ShardStream(shard_dir / "shards")


def test_unknown_schema_major_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["schema_version"] = "2.0"
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"unsupported schema_version '2\.0'"):
        ShardStream(corpus)


def test_shard_disagreeing_with_manifest_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["groups"] += 1
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"but manifest\.json records 8 groups"):
        list(ShardStream(corpus))


def test_shard_with_wrong_schema_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    path = corpus / "shards" / "part-000001.arrow"
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all().drop_columns(["content_hash"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    rewrite_shard(corpus, "shards/part-000001.arrow", sink.getvalue().to_pybytes())
    with pytest.raises(
        ValueError, match=r"part-000001\.arrow does not follow the parallel schema.*content_hash"
    ):
        list(ShardStream(corpus))
    with pytest.raises(DataError):
        list(ShardStream(corpus))


def test_user_mistakes_are_user_errors_and_argument_checks_are_not(shard_dir: Path, tmp_path: Path) -> None:
    # What a user can fix (a setting, the corpus) is printed by the CLI as one line; a wrong argument in
    # code is a bug and keeps its traceback.
    for settings in [{"langs": ["fr"]}, {"world_size": 21}, {"split": "eval", "holdout": 0.01}]:
        with pytest.raises(ConfigError):
            ShardStream(shard_dir, **settings)
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["groups"] += 1
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError):
        list(ShardStream(corpus))
    for settings in [{"rank": 2, "world_size": 2}, {"shuffle_buffer": 0}]:
        with pytest.raises(ValueError) as raised:
            ShardStream(shard_dir, **settings)
        assert not isinstance(raised.value, UserError)


def test_a_shard_changed_after_the_build_is_refused_before_any_row_is_read(
    shard_dir: Path, tmp_path: Path
) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    path = corpus / "shards" / "part-000002.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a zstd frame
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"part-000002\.arrow does not match .*manifest\.json .*rebuild the corpus"
    ):
        ShardStream(corpus)


def test_a_file_that_is_not_arrow_is_named(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    rewrite_shard(corpus, "shards/part-000000.arrow", b"group_id,lang\ng1,en\n")
    with pytest.raises(DataError, match=r"part-000000\.arrow is not a readable Arrow IPC file"):
        ShardStream(corpus)


def test_edited_counts_are_refused_before_training(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][1]["langs"]["de"] += 2  # and every count that adds it up, so only the file disagrees
    manifest["shards"][1]["rows"] += 2
    manifest["counts"]["de"]["read"] += 2
    manifest["counts"]["de"]["kept"] += 2
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"part-000001\.arrow holds .* but manifest\.json records"):
        ShardStream(corpus)  # at construction: before a single group is yielded


def test_a_manifest_naming_a_file_outside_the_corpus_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../elsewhere/part-000000.arrow"
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="must be a relative path inside the build's folder"):
        ShardStream(corpus)


def _nulled(table: pa.Table, column: str, rows: list[int]) -> pa.Table:
    values = table[column].to_pylist()
    for row in rows:
        values[row] = None
    field = table.schema.field(column).with_nullable(True)
    return table.set_column(table.schema.get_field_index(column), field, pa.array(values, field.type))


@pytest.mark.parametrize("column", ["messages", "group_id", "content_hash"])
def test_a_signed_shard_with_nulls_where_a_value_is_required_is_refused_before_training(
    shard_dir: Path, tmp_path: Path, column: str
) -> None:
    corpus = copy_corpus(shard_dir, tmp_path)
    path = corpus / "shards" / "part-000001.arrow"
    table = _nulled(pa.ipc.open_file(str(path)).read_all(), column, [3])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    rewrite_shard(corpus, "shards/part-000001.arrow", sink.getvalue().to_pybytes())
    with pytest.raises(
        DataError,
        match=rf"part-000001\.arrow does not follow the parallel schema: column '{column}', row 3: null",
    ):
        ShardStream(corpus)


def test_a_manifest_listing_a_shard_twice_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    """Listed twice, a shard's groups would be trained on twice per epoch."""
    corpus = copy_corpus(shard_dir, tmp_path)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"].append(manifest["shards"][0])
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"part-000000\.arrow is listed twice"):
        ShardStream(corpus)


def test_a_shard_out_of_language_order_is_refused(shard_dir: Path, tmp_path: Path) -> None:
    """A group's rows come sorted by language, as curate build writes them; a shard that is not (written
    by other code, its manifest updated to match) is named rather than read into groups out of order."""
    corpus = copy_corpus(shard_dir, tmp_path)
    path = corpus / "shards" / "part-000001.arrow"
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    table = table.take(list(range(table.num_rows))[::-1])  # same rows and counts, languages descending
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    rewrite_shard(corpus, "shards/part-000001.arrow", sink.getvalue().to_pybytes())
    stream = ShardStream(corpus)
    with pytest.raises(DataError, match=r"part-000001\.arrow is not in \(group_id, lang\) order"):
        list(stream)
