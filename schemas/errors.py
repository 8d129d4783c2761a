"""The one base of user mistakes, shared by both command lines.

A :class:`UserError` is something the user can fix (a path, a setting, an input file that cannot be
used): ``curate`` and ``align-train`` print it on one line and exit with status 2. Every other exception
is a bug and keeps its traceback, however much it looks like bad input (``pyarrow.ArrowInvalid`` and
``json.JSONDecodeError`` are ``ValueError``\\ s too, so catching ``ValueError`` would hide bugs).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """A mistake the user can fix; the message says what was received and what to do."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work as given. A ``ValueError`` too, so pydantic validators may raise it."""


class DataError(UserError, ValueError):
    """Input or corpus files that cannot be used as they are (unreadable, corrupt, inconsistent)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a default one) is not there."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that a chosen feature needs is not installed."""


def import_optional(module: str, *, feature: str, install: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"{feature} needs {module.split('.')[0]}: {install}"
        raise MissingDependencyError(msg) from e
