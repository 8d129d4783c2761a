"""Every module of ``align_train`` imports on its own (optional backends such as vLLM are imported lazily)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import align_train

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(align_train.__path__, "align_train.")
    if m.name != "align_train.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
