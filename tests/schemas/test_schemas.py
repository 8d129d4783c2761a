import json

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

import schemas
from schemas import (
    PARALLEL_SCHEMA,
    LangCounts,
    Manifest,
    SchemaValidationError,
    content_hash,
    normalize_lang,
    read_numbers,
    validate,
)
from schemas.config_io import load_config


def parallel_row(group_id: str, lang: str, *, anchor: bool, content: str = "Hello there.", **extra) -> dict:
    messages = [{"role": "user", "content": content, "tool_calls": None, "tool_call_id": None, "name": None}]
    row = {
        "group_id": group_id,
        "lang": lang,
        "is_anchor": anchor,
        "kind": "sft",
        "task": "chat",
        "messages": messages,
        "chosen": None,
        "rejected": None,
        "meta": "{}",
        "translator": "source" if anchor else "apertium",
        "lid_lang": None,
        "lid_prob": None,
        "equivalence": None,
        "length_ratio": None,
        "content_hash": content_hash(messages),
    }
    row.update(extra)
    return row


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PARALLEL_SCHEMA)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("de", "de"),
        ("deu", "de"),
        ("de-DE", "de"),
        ("DE", "de"),
        ("zh-Hant", "zh_Hant"),
        ("zho_Hans", "zh"),
        ("swh", "sw"),
        ("__label__deu_Latn", "de"),
        ("__label__en", "en"),
        ("sr_Latn", "sr_Latn"),
        ("fil", "fil"),
    ],
)
def test_normalize_lang(code: str, expected: str) -> None:
    assert normalize_lang(code) == expected


@pytest.mark.parametrize("code", ["xx", "", "english", "12"])
def test_normalize_lang_rejects_unknown(code: str) -> None:
    with pytest.raises(schemas.UnknownLanguageError, match="unknown language code"):
        normalize_lang(code)


def test_valid_parallel_table_passes() -> None:
    validate(table([parallel_row("g1", "en", anchor=True), parallel_row("g1", "de", anchor=False)]))


def test_validate_names_column_and_row_for_bad_role() -> None:
    rows = [parallel_row("g1", "en", anchor=True), parallel_row("g1", "de", anchor=False)]
    rows[1]["messages"][0]["role"] = "narrator"
    with pytest.raises(SchemaValidationError) as info:
        validate(table(rows))
    assert (info.value.column, info.value.row) == ("messages", 1)
    assert "narrator" in str(info.value)


def test_validate_flags_unnormalised_lang_duplicates_and_missing_anchor() -> None:
    with pytest.raises(SchemaValidationError, match="not normalised") as info:
        validate(table([parallel_row("g1", "en", anchor=True), parallel_row("g1", "deu", anchor=False)]))
    assert info.value.row == 1
    with pytest.raises(SchemaValidationError, match="duplicate"):
        validate(table([parallel_row("g1", "en", anchor=True), parallel_row("g1", "en", anchor=False)]))
    with pytest.raises(SchemaValidationError, match="no anchor") as info:
        validate(table([parallel_row("g1", "en", anchor=True), parallel_row("g2", "de", anchor=False)]))
    assert (info.value.column, info.value.row) == ("is_anchor", 1)


def test_validate_flags_missing_column_wrong_type_and_nulls() -> None:
    good = table([parallel_row("g1", "en", anchor=True)])
    with pytest.raises(SchemaValidationError, match="missing") as info:
        validate(good.drop_columns(["content_hash"]), "parallel")
    assert info.value.column == "content_hash" and info.value.row is None
    bad_type = good.set_column(good.schema.get_field_index("lid_prob"), "lid_prob", pa.array(["x"]))
    with pytest.raises(SchemaValidationError, match="type"):
        validate(bad_type, "parallel")
    nullable = pa.schema([f.with_nullable(True) for f in PARALLEL_SCHEMA])
    nulls = pa.Table.from_pylist([parallel_row("g1", "en", anchor=True, task=None)], schema=nullable)
    with pytest.raises(SchemaValidationError, match="null in a required field") as info:
        validate(nulls, "parallel")
    assert (info.value.column, info.value.row) == ("task", 0)


