"""The input readers on tiny hand-written JSON Lines, Parquet and ``datasets`` inputs."""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, disable_progress_bars

from curate.config import InputConfig
from curate.readers import AUTO_ID_PREFIX, Chunk, InputError, fingerprint_inputs, read_chunks
from curate.readers.records import RecordReader
from curate.readers.sources import BadRecord, Item
from schemas import canonical_json, content_hash, validate

disable_progress_bars()

WEATHER = {
    "id": "tool-0001",
    "task": "tool_calling",
    "source": "handwritten",
    "messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "It is 21 °C in Paris."},
    ],
}

# One record of each layout; the parallel one carries the same content in two languages.
LAYOUTS: dict[str, list[dict[str, Any]]] = {
    "messages": [
        {
            "id": "m1",
            "task": "math",
            "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        }
    ],
    "prompt_response": [
        {"id": "p1", "prompt": "Say hi.", "response": "Hi!", "system": "Be brief.", "source": "x"}
    ],
    "preference": [{"id": "r1", "prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}],
    "parallel": [
        {"id": "g1", "lang": "en", "prompt": "Thank you.", "response": "You are welcome."},
        {"id": "g1", "lang": "deu", "prompt": "Danke.", "response": "Gern geschehen."},
    ],
}


def read(
    paths: list[Path], *, chunk_size: int = 100, langs: tuple[str, ...] = ("de",), **config: Any
) -> list[Chunk]:
    chunks = list(
        read_chunks(
            paths, config=InputConfig(**config), anchor_lang="en", langs=list(langs), chunk_size=chunk_size
        )
    )
    for chunk in chunks:
        validate(chunk.rows, "parallel")
        validate(chunk.rejects, "reject")
    return chunks


def rows_of(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [row for chunk in chunks for row in chunk.rows.to_pylist()]


def rejects_of(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [row for chunk in chunks for row in chunk.rejects.to_pylist()]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write(fmt: str, path: Path, records: list[dict[str, Any]]) -> Path:
    """``records`` as JSON Lines, a Parquet file or a ``save_to_disk`` directory."""
    if fmt == "jsonl":
        return write_jsonl(path.with_suffix(".jsonl"), records)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path.with_suffix(".parquet"))
        return path.with_suffix(".parquet")
    Dataset.from_list(records).save_to_disk(str(path))
    return path


def test_messages_row_follows_the_contract(tmp_path: Path) -> None:
    as_string = json.loads(json.dumps(WEATHER))
    as_string["id"] = "tool-0002"
    call = as_string["messages"][2]["tool_calls"][0]["function"]
    call["arguments"] = json.dumps(call["arguments"])
    (first, second) = rows_of(read([write_jsonl(tmp_path / "in.jsonl", [WEATHER, as_string])]))

    assert first["group_id"] == "tool-0001"
    assert (first["lang"], first["is_anchor"], first["kind"], first["translator"]) == (
        "en",
        True,
        "sft",
        "source",
    )
    assert first["task"] == "tool_calling"
    assert first["meta"] == '{"source":"handwritten"}'
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    expected_call = (
        '[{"function":{"arguments":{"city":"Paris"},"name":"get_weather"},"id":"call_1","type":"function"}]'
    )
    assert first["messages"][2]["tool_calls"] == expected_call
    assert second["messages"][2]["tool_calls"] == expected_call
    assert first["messages"][3] | {"content": None} == {
        "role": "tool",
        "content": None,
        "tool_calls": None,
        "tool_call_id": "call_1",
        "name": "get_weather",
    }
    assert first["content_hash"] == content_hash(first["messages"])
    assert first["chosen"] is None and first["equivalence"] is None and first["lid_prob"] is None


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "datasets"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_format_reads_every_layout_alike(tmp_path: Path, fmt: str, layout: str) -> None:
    records = LAYOUTS[layout]
    chunks = read([write(fmt, tmp_path / "in", records)])
    rows = rows_of(chunks)
    assert rows == rows_of(read([write_jsonl(tmp_path / "reference.jsonl", records)]))
    assert not rejects_of(chunks)

    row = rows[0]
    if layout == "messages":
        assert row["task"] == "math"
        assert [m["content"] for m in row["messages"]] == ["2+2?", "4"]
    elif layout == "prompt_response":
        assert [(m["role"], m["content"]) for m in row["messages"]] == [
            ("system", "Be brief."),
            ("user", "Say hi."),
            ("assistant", "Hi!"),
        ]
        assert row["meta"] == '{"source":"x"}' and row["task"] == "chat"
    elif layout == "preference":
        assert row["kind"] == "preference"
        assert [m["content"] for m in row["messages"]] == ["Name a colour."]
        assert [(m["role"], m["content"]) for m in row["chosen"]] == [("assistant", "Blue.")]
        assert [(m["role"], m["content"]) for m in row["rejected"]] == [("assistant", "No.")]
        assert row["content_hash"] == content_hash(row["messages"], row["chosen"], row["rejected"])
    else:
        assert [(r["group_id"], r["lang"], r["is_anchor"], r["translator"]) for r in rows] == [
            ("g1", "de", False, "pretranslated"),
            ("g1", "en", True, "source"),
        ]
        assert rows[0]["messages"][0]["content"] == "Danke."


def test_preference_completion_repeating_the_prompt_is_cut_to_the_answer(tmp_path: Path) -> None:
    record = {
        "id": "r2",
        "prompt": "Capital of France?",
        "chosen": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        "rejected": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Lyon."},
        ],
    }
    (row,) = rows_of(read([write("datasets", tmp_path / "pref", [record])]))
    assert [m["content"] for m in row["chosen"]] == ["Paris."]
    assert [m["content"] for m in row["rejected"]] == ["Lyon."]


def test_every_reject_reason_from_hand_written_lines(tmp_path: Path) -> None:
    def msgs(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
        return [{"role": role, "content": content} for role, content in pairs]

    def tool_turn(function: dict[str, Any]) -> list[dict[str, Any]]:
        call = {"id": "c", "type": "function", "function": function}
        return [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}]

    ok = msgs(("user", "Hi"), ("assistant", "Hello"))
    sft = tmp_path / "sft.jsonl"
    lines = [
        json.dumps({"id": "ok-1", "messages": ok}).encode(),
        '{"id": "utf8", "messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"),
        b'{"id": "json", "messages": [',
        b"[1, 2]",
        json.dumps({"id": "field", "prompt": "only a prompt"}).encode(),
        json.dumps({"id": "empty-user", "messages": msgs(("user", "  "), ("assistant", "x"))}).encode(),
        json.dumps({"id": "empty-final", "messages": msgs(("user", "Hi"), ("assistant", ""))}).encode(),
        json.dumps({"id": "role", "messages": msgs(("human", "Hi"), ("assistant", "x"))}).encode(),
        json.dumps(
            {"id": "args", "messages": tool_turn({"name": "f", "arguments": "{city: Paris"})}
        ).encode(),
        json.dumps({"id": "noname", "messages": tool_turn({"arguments": {}})}).encode(),
        json.dumps({"id": "type", "messages": msgs(("user", "Hi"), ("assistant", 42))}).encode(),
        json.dumps({"id": "ok-1", "messages": msgs(("user", "Other"), ("assistant", "text"))}).encode(),
    ]
    sft.write_bytes(b"\n".join(lines) + b"\n")
    parallel = write_jsonl(
        tmp_path / "parallel.jsonl",
        [
            {"id": "g1", "lang": "en", "messages": ok},
            {"id": "g1", "lang": "de", "messages": msgs(("user", "Hallo"), ("assistant", "Guten Tag"))},
            {"id": "g1", "lang": "de", "messages": msgs(("user", "Hallo!"), ("assistant", "Tag"))},
            {"id": "g1", "lang": "klingon", "messages": ok},
            {"id": "g1", "lang": "fr", "messages": msgs(("user", "Salut"), ("assistant", "Bonjour"))},
            {"id": "g2", "lang": "de", "messages": msgs(("user", "Nur Deutsch"), ("assistant", "Ja"))},
        ],
    )
    chunks = read([sft, parallel])
    reasons = Counter((r["group_id"], r["reason"]) for r in rejects_of(chunks))
    assert reasons == Counter(
        [
            (None, "invalid_utf8"),
            (None, "bad_json"),
            (None, "not_an_object"),
            ("field", "missing_field"),
            ("empty-user", "empty_content"),
            ("empty-final", "empty_content"),
            ("role", "unknown_role"),
            ("args", "bad_tool_calls"),
            ("noname", "bad_tool_calls"),
            ("ok-1", "duplicate_id"),
            ("g1", "duplicate_id"),
            ("g1", "unknown_lang"),
            ("g1", "lang_not_requested"),
            ("g2", "missing_anchor"),
            ("type", "bad_field"),
        ]
    )
    by_reason = {r["reason"]: r for r in rejects_of(chunks)}
    assert "caf\\xe9" in by_reason["invalid_utf8"]["raw"]
    assert by_reason["invalid_utf8"]["detail"].startswith(f"{sft}:2: ")
    assert by_reason["bad_json"]["raw"] == '{"id": "json", "messages": ['
    assert by_reason["not_an_object"]["raw"] == "[1, 2]"
    assert by_reason["unknown_lang"]["lang"] is None
    assert by_reason["lang_not_requested"]["lang"] == "fr"
    duplicate = next(r for r in rejects_of(chunks) if r["reason"] == "duplicate_id" and r["group_id"] == "g1")
    assert duplicate["messages"][0]["content"] == "Hallo!", "the second (id, lang) occurrence is the reject"
    assert {(r["group_id"], r["lang"]) for r in rows_of(chunks)} == {
        ("ok-1", "en"),
        ("g1", "en"),
        ("g1", "de"),
    }
    assert next(r for r in rows_of(chunks) if r["group_id"] == "ok-1")["messages"][0]["content"] == "Hi"


def test_byte_order_mark_crlf_and_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    lines = [json.dumps(r) for r in LAYOUTS["parallel"]]
    path.write_bytes(("\r\n".join([lines[0], "", lines[1]]) + "\r\n").encode("utf-8-sig"))
    chunks = read([path])
    assert [r["lang"] for r in rows_of(chunks)] == ["de", "en"] and not rejects_of(chunks)


def test_long_raw_text_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    good = json.dumps(LAYOUTS["messages"][0])
    path.write_text(good + '\n{"id": "x", "messages": [' + "1, " * 5000 + "\n", encoding="utf-8")
    (reject,) = rejects_of(read([path]))
    assert reject["reason"] == "bad_json"
    assert 4096 < len(reject["raw"]) < 4200 and reject["raw"].endswith("more characters]")


def test_missing_ids_are_content_hashes_and_repeated_content_is_a_duplicate(tmp_path: Path) -> None:
    a = {"messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "A."}]}
    b = {"messages": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "B."}]}
    chunks = read([write_jsonl(tmp_path / "noid.jsonl", [a, b, a])])
    ids = [r["group_id"] for r in rows_of(chunks)]
    assert len(set(ids)) == 2 and all(i.startswith(AUTO_ID_PREFIX) for i in ids)
    (dup,) = rejects_of(chunks)
    assert dup["reason"] == "duplicate_id" and dup["group_id"] in ids


def parallel_files(tmp_path: Path, groups: int = 7) -> tuple[list[Path], Counter[str]]:
    """One file per language; German rows in reverse order, some groups without German or French."""

    def record(i: int, lang: str) -> dict[str, Any]:
        return {"id": f"q{i:02d}", "lang": lang, "prompt": f"question {i} {lang}", "response": f"answer {i}"}

    en = [record(i, "en") for i in range(groups)]
    de = [record(i, "de") for i in reversed(range(groups)) if i % 3]
    fr = [record(i, "fr") for i in range(groups) if i % 2]
    fr.append({"id": "q99", "lang": "fr", "prompt": "orphan", "response": "sans ancre"})
    paths = [
        write_jsonl(tmp_path / f"{name}.jsonl", recs) for name, recs in (("en", en), ("de", de), ("fr", fr))
    ]
    return paths, Counter({"en": len(en), "de": len(de), "fr": len(fr)})


def test_parallel_files_group_by_id_in_order_of_first_appearance(tmp_path: Path) -> None:
    paths, _ = parallel_files(tmp_path)
    chunks = read(paths, langs=("de", "fr"), chunk_size=100)
    rows = rows_of(chunks)
    assert [r["group_id"] for r in rows if r["is_anchor"]] == [f"q{i:02d}" for i in range(7)]
    langs = {(r["group_id"], r["lang"]) for r in rows}
    assert ("q01", "de") in langs and ("q03", "de") not in langs and ("q01", "fr") in langs
    assert all(r["translator"] == ("source" if r["lang"] == "en" else "pretranslated") for r in rows)
    assert [(r["group_id"], r["lang"], r["reason"]) for r in rejects_of(chunks)] == [
        ("q99", "fr", "missing_anchor")
    ]


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunks_hold_whole_groups_and_are_stable(tmp_path: Path, chunk_size: int) -> None:
    paths, per_lang = parallel_files(tmp_path)
    messages = write_jsonl(
        tmp_path / "more.jsonl",
        [
            {
                "id": f"s{i}",
                "messages": [{"role": "user", "content": f"x{i}"}, {"role": "assistant", "content": "y"}],
            }
            for i in range(4)
        ]
        + ["not an object"] * 4,
    )
    first = read([*paths, messages], langs=("de", "fr"), chunk_size=chunk_size)
    second = read([*paths, messages], langs=("de", "fr"), chunk_size=chunk_size)

    assert [c.index for c in first] == list(range(len(first)))
    seen: set[str] = set()
    for a, b in zip(first, second, strict=True):
        assert a.rows.equals(b.rows) and a.rejects.equals(b.rejects) and a.read == b.read
        groups = set(a.rows.column("group_id").to_pylist())
        assert len(groups) <= chunk_size and not groups & seen, "a group spans two chunks"
        seen |= groups
        assert a.rejects.num_rows <= chunk_size
        keys = list(
            zip(a.rows.column("group_id").to_pylist(), a.rows.column("lang").to_pylist(), strict=True)
        )
        assert keys == sorted(keys)
    assert len(seen) == 7 + 4

    total: Counter[str] = Counter()
    for chunk in first:
        counted = Counter(chunk.rows.column("lang").to_pylist())
        counted.update(lang or "und" for lang in chunk.rejects.column("lang").to_pylist())
        assert chunk.read == counted
        total.update(chunk.read)
    assert total == per_lang + Counter({"en": 8})


def test_parallel_and_plain_inputs_share_ids(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [LAYOUTS["messages"][0] | {"id": "g1"}])
    parallel = write_jsonl(tmp_path / "parallel.jsonl", LAYOUTS["parallel"])
    chunks = read([plain, parallel])
    assert [(r["group_id"], r["lang"]) for r in rows_of(chunks)] == [("g1", "en")]
    assert [(r["lang"], r["reason"]) for r in rejects_of(chunks)] == [
        ("en", "duplicate_id"),
        ("de", "duplicate_id"),
    ]


def test_explicit_format_and_field_names(tmp_path: Path) -> None:
    record = {
        "uid": 7,
        "conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
    }
    path = write_jsonl(tmp_path / "custom.jsonl", [record])
    (row,) = rows_of(read([path], format="messages", id_field="uid", messages_field="conversation"))
    assert row["group_id"] == "7" and row["meta"] == "{}"


@pytest.mark.parametrize(
    ("make", "config", "message"),
    [
        (lambda d: d / "absent.jsonl", {}, "does not exist"),
        (lambda d: write_jsonl(d / "x.txt", [LAYOUTS["messages"][0]]), {}, "suffix '.txt'"),
        (lambda d: d, {}, "without dataset_info.json or state.json"),
        (lambda d: write_jsonl(d / "x.jsonl", [{"id": 1, "text": "hi"}]), {}, "format not recognised"),
        (lambda d: write_jsonl(d / "x.jsonl", ["a", "b"]), {}, "format not recognised"),
        (
            lambda d: write_jsonl(d / "x.jsonl", LAYOUTS["prompt_response"]),
            {"format": "messages"},
            "'messages' is missing",
        ),
        (
            lambda d: write_jsonl(d / "x.jsonl", LAYOUTS["messages"]),
            {"format": "parallel"},
            "'lang' is missing",
        ),
        (lambda d: write_jsonl(d / "x.jsonl", LAYOUTS["messages"]), {"id_field": "uid"}, "'uid' is missing"),
        (lambda d: write_jsonl(d / "x.jsonl", [{"chosen": "a", "rejected": "b"}]), {}, "'prompt' is missing"),
        (
            lambda d: write("parquet", d / "x", LAYOUTS["messages"]),
            {"messages_field": "turns"},
            "format not recognised",
        ),
        (
            lambda d: (d / "x.parquet").write_bytes(b"not parquet") and d / "x.parquet",
            {},
            "not a readable Parquet",
        ),
    ],
)
def test_user_mistakes_raise_input_error_before_reading(
    tmp_path: Path, make: Any, config: dict[str, Any], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        read_chunks([path], config=InputConfig(**config), anchor_lang="en", langs=["de"], chunk_size=10)


def test_fingerprints(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "a.jsonl", LAYOUTS["messages"])
    data = write("datasets", tmp_path / "ds", LAYOUTS["preference"])
    info_file, info_dir = fingerprint_inputs([jsonl, data])
    assert info_file.path == str(jsonl)
    assert info_file.sha256 == hashlib.sha256(jsonl.read_bytes()).hexdigest()
    assert fingerprint_inputs([data])[0] == info_dir
    (data / "state.json").write_text((data / "state.json").read_text() + " ")
    assert fingerprint_inputs([data])[0].sha256 != info_dir.sha256
    with pytest.raises(InputError, match="does not exist"):
        fingerprint_inputs([tmp_path / "absent.parquet"])


def test_meta_keeps_values_json_cannot_hold(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [{"id": "d1", "prompt": "When?", "response": "Now.", "when": datetime.date(2024, 5, 1)}]
    )
    pq.write_table(table, tmp_path / "dated.parquet")
    (row,) = rows_of(read([tmp_path / "dated.parquet"]))
    assert row["meta"] == canonical_json({"when": "2024-05-01"})


def test_a_record_nested_too_deeply_to_read_is_a_bad_json_reject() -> None:
    deep: list = []
    for _ in range(sys.getrecursionlimit()):
        deep = [deep]
    reader = RecordReader(InputConfig(), anchor_lang="en", langs=["de"])
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(BadRecord, match="nested too deeply to read") as caught:
        reader.row(Item({"id": "x", "messages": chat, "meta": deep}, "input.jsonl:1"), parallel=False)
    assert (caught.value.reason, caught.value.fields) == ("bad_json", {"group_id": "x", "lang": "en"})


def test_what_json_lines_hold_but_no_shard_can_is_a_reject(tmp_path: Path) -> None:
    """Lone surrogates, integers too long to read, NaN and Infinity, arguments that are ``null``, and a
    preference pair without a preference: each a reject with its reason, never a crash or a shard that
    holds text UTF-8 or JSON cannot."""
    chat = '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]'

    def call(arguments: str) -> str:
        function = '{"name": "f", "arguments": ' + arguments + "}"
        return (
            '[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", '
            '"tool_calls": [{"id": "c", "type": "function", "function": ' + function + "}]}]"
        )

    lines = [
        '{"id": "ok", "messages": ' + chat + "}",
        '{"id": "surrogate-text", "messages": [{"role": "user", "content": "Hi \\ud800"}, '
        '{"role": "assistant", "content": "Hello"}]}',
        '{"id": "surrogate-\\udfff", "messages": ' + chat + "}",
        '{"id": "surrogate-meta", "source": {"\\ud83d": 1}, "messages": ' + chat + "}",
        '{"id": "long-number", "n": ' + "9" * 5000 + ', "messages": ' + chat + "}",
        '{"id": "long-number-arguments", "messages": ' + call('"{\\"x\\": ' + "9" * 5000 + '}"') + "}",
        '{"id": "nan-arguments", "messages": ' + call('{"x": NaN}') + "}",
        '{"id": "infinity-arguments-text", "messages": ' + call('"{\\"x\\": -Infinity}"') + "}",
        '{"id": "null-arguments", "messages": ' + call('"null"') + "}",
        '{"id": "nan-tool-result", "messages": [{"role": "user", "content": "Hi"}, '
        '{"role": "tool", "content": {"x": NaN}}, {"role": "assistant", "content": "Done"}]}',
        '{"id": "same-pair", "prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Blue."}',
        '{"id": "nan-meta", "score": NaN, "messages": ' + chat + "}",
        '{"id": "no-arguments", "messages": ' + call("null") + "}",
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chunks = read([path])
    found = {(r["group_id"], r["reason"]): r["detail"] for r in rejects_of(chunks)}
    assert set(found) == {
        ("surrogate-text", "invalid_utf8"),
        ("surrogate-\\udfff", "invalid_utf8"),
        ("surrogate-meta", "invalid_utf8"),
        (None, "bad_json"),
        ("long-number-arguments", "bad_tool_calls"),
        ("nan-arguments", "bad_tool_calls"),
        ("infinity-arguments-text", "bad_tool_calls"),
        ("null-arguments", "bad_tool_calls"),
        ("nan-tool-result", "bad_field"),
        ("same-pair", "same_completions"),
    }
    assert "messages[0].content holds a lone surrogate ('\\ud800')" in found["surrogate-text", "invalid_utf8"]
    assert "id holds a lone surrogate" in found["surrogate-\\udfff", "invalid_utf8"]
    assert "source.\\ud83d holds a lone surrogate" in found["surrogate-meta", "invalid_utf8"]
    assert "value has 5000 digits" in found[None, "bad_json"]
    assert "arguments holds NaN or Infinity" in found["nan-arguments", "bad_tool_calls"]
    assert "arguments must be a JSON object, got null" in found["null-arguments", "bad_tool_calls"]
    rows = {r["group_id"]: r for r in rows_of(chunks)}
    assert set(rows) == {"ok", "nan-meta", "no-arguments"}
    assert json.loads(rows["nan-meta"]["meta"]) == {"score": "NaN"}  # strict JSON, the value kept as text
    (calls,) = [m["tool_calls"] for m in rows["no-arguments"]["messages"] if m["tool_calls"]]
    assert json.loads(calls)[0]["function"]["arguments"] == {}
    for row in rows_of(chunks):
        json.loads(row["meta"], parse_constant=lambda name: pytest.fail(f"{name} in meta"))
