"""What a record means: the row of ``schemas.PARALLEL_SCHEMA`` it becomes, or why it cannot become one.

Layouts (field names are ``InputConfig``'s defaults):

    messages         {"id", "task", "messages": [{"role", "content", "tool_calls"...}, ...]}
    prompt_response  {"id", "task", "prompt", "response", "system"?}
    preference       {"id", "task", "prompt", "chosen", "rejected"}      (each text or a message list)
    parallel         one of the above plus "lang": one row per (id, lang), grouped by id across files

With ``format="auto"`` a file where some row holds the language field is parallel; otherwise, and inside
parallel files, each row's layout follows its own keys: chosen+rejected, else messages, else prompt+response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from curate.config import InputConfig
from curate.readers.sources import BadRecord, InputError, Item, Source, source_keys, source_kind
from schemas import (
    CONVERSATION_COLUMNS,
    ROLES,
    UnknownLanguageError,
    canonical_json,
    content_hash,
    normalize_lang,
)

STAGE = "read"
RAW_LIMIT = 4096
AUTO_ID_PREFIX = "sha256-"


class _Content(NamedTuple):
    """The conversation columns of a row: ``chosen``/``rejected`` only for preference rows."""

    messages: list[dict[str, Any]]
    chosen: list[dict[str, Any]] | None = None
    rejected: list[dict[str, Any]] | None = None


class RecordReader:
    """Turns input records into parallel rows, holding the field mapping and the languages of one build."""

    def __init__(self, config: InputConfig, *, anchor_lang: str, langs: list[str]) -> None:
        c = config
        self.config = config
        self.anchor = normalize_lang(anchor_lang)
        self.targets = {normalize_lang(lang) for lang in langs} - {self.anchor}
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

    def inspect(self, path: Path) -> Source:
        """Where ``path`` is and which layout it has, or an :class:`InputError` saying what is wrong."""
        kind = source_kind(path)
        keys = source_keys(path, kind, self.wanted, max_bytes=self.config.max_record_bytes)
        return Source(path, kind, self._is_parallel(path, keys))

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

    def row(self, item: Item, *, parallel: bool) -> dict[str, Any]:
        """The parallel row of one record, or :class:`BadRecord` carrying what a reject of it can keep."""
        known: dict[str, Any] = {} if parallel else {"lang": self.anchor}
        try:
            if item.error is not None:
                raise item.error
            if not isinstance(item.value, dict):
                raise BadRecord("not_an_object", f"expected an object, got {_type(item.value)}")
            c = self.config
            rest = {k: v for k, v in item.value.items() if v is not None}
            group_id = known["group_id"] = self._id(rest.pop(c.id_field, None), parallel=parallel)
            lang = self._lang(rest.pop(c.lang_field, None)) if parallel else self.anchor
            known["lang"] = lang
            if lang != self.anchor and lang not in self.targets:
                detail = (
                    f"{lang!r} is neither the anchor {self.anchor!r} nor requested ({sorted(self.targets)})"
                )
                raise BadRecord("lang_not_requested", detail)
            task = rest.pop(c.task_field, c.default_task)
            if not isinstance(task, str) or not task.strip():
                raise BadRecord(
                    "bad_field", f"{c.task_field!r} must be a non-empty string, got {_show(task)}"
                )
            layout = self.layout or self._detect(rest)
            content = self._content(layout, rest)
            self._check_lengths(content)
            meta = canonical_json(_jsonable(rest)) if rest else "{}"
            digest = _encodable(item.value, lambda: content_hash(*content), group_id or "", task, meta)
        except RecursionError:
            raise BadRecord("bad_json", "nested too deeply to read", known) from None
        except BadRecord as e:
            e.fields = known
            raise
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
            "meta": meta,
            "translator": "source" if is_anchor else "pretranslated",
            "content_hash": digest,
        }

    def _check_lengths(self, content: _Content) -> None:
        """A message longer than ``input.max_message_chars`` would stall every stage after this one."""
        limit = self.config.max_message_chars
        for column, messages in zip(CONVERSATION_COLUMNS, content, strict=True):
            for i, m in enumerate(messages or []):
                n = len(m["content"]) + len(m["tool_calls"] or "")
                if n > limit:
                    detail = f"{column}[{i}] is {n:,} characters, over input.max_message_chars={limit:,}"
                    raise BadRecord("too_long", detail)

    def _lang(self, value: Any) -> str:
        name = self.config.lang_field
        if value is None:
            raise BadRecord("missing_field", f"{name!r} is missing")
        if not isinstance(value, str):
            raise BadRecord("unknown_lang", f"{name!r} must be a language code, got {_show(value)}")
        try:
            return normalize_lang(value)
        except UnknownLanguageError as e:
            raise BadRecord("unknown_lang", str(e)) from None

    def _id(self, value: Any, *, parallel: bool) -> str | None:
        name = self.config.id_field
        if value is None:
            if parallel:
                raise BadRecord("missing_field", f"{name!r} is missing: parallel rows are grouped by it")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise BadRecord(
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
        raise BadRecord("missing_field", detail)

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
                raise BadRecord("bad_field", f"{c.system_field!r} must be text, got {_type(system)}")
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
        if completions[0] == completions[1]:
            detail = f"{c.chosen_field!r} and {c.rejected_field!r} are the same: nothing to prefer"
            raise BadRecord("same_completions", detail)
        return _Content(prompt, *completions)


def _take(rest: dict[str, Any], name: str) -> Any:
    if name not in rest:
        raise BadRecord("missing_field", f"{name!r} is missing")
    return rest.pop(name)


def _conversation(value: Any, name: str, *, default_role: str | None) -> list[dict[str, Any]]:
    """Messages from a list of message objects, or from plain text said by ``default_role``."""
    if isinstance(value, str) and default_role is not None:
        return [_message({"role": default_role, "content": value}, name)]
    if not isinstance(value, list):
        allowed = "text or a list of messages" if default_role else "a list of messages"
        raise BadRecord("bad_field", f"{name!r} must be {allowed}, got {_type(value)}")
    return [_message(m, f"{name}[{i}]") for i, m in enumerate(value)]


def _message(value: Any, where: str) -> dict[str, Any]:
    """One message of the contract; message keys other than the contract's are not kept."""
    if not isinstance(value, dict):
        raise BadRecord("bad_field", f"{where} must be a message object, got {_type(value)}")
    role = value.get("role")
    if role not in ROLES:
        raise BadRecord("unknown_role", f"{where}.role is {_show(role)}, expected one of {', '.join(ROLES)}")
    content = value.get("content")
    if content is None:
        content = ""
    elif role == "tool" and isinstance(content, dict | list):
        content = _strict_json(content, f"{where}.content", reason="bad_field")
    elif not isinstance(content, str):
        raise BadRecord("bad_field", f"{where}.content must be text, got {_type(content)}")
    for key in ("tool_call_id", "name"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise BadRecord("bad_field", f"{where}.{key} must be text, got {_type(value[key])}")
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
        except ValueError as e:  # JSONDecodeError, or an integer of more digits than Python converts
            detail = f"{where}.tool_calls is not JSON: {str(e).partition('; use sys.')[0]}"
            raise BadRecord("bad_tool_calls", detail) from None
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise BadRecord("bad_tool_calls", f"{where}.tool_calls must be a list, got {_type(value)}")
    if role != "assistant":
        raise BadRecord(
            "bad_tool_calls", f"{where} is a {role!r} message with tool_calls; only assistants call tools"
        )
    return canonical_json([_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(value)])


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise BadRecord("bad_tool_calls", f"{where} must be an object, got {_type(call)}")
    function = call["function"] if call.get("function") is not None else call
    if not isinstance(function, dict):
        raise BadRecord("bad_tool_calls", f"{where}.function must be an object, got {_type(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRecord("bad_tool_calls", f"{where} has no function name")
    arguments = function.get("arguments")
    if arguments is None:  # absent: a call without arguments
        arguments = {}
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as e:  # JSONDecodeError, or an integer of more digits than Python converts
            detail = f"{where} arguments are not valid JSON: {str(e).partition('; use sys.')[0]}"
            raise BadRecord("bad_tool_calls", detail) from None
    if not isinstance(arguments, dict):
        raise BadRecord("bad_tool_calls", f"{where} arguments must be a JSON object, got {_type(arguments)}")
    _strict_json(arguments, f"{where} arguments", reason="bad_tool_calls")
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call.get("id") is not None:
        out["id"] = str(call["id"])
    return out


def _check_conversation(messages: list[dict[str, Any]], name: str, *, completion: bool) -> None:
    """Reject conversations with nothing to say; a completion must end in something an assistant said."""
    if not messages:
        raise BadRecord("empty_content", f"{name!r} is empty")
    for i, m in enumerate(messages):
        if m["role"] in ("system", "user") and not m["content"].strip():
            raise BadRecord("empty_content", f"{name}[{i}] ({m['role']}) has no content")
    if not completion:
        return
    last = messages[-1]
    if last["role"] == "assistant" and not last["content"].strip() and last["tool_calls"] is None:
        raise BadRecord(
            "empty_content", f"{name}[{len(messages) - 1}], the final assistant message, is empty"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRecord("empty_content", f"{name!r} has no assistant message")


def reject(fields: dict[str, Any], reason: str, detail: str, item: Item | None) -> dict[str, Any]:
    """A reject row keeping what is known of the record, where it was and (when at hand) its text; a lone
    surrogate in any of it is kept as its escape (``\\ud800``), which UTF-8 can hold."""
    raw = None
    if item is not None:
        detail = f"{item.where}: {detail}"
        raw = item.raw if item.raw is not None else canonical_json(_jsonable(item.value))
        if len(raw) > RAW_LIMIT:
            raw = f"{raw[:RAW_LIMIT]}… [{len(raw) - RAW_LIMIT} more characters]"
    row = {**fields, "stage": STAGE, "reason": reason, "detail": detail, "raw": raw}
    return {key: _escaped(value) if isinstance(value, str) else value for key, value in row.items()}


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(record: Any, digest: Callable[[], str], *texts: str) -> str:
    """``digest()`` (the row's content hash, which encodes its conversations as UTF-8) once ``texts`` (the
    row's other fields) encode too, or an ``invalid_utf8`` reject naming where the record holds a lone
    surrogate (``"\\ud800"`` in JSON decodes to one): no file can store such text as UTF-8."""
    try:
        text = digest()
        for field in texts:
            field.encode("utf-8")
    except UnicodeEncodeError as e:
        where = _surrogate_at(record, "") or "the record"
        detail = f"{where} holds a lone surrogate ({e.object[e.start : e.end]!r}), which UTF-8 cannot encode"
        raise BadRecord("invalid_utf8", _escaped(detail)) from None
    return text


def _surrogate_at(value: Any, where: str) -> str | None:
    """Where in a parsed record the first text that UTF-8 cannot encode is (``messages[0].content``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "the record"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            found = _surrogate_at(str(key), path) or _surrogate_at(item, path)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_at(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _strict_json(value: Any, where: str, *, reason: str) -> str:
    """Canonical JSON of ``value``, or ``reason`` when it holds NaN or an infinity: Python reads and writes
    them, but they are not JSON, and a model trained on them learns to write what no parser takes."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise BadRecord(reason, f"{where} holds NaN or Infinity, which JSON cannot hold") from None
    return canonical_json(value)


def _jsonable(value: Any) -> Any:
    """Arrow hands over dates, decimals and bytes that JSON cannot hold, and a JSON line may hold NaN or
    Infinity, which JSON does not allow: keep their text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # "NaN", "Infinity", "-Infinity"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
