"""Typed records mirroring the Arrow schemas, for code that builds or reads rows one at a time.

Tool calls are kept as canonical JSON text (OpenAI format: ``[{"id", "type": "function", "function":
{"name", "arguments"}}]`` with ``arguments`` as a JSON object) so that one representation travels from the
input file through translation to the training collator unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import DataError, MissingFileError
from schemas.langs import normalize_lang

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
Kind = Literal["sft", "preference"]
KINDS: tuple[str, ...] = ("sft", "preference")

SCHEMA_VERSION = "1.0"


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text (and equal hashes)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    tool_calls: str | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def as_chat(self) -> dict[str, Any]:
        """The message as a chat-template dict, tool calls decoded."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls is not None:
            out["tool_calls"] = json.loads(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


def _lang(value: str) -> str:
    return normalize_lang(value)


class SourceExample(BaseModel):
    """One conversation in the anchor language, as read from the input."""

    model_config = ConfigDict(extra="forbid")

    example_id: str
    lang: str
    task: str = "chat"
    messages: list[Message]
    meta: str = "{}"

    _norm = field_validator("lang")(lambda cls, v: _lang(v))


class PreferenceExample(BaseModel):
    """A prompt with a preferred and a dispreferred completion (DPO / ORPO)."""

    model_config = ConfigDict(extra="forbid")

    example_id: str
    lang: str
    task: str = "chat"
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    meta: str = "{}"

    _norm = field_validator("lang")(lambda cls, v: _lang(v))


class ParallelRow(BaseModel):
    """One (group_id, lang) row of a shard: the anchor or one of its translations."""

    model_config = ConfigDict(extra="forbid")

    group_id: str
    lang: str
    is_anchor: bool
    kind: Kind = "sft"
    task: str = "chat"
    messages: list[Message]
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None
    meta: str = "{}"
    translator: str
    lid_lang: str | None = None
    lid_prob: float | None = None
    equivalence: float | None = None
    length_ratio: float | None = None
    content_hash: str

    _norm = field_validator("lang")(lambda cls, v: _lang(v))


class RejectRow(BaseModel):
    """A row that did not make it, with the stage that dropped it and why (``lid.wrong_lang``)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str | None = None
    lang: str | None = None
    is_anchor: bool | None = None
    kind: Kind | None = None
    task: str | None = None
    messages: list[Message] | None = None
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None
    meta: str | None = None
    translator: str | None = None
    lid_lang: str | None = None
    lid_prob: float | None = None
    equivalence: float | None = None
    length_ratio: float | None = None
    content_hash: str | None = None
    stage: str
    reason: str
    detail: str | None = None
    raw: str | None = None


def content_hash(
    messages: list[dict[str, Any]] | None,
    chosen: list[dict[str, Any]] | None = None,
    rejected: list[dict[str, Any]] | None = None,
) -> str:
    """sha256 of a row's text content: the key for deduplication and for the translation cache."""
    payload = canonical_json({"messages": messages, "chosen": chosen, "rejected": rejected})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def stable_fraction(key: str) -> float:
    """A number in ``[0, 1)`` from ``sha256(key)`` (its first 8 bytes over ``2**64``): the same for a key on
    every machine, run and Python, so selections by it (samples, held-out splits) never drift."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return sha256_files({"": path})


def sha256_files(files: Mapping[str, Path]) -> str:
    """Hex sha256 of several files in the order of their names, each file's bytes preceded by its name and
    a NUL byte (an empty name adds nothing: one file hashes as its bytes alone); read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name:
            digest.update(name.encode() + b"\0")
        with files[name].open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class ShardInfo(BaseModel):
    """One Arrow file of a build: ``file`` relative to the build's folder (and inside it), its counts and
    the sha256 of its bytes."""

    file: str
    rows: int = Field(ge=0)
    groups: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    langs: dict[str, int] = Field(default_factory=dict)

    @field_validator("file")
    @classmethod
    def _inside(cls, v: str) -> str:
        path = PurePosixPath(v)
        if not v or path.is_absolute() or "\\" in v or ":" in v or ".." in path.parts:
            msg = f"file {v!r} must be a relative path inside the build's folder (like 'shards/part-000000.arrow')"
            raise ValueError(msg)
        return v

    def path(self, root: Path) -> Path:
        """Where the file is, under the build's folder ``root``."""
        return root / self.file

    def verify(self, root: Path) -> Path:
        """The file's path once its bytes match ``sha256``; a :class:`DataError` naming it otherwise."""
        path = self.path(root)
        if not path.is_file():
            msg = f"{path} is listed in {root / MANIFEST_FILE} but missing: rebuild the corpus or restore the file"
            raise DataError(msg)
        actual = sha256_file(path)
        if actual != self.sha256:
            msg = (
                f"{path} does not match {root / MANIFEST_FILE} (sha256 {actual[:12]}…, expected "
                f"{self.sha256[:12]}…): the file was changed or damaged after the build; rebuild the corpus"
            )
            raise DataError(msg)
        return path


class LangCounts(BaseModel):
    """Per-language accounting; ``read == kept + sum(rejected.values())`` always."""

    read: int = 0
    kept: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)

    def __add__(self, other: LangCounts) -> LangCounts:
        rejected = dict(self.rejected)
        for reason, n in other.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
        return LangCounts(read=self.read + other.read, kept=self.kept + other.kept, rejected=rejected)

    @property
    def balanced(self) -> bool:
        return self.read == self.kept + sum(self.rejected.values())


