r"""Input formats: where each input is, which records it holds, and their fingerprints.

JSON Lines (``.jsonl``/``.json``), Parquet and ``datasets`` directories (``save_to_disk``) each yield
:class:`Item`\ s: a parsed record with where it was, or the reason it could not be parsed. What a record
means is :mod:`curate.readers.records`' business.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import InputInfo, UserError, sha256_files

if TYPE_CHECKING:
    from datasets import Dataset

DATASET_MARKERS = ("dataset_info.json", "state.json")
# How much of a line too long to parse a reject keeps as its ``raw`` text.
RAW_HEAD_BYTES = 4096

SourceKind = Literal["jsonl", "parquet", "datasets"]


class InputError(UserError, ValueError):
    """A mistake in what the user asked for (a path, a format, a field name), as opposed to a bad row."""


class BadRecord(Exception):
    """A record that cannot become a row; caught per record and turned into a reject.

    ``fields`` are what is known of the record so far (its ``group_id``, ``lang``), kept on the reject.
    """

    def __init__(self, reason: str, detail: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fields = fields or {}


@dataclass(frozen=True)
class Source:
    """One input: its path, format and whether it is long-form parallel (one row per id and language)."""

    path: Path
    kind: SourceKind
    parallel: bool


class Item(NamedTuple):
    """One input record: the parsed value, where it was, its text (JSON Lines) or a parse failure."""

    value: Any
    where: str
    raw: str | None = None
    error: BadRecord | None = None


def fingerprint_inputs(paths: Iterable[Path]) -> list[InputInfo]:
    """sha256 of each input; a ``datasets`` directory hashes each file's relative path and bytes, sorted."""
    infos = []
    for p in paths:
        path = Path(p)
        files = {"": path}
        if source_kind(path) == "datasets":
            files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
        infos.append(InputInfo(path=str(path), sha256=sha256_files(files)))
    return infos


def items(source: Source, *, batch_size: int, max_bytes: int) -> Iterator[Item]:
    """The records of one input, in file order; Parquet and ``datasets`` inputs ``batch_size`` rows at a
    time. A JSON line over ``max_bytes`` is not parsed: it comes as a ``too_long`` failure."""
    if source.kind == "jsonl":
        yield from jsonl_items(source.path, max_bytes=max_bytes)
        return
    if source.kind == "parquet":
        with pq.ParquetFile(source.path) as f:
            yield from table_items(source.path, f.iter_batches(batch_size=batch_size))
        return
    ds = load_dataset(source.path).with_format("arrow")
    yield from table_items(
        source.path, (ds[start : start + batch_size] for start in range(0, ds.num_rows, batch_size))
    )


def source_keys(path: Path, kind: SourceKind, wanted: set[str], *, max_bytes: int) -> set[str]:
    """The top-level fields of an input (for JSON Lines, those of ``wanted`` that some line holds); an
    :class:`InputError` when the input holds no record or cannot be read to its end."""
    if kind != "datasets" and path.stat().st_size == 0:
        msg = f"input {path} is empty (0 bytes): it holds no records"
        raise InputError(msg)
    if kind == "jsonl":
        return jsonl_keys(path, wanted, max_bytes=max_bytes)
    if kind == "parquet":
        schema = parquet_schema(path)
        _check_parquet(path)
        return set(schema.names)
    ds = load_dataset(path)
    if ds.num_rows == 0:
        msg = f"input {path} is empty: the dataset holds no rows"
        raise InputError(msg)
    return set(ds.column_names)


def source_kind(path: Path) -> SourceKind:
    if not path.exists():
        msg = f"input {path} does not exist"
        raise InputError(msg)
    if path.is_dir():
        if any((path / marker).is_file() for marker in DATASET_MARKERS):
            return "datasets"
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            msg = f"input {path} is a DatasetDict: pass one split directory ({', '.join(splits)})"
            raise InputError(msg)
        msg = (
            f"input {path} is a directory without {' or '.join(DATASET_MARKERS)}: expected a dataset "
            "written by datasets.Dataset.save_to_disk"
        )
        raise InputError(msg)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    msg = (
        f"input {path}: format not recognised from the suffix {suffix!r}: expected .jsonl or .json "
        "(JSON Lines), .parquet, or a directory written by datasets.Dataset.save_to_disk"
    )
    raise InputError(msg)


def parquet_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        msg = f"input {path} is not a readable Parquet file: {e}"
        raise InputError(msg) from e


def _check_parquet(path: Path) -> None:
    """Decode every page once, so that a corrupt body stops the build before the first chunk rather than
    in the middle of it (the footer alone, which holds the schema, can be intact)."""
    with pq.ParquetFile(path) as f:
        if f.metadata.num_rows == 0:
            msg = f"input {path} is empty: the Parquet file holds no rows"
            raise InputError(msg)
        for group in range(f.num_row_groups):
            try:
                for _ in f.iter_batches(row_groups=[group]):
                    pass
            except (pa.ArrowException, OSError) as e:
                msg = f"input {path}: row group {group} cannot be read, the file is corrupt ({e})"
                raise InputError(msg) from e


def load_dataset(path: Path) -> Dataset:
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (OSError, ValueError) as e:
        msg = f"input {path} cannot be loaded with datasets.load_from_disk: {e}"
        raise InputError(msg) from e
    if not isinstance(ds, Dataset):
        msg = f"input {path} holds a {type(ds).__name__}: pass one split directory"
        raise InputError(msg)
    return ds


def jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, without line ends or a leading byte-order mark."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def jsonl_keys(path: Path, wanted: set[str], *, max_bytes: int) -> set[str]:
    """Which of ``wanted`` are top-level keys of some line; only lines holding a key's text are parsed."""
    found: set[str] = set()
    needles = {key: json.dumps(key, ensure_ascii=False).encode() for key in wanted}
    empty = True
    for _, line in jsonl_lines(path):
        empty = False
        candidates = [key for key, needle in needles.items() if key not in found and needle in line]
        if not candidates or len(line) > max_bytes:
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.update(key for key in candidates if key in value)
            if found == wanted:
                break
    if empty:
        msg = f"input {path} is empty: it holds no JSON lines"
        raise InputError(msg)
    return found


def jsonl_items(path: Path, *, max_bytes: int) -> Iterator[Item]:
    for number, line in jsonl_lines(path):
        where = f"{path}:{number}"
        if len(line) > max_bytes:
            head = line[:RAW_HEAD_BYTES].decode("utf-8", errors="replace")
            detail = f"the line is {len(line):,} bytes, over input.max_record_bytes={max_bytes:,}"
            yield Item(None, where, head, BadRecord("too_long", detail))
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raw = line.decode("utf-8", errors="backslashreplace")
            yield Item(None, where, raw, BadRecord("invalid_utf8", str(e)))
            continue
        try:
            value = json.loads(text)
        except ValueError as e:  # JSONDecodeError, or an integer of more digits than Python converts
            yield Item(None, where, text, BadRecord("bad_json", str(e).partition("; use sys.")[0]))
            continue
        except RecursionError:
            yield Item(None, where, text, BadRecord("bad_json", "nested too deeply to parse"))
            continue
        yield Item(value, where, text)


def table_items(path: Path, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[Item]:
    number = 0
    for batch in batches:
        for value in batch.to_pylist():
            yield Item(value, f"{path} row {number}")
            number += 1
