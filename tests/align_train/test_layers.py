"""Imports follow the layers of ``align_train`` (docs/architecture.md): data → model → objectives → training,
evaluation beside training. Read from the source with ``ast`` (nothing is imported), lazy imports inside
functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import align_train

PACKAGE = Path(align_train.__file__).parent

LAYERS: dict[str, tuple[str, ...]] = {
    # Settings, the types between layers and lookups that every layer may read.
    "base": ("choices", "config", "split", "run_folder", "threads", "distributed", "model_card"),
    "data": ("data",),
    "model": ("modeling",),
    "objectives": ("training.losses", "training.coupled", "training.objectives", "training.reference"),
    "training": ("training",),
    "evaluation": ("eval",),
    # The commands, which nothing imports.
    "commands": ("cli", "sweep", "__main__"),
}
ALLOWED: dict[str, set[str]] = {
    "base": {"base"},
    "data": {"base", "data"},
    "model": {"base", "data", "model"},
    "objectives": {"base", "data", "model", "objectives"},
    "training": {"base", "data", "model", "objectives", "training"},
    "evaluation": {"base", "data", "model", "evaluation"},
    "commands": set(LAYERS),
}


def layer(module: str) -> str | None:
    """The layer of ``align_train.<module>``: that of its longest prefix in :data:`LAYERS` (a package's
    modules share its layer unless one is named)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        for name, members in LAYERS.items():
            if prefix in members:
                return name
    return None


def imported(path: Path) -> set[str]:
    """The ``align_train`` modules that ``path`` imports, as names relative to the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from align_train.data import collator`` imports the module align_train.data.collator.
            names = [
                f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name.removeprefix("align_train.") for name in names if name.startswith("align_train.")}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py"
    }


def test_every_module_has_a_layer() -> None:
    missing = [name for name in modules() if layer(name) is None]
    assert not missing, f"give {missing} a layer in LAYERS (tests/align_train/test_layers.py)"


def test_imports_go_down_the_layers_and_evaluation_imports_no_training_code() -> None:
    wrong = []
    for name, path in modules().items():
        own = layer(name)
        for target in sorted(imported(path)):
            if own is not None and layer(target) not in ALLOWED[own]:
                wrong.append(f"{name} ({own}) imports {target} ({layer(target)})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_imports_anywhere_in_a_module(tmp_path: Path) -> None:
    source = tmp_path / "evaluate.py"
    source.write_text(
        "import align_train.data.batch\n"
        "from align_train.data import collator\n"
        "from align_train.modeling.logps import sequence_logps\n"
        "def f():\n"
        "    from align_train.training.checkpoint import latest_checkpoint\n",
        encoding="utf-8",
    )
    assert imported(source) == {"data.batch", "data.collator", "modeling.logps", "training.checkpoint"}
    assert layer("training.losses") == "objectives" and layer("training.train") == "training"
    assert layer("training.checkpoint") not in ALLOWED[layer("eval.evaluate")]