class InputInfo(BaseModel):
    path: str
    sha256: str


MANIFEST_FILE = "manifest.json"


class Manifest(BaseModel):
    """``manifest.json`` next to the shards: what was built, from what, and how every row ended."""

    schema_version: str = SCHEMA_VERSION
    anchor_lang: str
    langs: list[str]
    shards: list[ShardInfo]
    rejects: list[ShardInfo]
    counts: dict[str, LangCounts]
    inputs: list[InputInfo]
    config: dict[str, Any]
    config_hash: str
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, v: str) -> str:
        check_schema_version(v)
        return v

    @model_validator(mode="after")
    def _adds_up(self) -> Manifest:
        """Every file listed once, and the counts adding up: per language, rows read = kept + rejected,
        the shards hold the kept rows and the reject files the rejected ones. A manifest edited by hand
        (a shard listed twice would be trained on twice per epoch) is refused before anything reads it."""
        files = [*self.shards, *self.rejects]
        for attribute in ("file", "sha256"):
            seen: set[str] = set()
            for info in files:
                value = getattr(info, attribute)
                if value in seen:
                    msg = f"{info.file} is listed twice (same {attribute}): every file of a build is listed once"
                    raise ValueError(msg)
                seen.add(value)
        for info in files:
            if info.langs and sum(info.langs.values()) != info.rows:
                msg = f"{info.file} holds {info.rows} rows but its rows per language add up to {sum(info.langs.values())}"
                raise ValueError(msg)
        for lang, counts in self.counts.items():
            rejected = sum(counts.rejected.values())
            if not counts.balanced:
                msg = f"counts of {lang!r} do not add up: read {counts.read} != kept {counts.kept} + rejected {rejected}"
                raise ValueError(msg)
        for what, listed, counted in (
            ("kept", self.shards, {lang: c.kept for lang, c in self.counts.items()}),
            ("rejected", self.rejects, {lang: sum(c.rejected.values()) for lang, c in self.counts.items()}),
        ):
            if not all(info.langs for info in listed):
                continue  # a file without rows per language (older builds) cannot be counted
            held: dict[str, int] = {}
            for info in listed:
                for lang, n in info.langs.items():
                    held[lang] = held.get(lang, 0) + n
            for lang in sorted(set(held) | set(counted)):
                if held.get(lang, 0) != counted.get(lang, 0):
                    msg = (
                        f"counts of {lang!r} say {counted.get(lang, 0)} rows {what}, but the "
                        f"{'shards' if what == 'kept' else 'reject files'} listed hold {held.get(lang, 0)}"
                    )
                    raise ValueError(msg)
        return self

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        """The manifest of a ``curate build`` output folder, with one-line errors for a missing or bad file."""
        path = Path(out_dir) / MANIFEST_FILE
        if not path.is_file():
            msg = f"no {MANIFEST_FILE} in {out_dir}: expected the output folder of `curate build`"
            raise MissingFileError(msg)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            problem = first["msg"].removeprefix("Value error, ")
            more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
            msg = f"{path} is not a valid manifest: {where + ': ' if where else ''}{problem}{more}"
            raise DataError(msg) from e


def check_schema_version(version: str) -> None:
    """Refuse a manifest written by an incompatible (different major) schema."""
    major = version.split(".", 1)[0]
    if major != SCHEMA_VERSION.split(".", 1)[0]:
        msg = f"unsupported schema_version {version!r}: this reader understands {SCHEMA_VERSION.split('.')[0]}.x"
        raise DataError(msg)
