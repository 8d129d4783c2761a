"""YAML config files with ``--set dotted.key=value`` overrides, shared by both CLIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


def load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        msg = f"config file not found: {path}"
        raise FileNotFoundError(msg)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        msg = f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        raise ValueError(msg)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries in a nested dict; values are parsed as YAML (``true``, ``3``, ``[a, b]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            msg = f"--set expects key=value, got {item!r}"
            raise ValueError(msg)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                msg = f"--set {key}: {part!r} is not a section"
                raise ValueError(msg)
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
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
