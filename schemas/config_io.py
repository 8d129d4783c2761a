"""YAML config files with flags and ``--set dotted.key=value`` overrides: the one loader of both CLIs.

A config is the file, then the flags given on the command line, then ``--set`` entries, validated once by
a pydantic model. Every mistake on the way (missing file, bad YAML, a Python tag, unknown key, invalid
value, a number that is not finite) becomes one :class:`~schemas.errors.ConfigError` line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemas.errors import ConfigError

Config = TypeVar("Config", bound=BaseModel)


def load_config(
    model: type[Config], path: Path | None, *, flags: Mapping[str, Any], overrides: list[str]
) -> Config:
    """``path`` (YAML), then ``flags`` (dotted keys; None means not given), then ``--set`` entries."""
    data = load_yaml(path)
    for key, value in flags.items():
        if value is not None:
            _set(data, key, value, where=f"flag {key}")
    return validate_config(model, apply_overrides(data, overrides))


def validate_config(model: type[Config], data: Mapping[str, Any], *, context: str = "") -> Config:
    """``data`` validated by ``model``, or one :class:`ConfigError` line (prefixed by ``context``).

    A number that is not finite (YAML's ``.nan`` and ``.inf``, ``nan`` or ``1e999`` given to a float) is
    refused in every field, however deep: no setting means anything as NaN or infinity, and pydantic lets
    both through a float field (a bound such as ``ge=0`` does not stop NaN).
    """
    prefix = f"{context}: " if context else ""
    try:
        config = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(prefix + describe_validation_error(e)) from e
    for where, value in _floats(config, ""):
        if not math.isfinite(value):
            msg = f"{prefix}{where}: must be a finite number (got {value!r})"
            raise ConfigError(msg)
    return config


def load_yaml(path: Path | None) -> dict[str, Any]:
    """A YAML mapping from ``path`` ({} for None); only plain YAML values (``yaml.safe_load``)."""
    if path is None:
        return {}
    if not path.is_file():
        msg = f"config file not found: {path}"
        raise ConfigError(msg)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        msg = f"config file {path} is not valid YAML: {_one_line(e)}"
        raise ConfigError(msg) from e
    if not isinstance(data, dict):
        msg = f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries in a nested dict; values are parsed as YAML (``true``, ``3``, ``[a, b]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            msg = f"--set expects key=value, got {item!r}"
            raise ConfigError(msg)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            msg = f"--set {item!r}: the value is not valid YAML ({_one_line(e)})"
            raise ConfigError(msg) from e
        _set(data, key.strip(), value, where=f"--set {key.strip()}")
    return data


def describe_validation_error(error: ValidationError) -> str:
    """A validation error on one line: ``field: problem (got value)`` for each failed field."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        text = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("value_error", "missing") and "input" in item:
            text += f" (got {item['input']!r})"
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts)


def _floats(value: Any, where: str) -> Iterator[tuple[str, float]]:
    """Every float in a validated config, with its dotted key."""
    if isinstance(value, float):
        yield where, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _floats(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _floats(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            yield from _floats(item, f"{where}[{i}]")


def _set(data: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            msg = f"{where}: {part!r} is not a section"
            raise ConfigError(msg)
        node = child
    node[leaf] = value


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