def test_validate_flags_bad_tool_calls() -> None:
    rows = [parallel_row("g1", "en", anchor=True)]
    rows[0]["messages"][0]["tool_calls"] = "{not json"
    with pytest.raises(SchemaValidationError, match="tool_calls is not JSON"):
        validate(table(rows))


def test_content_hash_is_key_order_independent() -> None:
    a = [{"role": "user", "content": "x", "tool_calls": None}]
    b = [{"tool_calls": None, "content": "x", "role": "user"}]
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(a, chosen=a)


def test_lang_counts_add_and_balance() -> None:
    a = LangCounts(read=5, kept=3, rejected={"lid.wrong_lang": 2})
    b = LangCounts(read=2, kept=1, rejected={"lid.wrong_lang": 1})
    total = a + b
    assert total == LangCounts(read=7, kept=4, rejected={"lid.wrong_lang": 3})
    assert total.balanced
    assert not LangCounts(read=3, kept=1).balanced


def test_manifest_refuses_unknown_major_version() -> None:
    base = {
        "anchor_lang": "en",
        "langs": ["de"],
        "shards": [],
        "rejects": [],
        "counts": {},
        "inputs": [],
        "config": {},
        "config_hash": "x",
    }
    Manifest.model_validate({**base, "schema_version": "1.7"})
    with pytest.raises(ValueError, match="unsupported schema_version"):
        Manifest.model_validate_json(json.dumps({**base, "schema_version": "2.0"}))


@pytest.mark.parametrize(
    "file", ["../elsewhere/part.arrow", "/etc/passwd", "shards/../../x.arrow", "C:\\x.arrow", ""]
)
def test_manifest_refuses_files_outside_the_build_folder(tmp_path, file: str) -> None:
    entry = {"file": file, "rows": 1, "groups": 1, "sha256": "0" * 64}
    manifest = {
        "anchor_lang": "en",
        "langs": ["de"],
        "shards": [entry],
        "rejects": [],
        "counts": {},
        "inputs": [],
        "config": {},
        "config_hash": "x",
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(schemas.DataError, match=r"shards\.0\.file: .*must be a relative path inside"):
        Manifest.load(tmp_path)


def test_shard_info_verify_names_a_missing_or_changed_file(tmp_path) -> None:
    (tmp_path / "shards").mkdir()
    shard = tmp_path / "shards" / "part-000000.arrow"
    shard.write_bytes(b"the bytes the build wrote")
    info = schemas.ShardInfo(
        file="shards/part-000000.arrow", rows=1, groups=1, sha256=schemas.sha256_file(shard)
    )
    assert info.verify(tmp_path) == shard
    shard.write_bytes(b"the bytes the build wrote, then changed")
    with pytest.raises(schemas.DataError, match=r"part-000000\.arrow does not match .*manifest\.json"):
        info.verify(tmp_path)
    shard.unlink()
    with pytest.raises(schemas.DataError, match=r"is listed in .* but missing"):
        info.verify(tmp_path)


def test_message_as_chat_decodes_tool_calls() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    m = schemas.Message(role="assistant", content="", tool_calls=json.dumps(calls))
    assert m.as_chat() == {"role": "assistant", "content": "", "tool_calls": calls}


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("from 3-5 apples, −2 left and -0 change", ["3", "5", "-2", "0"]),
        ("1,234.5 = 1.234,5 = 1 234,5 = ١٬٢٣٤٫٥", ["1234.5"] * 4),
        ("0.125 but 1.250 and x² = ४२", ["0.125", "1250", "42"]),
    ],
)
def test_read_numbers_in_order_whatever_the_locale(text: str, numbers: list[str]) -> None:
    assert [format(n.normalize(), "f") for n in read_numbers(text)] == numbers


