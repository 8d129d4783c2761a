"""Every module of ``align_train`` imports on its own (optional backends such as vLLM are imported lazily)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import align_train

MODULES = sorted(m.name for m in pkgutil.iter_modules(align_train.__path__) if m.name != "__main__")


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(f"align_train.{name}")
