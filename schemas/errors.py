"""The one base of user mistakes, shared by both command lines.

A :class:`UserError` is something the user can fix (a path, a setting, an input file that cannot be
used): ``curate`` and ``align-train`` print it on one line and exit with status 2. Every other exception
is a bug and keeps its traceback, however much it looks like bad input (``pyarrow.ArrowInvalid`` and
``json.JSONDecodeError`` are ``ValueError``\\ s too, so catching ``ValueError`` would hide bugs).
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


class UserError(Exception):
    """A mistake the user can fix; the message says what was received and what to do."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work as given. A ``ValueError`` too, so pydantic validators may raise it."""


class DataError(UserError, ValueError):
    """Input or corpus files that cannot be used as they are (unreadable, corrupt, inconsistent)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a default one) is not there."""


class OutOfSpaceError(UserError, OSError):
    """The disk (or the user's quota) filled up while writing: free some space and run the command again."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that a chosen feature needs is not installed."""


def import_optional(module: str, *, feature: str, install: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingDependencyError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"{feature} needs {module.split('.')[0]}: {install}"
        raise MissingDependencyError(msg) from e


# What a write fails with when the disk or the user's quota is full.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def writing(target: Path | str) -> Iterator[None]:
    """Turn a full disk while writing ``target`` into one :class:`OutOfSpaceError` line.

    Every other ``OSError`` goes on as it is: a full disk is the one failure of a write that the user fixes
    by freeing space, after which the same command resumes.
    """
    try:
        yield
    except OSError as e:
        if e.errno not in FULL_DISK_ERRNOS:
            raise
        raise out_of_space(target, e) from e


def out_of_space(target: Path | str, error: BaseException) -> OutOfSpaceError:
    """The one line for a disk that filled while writing ``target``."""
    cause = getattr(error, "strerror", None) or str(error)
    msg = f"the disk is full: could not write {target} ({cause}); free some space and run the command again"
    return OutOfSpaceError(msg)