def _manifest(**changes) -> dict:
    """A manifest of two shards and one reject file whose counts add up, with ``changes`` applied."""
    shard = {"rows": 3, "groups": 2, "langs": {"en": 2, "de": 1}}
    manifest = {
        "anchor_lang": "en",
        "langs": ["de"],
        "shards": [
            {"file": "shards/part-000000.arrow", "sha256": "a" * 64, **shard},
            {"file": "shards/part-000001.arrow", "sha256": "b" * 64, **shard},
        ],
        "rejects": [
            {
                "file": "rejects/part-000000.arrow",
                "sha256": "c" * 64,
                "rows": 1,
                "groups": 1,
                "langs": {"de": 1},
            }
        ],
        "counts": {
            "en": {"read": 4, "kept": 4, "rejected": {}},
            "de": {"read": 3, "kept": 2, "rejected": {"lid.wrong_lang": 1}},
        },
        "inputs": [],
        "config": {},
        "config_hash": "x",
    }
    return manifest | changes


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda m: m["shards"].append(dict(m["shards"][0])),
            r"part-000000\.arrow is listed twice \(same file\)",
        ),
        (
            lambda m: m["shards"].append({**m["shards"][0], "file": "shards/copy.arrow"}),
            r"copy\.arrow is listed twice \(same sha256\)",
        ),
        (
            lambda m: m["counts"]["de"].update(kept=3),
            r"counts of 'de' do not add up: read 3 != kept 3 \+ rejected 1",
        ),
        (
            lambda m: m["counts"]["en"].update(read=5, kept=5),
            r"counts of 'en' say 5 rows kept, but the shards listed hold 4",
        ),
        (
            lambda m: m["counts"]["de"].update(read=4, rejected={"lid.wrong_lang": 2}),
            r"counts of 'de' say 2 rows rejected, but the reject files listed hold 1",
        ),
        (
            lambda m: m["shards"][1].update(rows=4),
            r"part-000001\.arrow holds 4 rows but its rows per language add up to 3",
        ),
    ],
)
def test_a_manifest_whose_files_or_counts_do_not_add_up_is_refused(tmp_path, change, problem: str) -> None:
    manifest = _manifest()
    Manifest.model_validate(manifest)
    change(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(schemas.DataError, match=r"manifest\.json is not a valid manifest: (\w+/)?" + problem):
        Manifest.load(tmp_path)


class _Settings(BaseModel):
    rate: float = 0.5
    bounded: float = Field(0.5, ge=0, le=1)
    by_lang: dict[str, float] = Field(default_factory=dict)
    cuts: list[float] = Field(default_factory=list)


class _Config(BaseModel):
    lr: float = 1e-3
    optional: float | None = None
    settings: _Settings = Field(default_factory=_Settings)


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        (["lr=.inf"], "lr: must be a finite number (got inf)"),
        (["lr=-.inf"], "lr: must be a finite number (got -inf)"),
        (["optional=.nan"], "optional: must be a finite number (got nan)"),
        (["optional=nan"], "optional: must be a finite number (got nan)"),
        (["lr=1e999"], "lr: must be a finite number (got inf)"),
        (["settings.rate=.NaN"], "settings.rate: must be a finite number (got nan)"),
        (["settings.by_lang={de: .nan}"], "settings.by_lang.de: must be a finite number (got nan)"),
        (["settings.cuts=[0.1, .inf]"], "settings.cuts[1]: must be a finite number (got inf)"),
    ],
)
def test_no_config_field_takes_a_number_that_is_not_finite(overrides: list[str], where: str) -> None:
    assert load_config(_Config, None, flags={}, overrides=["lr=0.1", "settings.by_lang={de: 1}"]).lr == 0.1
    with pytest.raises(schemas.ConfigError) as caught:
        load_config(_Config, None, flags={}, overrides=overrides)
    assert str(caught.value) == where
