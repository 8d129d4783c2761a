"""The input side of ``curate build``: JSON Lines, Parquet and ``datasets`` directories → chunks of groups.

Every input record ends in exactly one place: a row of ``schemas.PARALLEL_SCHEMA`` or a reject row
(``stage="read"``) whose ``detail`` says where the record was and what is wrong with it. Bad rows never stop
a run; only mistakes of the user (a missing path, a format that cannot be recognised, a configured field
that no row of a file has) raise :class:`InputError`, before the first chunk.

Layouts (field names are ``InputConfig``'s defaults):

    messages         {"id", "task", "messages": [{"role", "content", "tool_calls"...}, ...]}
    prompt_response  {"id", "task", "prompt", "response", "system"?}
    preference       {"id", "task", "prompt", "chosen", "rejected"}      (each text or a message list)
    parallel         one of the above plus "lang": one row per (id, lang), grouped by id across files

With ``format="auto"`` a file where some row holds the language field is parallel; otherwise, and inside
parallel files, each row's layout follows its own keys: chosen+rejected, else messages, else prompt+response.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import InputConfig
from schemas import (
    PARALLEL_SCHEMA,
    REJECT_SCHEMA,
    ROLES,
    InputInfo,
    UnknownLanguageError,
    UserError,
    canonical_json,
    content_hash,
    normalize_lang,
)

if TYPE_CHECKING:
    from datasets import Dataset

STAGE = "read"
RAW_LIMIT = 4096
AUTO_ID_PREFIX = "sha256-"
DATASET_MARKERS = ("dataset_info.json", "state.json")

SourceKind = Literal["jsonl", "parquet", "datasets"]


class InputError(UserError, ValueError):
    """A mistake in what the user asked for (a path, a format, a field name), as opposed to a bad row."""


@dataclass
class Chunk:
    """Up to ``chunk_size`` whole groups, rows sorted by (group_id, lang), and the read rejects among them.

    ``read`` counts input records per language (``"und"`` where a parallel record's language is unknown);
    it always equals rows + rejects per language, so downstream accounting starts balanced.
    """

    index: int
    rows: pa.Table
    rejects: pa.Table
    read: Counter[str] = field(default_factory=Counter)


def read_chunks(
    paths: list[Path], *, config: InputConfig, anchor_lang: str, langs: list[str], chunk_size: int
) -> Iterator[Chunk]:
    """Read ``paths`` in order into deterministic chunks of whole groups.

    Every path is checked (and JSON Lines files scanned for their fields) before this returns, so user
    mistakes surface as :class:`InputError` at once. JSON Lines, Parquet and ``datasets`` inputs then stream
    with memory bounded by a chunk; long-form parallel input is loaded whole, grouped by id across files and
    chunked by first appearance of each id.
    """
    if chunk_size < 1:
        msg = f"chunk_size must be at least 1, got {chunk_size}"
        raise ValueError(msg)
    reader = _Reader(config, anchor_lang=anchor_lang, langs=langs, batch_size=chunk_size)
    sources = [reader.inspect(Path(p)) for p in paths]
    return _chunks(reader.events(sources), chunk_size)


def fingerprint_inputs(paths: Iterable[Path]) -> list[InputInfo]:
    """sha256 of each input; a ``datasets`` directory hashes each file's relative path and bytes, sorted."""
    infos = []
    for p in paths:
        path = Path(p)
        files = {"": path}
        if _kind(path) == "datasets":
            files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
        digest = hashlib.sha256()
        for name in sorted(files):
            if name:
                digest.update(name.encode() + b"\0")
            with files[name].open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        infos.append(InputInfo(path=str(path), sha256=digest.hexdigest()))
    return infos


class _BadRow(Exception):
    """A record that cannot become a row; caught per record and turned into a reject."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Source:
    path: Path
    kind: SourceKind
    parallel: bool


class _Item(NamedTuple):
    """One input record: the parsed value, where it was, its text (JSON Lines) or a parse failure."""

    value: Any
    where: str
    raw: str | None = None
    error: _BadRow | None = None


class _Content(NamedTuple):
    """The conversation columns of a row: ``chosen``/``rejected`` only for preference rows."""

    messages: list[dict[str, Any]]
    chosen: list[dict[str, Any]] | None = None
    rejected: list[dict[str, Any]] | None = None


class _Event(NamedTuple):
    """What one record (or one parallel group) became: the rows of a whole group, or rejects."""

    rows: list[dict[str, Any]]
    rejects: list[dict[str, Any]]


class _Reader:
    """Turns input records into parallel rows, holding the field mapping and the languages of one build."""

    def __init__(self, config: InputConfig, *, anchor_lang: str, langs: list[str], batch_size: int) -> None:
        c = config
        self.config = config
        self.anchor = normalize_lang(anchor_lang)
        self.targets = {normalize_lang(lang) for lang in langs} - {self.anchor}
        self.batch_size = batch_size
        self.layout = None if c.format in ("auto", "parallel") else c.format
        # The fields that make a row's layout recognisable, and those its conversion needs.
        self.detect = {
            "preference": (c.chosen_field, c.rejected_field),
            "messages": (c.messages_field,),
            "prompt_response": (c.prompt_field, c.response_field),
        }
        self.required = {**self.detect, "preference": (c.prompt_field, c.chosen_field, c.rejected_field)}
        self.configured = {
            getattr(c, name) for name in ("id_field", "task_field") if name in c.model_fields_set
        }
        self.wanted = {
            c.lang_field,
            *self.configured,
            *(f for fields in self.required.values() for f in fields),
        }

    def inspect(self, path: Path) -> _Source:
        """Where ``path`` is and which layout it has, or an :class:`InputError` saying what is wrong."""
        kind = _kind(path)
        if kind == "jsonl":
            keys = _jsonl_keys(path, self.wanted)
        elif kind == "parquet":
            keys = set(_parquet_schema(path).names)
        else:
            keys = set(_load_dataset(path).column_names)
        return _Source(path, kind, self._is_parallel(path, keys))

    def _is_parallel(self, path: Path, keys: set[str]) -> bool:
        """Whether a file with fields ``keys`` is long-form parallel; InputError when it cannot be read."""
        c = self.config
        parallel = c.format == "parallel" or (c.format == "auto" and c.lang_field in keys)
        layouts = [self.layout] if self.layout else [n for n, f in self.detect.items() if set(f) <= keys]
        if not layouts:
            msg = (
                f"input {path}: format not recognised: no row has {c.lang_field!r} (parallel), "
                f"{c.chosen_field!r}+{c.rejected_field!r} (preference), {c.messages_field!r} (messages) or "
                f"{c.prompt_field!r}+{c.response_field!r} (prompt_response); set input.format and the "
                "input.*_field names to match the data"
            )
            raise InputError(msg)
        needed = {f for name in layouts for f in self.required[name]} | self.configured
        if parallel:
            needed.add(c.lang_field)
        missing = sorted(needed - keys)
        if missing:
            layout = "parallel" if parallel else "/".join(layouts)
            msg = (
                f"input {path}: field {missing[0]!r} is missing from every row (layout {layout}); "
                "set input.*_field to the name the data uses"
            )
            raise InputError(msg)
        return parallel

    def events(self, sources: list[_Source]) -> Iterator[_Event]:
        """Records in input order; all parallel sources are read together where the first one stands."""
        seen: set[str] = set()
        parallel = [s for s in sources if s.parallel]
        for source in sources:
            if not source.parallel:
                yield from self._stream(source, seen)
            elif source is parallel[0]:
                yield from self._grouped(parallel, seen)

    def _stream(self, source: _Source, seen: set[str]) -> Iterator[_Event]:
        for item in self._items(source):
            known: dict[str, Any] = {"lang": self.anchor}
            try:
                row = self._row(item, parallel=False, known=known)
            except _BadRow as e:
                yield _Event([], [_reject(known, e.reason, e.detail, item)])
                continue
            if row["group_id"] in seen:
                detail = f"{self.config.id_field} {row['group_id']!r} was read before"
                yield _Event([], [_reject(row, "duplicate_id", detail, item)])
                continue
            seen.add(row["group_id"])
            yield _Event([row], [])

    def _grouped(self, sources: list[_Source], seen: set[str]) -> Iterator[_Event]:
        groups: dict[str, list[dict[str, Any]]] = {}
        order: list[str | dict[str, Any]] = []  # a group id where the group first appears, or a reject
        for source in sources:
            for item in self._items(source):
                known: dict[str, Any] = {}
                try:
                    row = self._row(item, parallel=True, known=known)
                except _BadRow as e:
                    order.append(_reject(known, e.reason, e.detail, item))
                    continue
                group_id, lang = row["group_id"], row["lang"]
                rows = groups.get(group_id)
                if group_id in seen or (rows is not None and any(r["lang"] == lang for r in rows)):
                    detail = f"({self.config.id_field}, lang) = ({group_id!r}, {lang!r}) was read before"
                    order.append(_reject(row, "duplicate_id", detail, item))
                elif rows is None:
                    groups[group_id] = [row]
                    order.append(group_id)
                else:
                    rows.append(row)
        seen.update(groups)
        for entry in order:
            if isinstance(entry, dict):
                yield _Event([], [entry])
                continue
            rows = groups[entry]
            if any(r["is_anchor"] for r in rows):
                yield _Event(rows, [])
            else:
                detail = f"group {entry!r} has no valid {self.anchor!r} row"
                yield _Event([], [_reject(r, "missing_anchor", detail, None) for r in rows])

    def _items(self, source: _Source) -> Iterator[_Item]:
        if source.kind == "jsonl":
            yield from _jsonl_items(source.path)
            return
        if source.kind == "parquet":
            with pq.ParquetFile(source.path) as f:
                yield from _table_items(source.path, f.iter_batches(batch_size=self.batch_size))
            return
        ds = _load_dataset(source.path).with_format("arrow")
        n = self.batch_size
        yield from _table_items(source.path, (ds[start : start + n] for start in range(0, ds.num_rows, n)))

    def _row(self, item: _Item, *, parallel: bool, known: dict[str, Any]) -> dict[str, Any]:
        """The parallel row of one record; fills ``known`` with what a reject of it can still carry."""
        if item.error is not None:
            raise item.error
        if not isinstance(item.value, dict):
            raise _BadRow("not_an_object", f"expected an object, got {_type(item.value)}")
        c = self.config
        rest = {k: v for k, v in item.value.items() if v is not None}
        group_id = self._id(rest.pop(c.id_field, None), parallel=parallel)
        known["group_id"] = group_id
        lang = self._lang(rest.pop(c.lang_field, None)) if parallel else self.anchor
        known["lang"] = lang
        if lang != self.anchor and lang not in self.targets:
            detail = f"{lang!r} is neither the anchor {self.anchor!r} nor requested ({sorted(self.targets)})"
            raise _BadRow("lang_not_requested", detail)
        task = rest.pop(c.task_field, c.default_task)
        if not isinstance(task, str) or not task.strip():
            raise _BadRow("bad_field", f"{c.task_field!r} must be a non-empty string, got {_show(task)}")
        layout = self.layout or self._detect(rest)
        content = self._content(layout, rest)
        digest = content_hash(*content)
        is_anchor = lang == self.anchor
        return {
            "group_id": group_id if group_id is not None else AUTO_ID_PREFIX + digest[:16],
            "lang": lang,
            "is_anchor": is_anchor,
            "kind": "preference" if layout == "preference" else "sft",
            "task": task,
            "messages": content.messages,
            "chosen": content.chosen,
            "rejected": content.rejected,
            "meta": canonical_json(_jsonable(rest)) if rest else "{}",
            "translator": "source" if is_anchor else "pretranslated",
            "content_hash": digest,
        }

    def _lang(self, value: Any) -> str:
        name = self.config.lang_field
        if value is None:
            raise _BadRow("missing_field", f"{name!r} is missing")
        if not isinstance(value, str):
            raise _BadRow("unknown_lang", f"{name!r} must be a language code, got {_show(value)}")
        try:
            return normalize_lang(value)
        except UnknownLanguageError as e:
            raise _BadRow("unknown_lang", str(e)) from None

    def _id(self, value: Any, *, parallel: bool) -> str | None:
        name = self.config.id_field
        if value is None:
            if parallel:
                raise _BadRow("missing_field", f"{name!r} is missing: parallel rows are grouped by it")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise _BadRow(
                "bad_field", f"{name!r} must be a non-empty string or an integer, got {_show(value)}"
            )
        return str(value)

    def _detect(self, rest: dict[str, Any]) -> str:
        for layout, fields in self.detect.items():
            if all(f in rest for f in fields):
                return layout
        c = self.config
        detail = (
            f"no {c.messages_field!r}, {c.prompt_field!r}+{c.response_field!r} or "
            f"{c.chosen_field!r}+{c.rejected_field!r} fields"
        )
        raise _BadRow("missing_field", detail)

    def _content(self, layout: str, rest: dict[str, Any]) -> _Content:
        """The conversations of a record, consuming the fields it reads from ``rest``."""
        c = self.config
        if layout == "messages":
            messages = _conversation(_take(rest, c.messages_field), c.messages_field, default_role=None)
            _check_conversation(messages, c.messages_field, completion=True)
            return _Content(messages)
        prompt = _conversation(_take(rest, c.prompt_field), c.prompt_field, default_role="user")
        _check_conversation(prompt, c.prompt_field, completion=False)
        if layout == "prompt_response":
            system = rest.pop(c.system_field, "")
            if not isinstance(system, str):
                raise _BadRow("bad_field", f"{c.system_field!r} must be text, got {_type(system)}")
            response = _conversation(
                _take(rest, c.response_field), c.response_field, default_role="assistant"
            )
            _check_conversation(response, c.response_field, completion=True)
            head = [_message({"role": "system", "content": system}, c.system_field)] if system.strip() else []
            return _Content([*head, *prompt, *response])
        completions = []
        for name in (c.chosen_field, c.rejected_field):
            completion = _conversation(_take(rest, name), name, default_role="assistant")
            # Conversational preference data often repeats the prompt at the head of each completion.
            if len(completion) > len(prompt) and completion[: len(prompt)] == prompt:
                completion = completion[len(prompt) :]
            _check_conversation(completion, name, completion=True)
            completions.append(completion)
        return _Content(prompt, *completions)


def _kind(path: Path) -> SourceKind:
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


def _parquet_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        msg = f"input {path} is not a readable Parquet file: {e}"
        raise InputError(msg) from e


def _load_dataset(path: Path) -> Dataset:
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


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, without line ends or a leading byte-order mark."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def _jsonl_keys(path: Path, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` are top-level keys of some line; only lines holding a key's text are parsed."""
    found: set[str] = set()
    needles = {key: json.dumps(key, ensure_ascii=False).encode() for key in wanted}
    for _, line in _jsonl_lines(path):
        candidates = [key for key, needle in needles.items() if key not in found and needle in line]
        if not candidates:
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(value, dict):
            found.update(key for key in candidates if key in value)
            if found == wanted:
                break
    return found


def _jsonl_items(path: Path) -> Iterator[_Item]:
    for number, line in _jsonl_lines(path):
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raw = line.decode("utf-8", errors="backslashreplace")
            yield _Item(None, where, raw, _BadRow("invalid_utf8", str(e)))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            yield _Item(None, where, text, _BadRow("bad_json", str(e)))
            continue
        yield _Item(value, where, text)


def _table_items(path: Path, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[_Item]:
    number = 0
    for batch in batches:
        for value in batch.to_pylist():
            yield _Item(value, f"{path} row {number}")
            number += 1


def _take(rest: dict[str, Any], name: str) -> Any:
    if name not in rest:
        raise _BadRow("missing_field", f"{name!r} is missing")
    return rest.pop(name)


def _conversation(value: Any, name: str, *, default_role: str | None) -> list[dict[str, Any]]:
    """Messages from a list of message objects, or from plain text said by ``default_role``."""
    if isinstance(value, str) and default_role is not None:
        return [_message({"role": default_role, "content": value}, name)]
    if not isinstance(value, list):
        allowed = "text or a list of messages" if default_role else "a list of messages"
        raise _BadRow("bad_field", f"{name!r} must be {allowed}, got {_type(value)}")
    return [_message(m, f"{name}[{i}]") for i, m in enumerate(value)]


def _message(value: Any, where: str) -> dict[str, Any]:
    """One message of the contract; message keys other than the contract's are not kept."""
    if not isinstance(value, dict):
        raise _BadRow("bad_field", f"{where} must be a message object, got {_type(value)}")
    role = value.get("role")
    if role not in ROLES:
        raise _BadRow("unknown_role", f"{where}.role is {_show(role)}, expected one of {', '.join(ROLES)}")
    content = value.get("content")
    if content is None:
        content = ""
    elif role == "tool" and isinstance(content, dict | list):
        content = canonical_json(content)
    elif not isinstance(content, str):
        raise _BadRow("bad_field", f"{where}.content must be text, got {_type(content)}")
    for key in ("tool_call_id", "name"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise _BadRow("bad_field", f"{where}.{key} must be text, got {_type(value[key])}")
    return {
        "role": role,
        "content": content,
        "tool_calls": _tool_calls(value.get("tool_calls"), role, where),
        "tool_call_id": value.get("tool_call_id"),
        "name": value.get("name"),
    }


def _tool_calls(value: Any, role: str, where: str) -> str | None:
    """Canonical JSON of OpenAI-style tool calls, ``arguments`` parsed into an object; None when absent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise _BadRow("bad_tool_calls", f"{where}.tool_calls is not JSON: {e}") from None
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise _BadRow("bad_tool_calls", f"{where}.tool_calls must be a list, got {_type(value)}")
    if role != "assistant":
        raise _BadRow(
            "bad_tool_calls", f"{where} is a {role!r} message with tool_calls; only assistants call tools"
        )
    return canonical_json([_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(value)])


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise _BadRow("bad_tool_calls", f"{where} must be an object, got {_type(call)}")
    function = call["function"] if call.get("function") is not None else call
    if not isinstance(function, dict):
        raise _BadRow("bad_tool_calls", f"{where}.function must be an object, got {_type(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _BadRow("bad_tool_calls", f"{where} has no function name")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise _BadRow("bad_tool_calls", f"{where} arguments are not valid JSON: {e}") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise _BadRow("bad_tool_calls", f"{where} arguments must be a JSON object, got {_type(arguments)}")
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call.get("id") is not None:
        out["id"] = str(call["id"])
    return out


def _check_conversation(messages: list[dict[str, Any]], name: str, *, completion: bool) -> None:
    """Reject conversations with nothing to say; a completion must end in something an assistant said."""
    if not messages:
        raise _BadRow("empty_content", f"{name!r} is empty")
    for i, m in enumerate(messages):
        if m["role"] in ("system", "user") and not m["content"].strip():
            raise _BadRow("empty_content", f"{name}[{i}] ({m['role']}) has no content")
    if not completion:
        return
    last = messages[-1]
    if last["role"] == "assistant" and not last["content"].strip() and last["tool_calls"] is None:
        raise _BadRow("empty_content", f"{name}[{len(messages) - 1}], the final assistant message, is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise _BadRow("empty_content", f"{name!r} has no assistant message")


def _reject(fields: dict[str, Any], reason: str, detail: str, item: _Item | None) -> dict[str, Any]:
    """A reject row keeping what is known of the record, where it was and (when at hand) its text."""
    raw = None
    if item is not None:
        detail = f"{item.where}: {detail}"
        raw = item.raw if item.raw is not None else canonical_json(_jsonable(item.value))
        if len(raw) > RAW_LIMIT:
            raw = f"{raw[:RAW_LIMIT]}… [{len(raw) - RAW_LIMIT} more characters]"
    return {**fields, "stage": STAGE, "reason": reason, "detail": detail, "raw": raw}


def _chunks(events: Iterator[_Event], chunk_size: int) -> Iterator[Chunk]:
    """Cut after ``chunk_size`` groups, or ``chunk_size`` rejects so that garbage cannot grow a chunk."""
    index, groups = 0, 0
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for event in events:
        rows += event.rows
        rejects += event.rejects
        groups += bool(event.rows)
        if groups == chunk_size or len(rejects) >= chunk_size:
            yield _chunk(index, rows, rejects)
            index, groups, rows, rejects = index + 1, 0, [], []
    if rows or rejects:
        yield _chunk(index, rows, rejects)


def _chunk(index: int, rows: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> Chunk:
    table = pa.Table.from_pylist(rows, schema=PARALLEL_SCHEMA)
    read = Counter(r["lang"] for r in rows)
    read.update(r.get("lang") or "und" for r in rejects)
    return Chunk(
        index=index,
        rows=table.sort_by([("group_id", "ascending"), ("lang", "ascending")]),
        rejects=pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA),
        read=read,
    )


def _jsonable(value: Any) -> Any:
    """Arrow hands over dates, decimals and bytes that JSON cannot hold: keep their text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
