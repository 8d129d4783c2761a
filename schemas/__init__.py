"""The data contract shared by ``curate`` (writes it) and ``align_train`` (reads it).

Names are imported from their module on first use (PEP 562), so ``from schemas import UserError`` in a
command line costs neither pyarrow nor pydantic: ``--help`` answers without loading what a command uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.arrow import (
        CONVERSATION_COLUMNS,
        MESSAGE_TYPE,
        MESSAGES_TYPE,
        PARALLEL_SCHEMA,
        PREFERENCE_SCHEMA,
        REJECT_SCHEMA,
        SCHEMAS,
        SOURCE_SCHEMA,
        SchemaValidationError,
        check_columns,
        infer_kind,
        read_ipc,
        validate,
    )
    from schemas.errors import (
        ConfigError,
        DataError,
        MissingDependencyError,
        MissingFileError,
        OutOfSpaceError,
        UserError,
        import_optional,
        out_of_space,
        writing,
    )
    from schemas.langs import UnknownLanguageError, base_lang, is_valid_lang, normalize_lang
    from schemas.numbers import read_numbers
    from schemas.records import (
        MANIFEST_FILE,
        ROLES,
        SCHEMA_VERSION,
        InputInfo,
        LangCounts,
        Manifest,
        Message,
        ParallelRow,
        PreferenceExample,
        RejectRow,
        ShardInfo,
        SourceExample,
        canonical_json,
        check_schema_version,
        content_hash,
        sha256_file,
        sha256_files,
        stable_fraction,
    )

_MODULES: dict[str, tuple[str, ...]] = {
    "schemas.arrow": (
        "CONVERSATION_COLUMNS",
        "MESSAGE_TYPE",
        "MESSAGES_TYPE",
        "PARALLEL_SCHEMA",
        "PREFERENCE_SCHEMA",
        "REJECT_SCHEMA",
        "SCHEMAS",
        "SOURCE_SCHEMA",
        "SchemaValidationError",
        "check_columns",
        "infer_kind",
        "read_ipc",
        "validate",
    ),
    "schemas.errors": (
        "ConfigError",
        "DataError",
        "MissingDependencyError",
        "MissingFileError",
        "OutOfSpaceError",
        "UserError",
        "import_optional",
        "out_of_space",
        "writing",
    ),
    "schemas.langs": ("UnknownLanguageError", "base_lang", "is_valid_lang", "normalize_lang"),
    "schemas.numbers": ("read_numbers",),
    "schemas.records": (
        "MANIFEST_FILE",
        "ROLES",
        "SCHEMA_VERSION",
        "InputInfo",
        "LangCounts",
        "Manifest",
        "Message",
        "ParallelRow",
        "PreferenceExample",
        "RejectRow",
        "ShardInfo",
        "SourceExample",
        "canonical_json",
        "check_schema_version",
        "content_hash",
        "sha256_file",
        "sha256_files",
        "stable_fraction",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "CONVERSATION_COLUMNS",
    "MANIFEST_FILE",
    "MESSAGES_TYPE",
    "MESSAGE_TYPE",
    "PARALLEL_SCHEMA",
    "PREFERENCE_SCHEMA",
    "REJECT_SCHEMA",
    "ROLES",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "SOURCE_SCHEMA",
    "ConfigError",
    "DataError",
    "InputInfo",
    "LangCounts",
    "Manifest",
    "Message",
    "MissingDependencyError",
    "MissingFileError",
    "OutOfSpaceError",
    "ParallelRow",
    "PreferenceExample",
    "RejectRow",
    "SchemaValidationError",
    "ShardInfo",
    "SourceExample",
    "UnknownLanguageError",
    "UserError",
    "base_lang",
    "canonical_json",
    "check_columns",
    "check_schema_version",
    "content_hash",
    "import_optional",
    "infer_kind",
    "is_valid_lang",
    "normalize_lang",
    "out_of_space",
    "read_ipc",
    "read_numbers",
    "sha256_file",
    "sha256_files",
    "stable_fraction",
    "validate",
    "writing",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        msg = f"module 'schemas' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
