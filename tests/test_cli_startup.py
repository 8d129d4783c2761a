"""``curate --help`` and ``align-train --help`` load the command line and nothing it does not need: each
command imports its settings, pyarrow, torch and the models when it runs. The check counts the modules a
fresh interpreter has imported after ``--help`` (timings would depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import ROOT

# Packages whose import alone costs from a tenth of a second (pyarrow) to seconds (torch, scipy). Not
# pydantic: typer itself imports it to check the options of a subcommand; what costs is building the
# configs' models, which the OWN check below rules out.
HEAVY = {
    "ctranslate2",
    "datasets",
    "datasketch",
    "fasttext",
    "httpx",
    "langcodes",
    "matplotlib",
    "numpy",
    "pandas",
    "peft",
    "polars",
    "pyarrow",
    "ray",
    "scipy",
    "sentence_transformers",
    "torch",
    "transformers",
    "yaml",
}
# The project's own modules that a --help may load: the command line, the user-error base and, for
# align-train, the choices its options list.
OWN = {
    "curate": {"curate", "curate.__main__", "curate.cli", "schemas", "schemas.errors"},
    "align_train": {
        "align_train",
        "align_train.__main__",
        "align_train.cli",
        "align_train.choices",
        "schemas",
        "schemas.errors",
    },
}
COMMANDS = [
    ("curate", []),
    ("curate", ["build"]),
    ("curate", ["inspect"]),
    ("curate", ["report"]),
    ("align_train", []),
    ("align_train", ["train"]),
    ("align_train", ["eval"]),
    ("align_train", ["sweep"]),
    ("align_train", ["export"]),
    ("align_train", ["from-gguf"]),
]
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def modules_after_help(package: str, args: list[str]) -> tuple[int, set[str]]:
    """Exit code of ``python -m PACKAGE ARGS --help`` and every module it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, package, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(("package", "args"), COMMANDS, ids=[" ".join([p, *a]) for p, a in COMMANDS])
def test_help_imports_only_the_command_line(package: str, args: list[str]) -> None:
    code, modules = modules_after_help(package, args)
    assert code == 0
    assert sorted({m.split(".")[0] for m in modules} & HEAVY) == []
    assert sorted(m for m in modules if m.split(".")[0] in OWN and m not in OWN[package]) == []
