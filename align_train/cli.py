"""``align-train``: train on ``curate build`` shards from a YAML config, flags and ``--set`` overrides.

Single process: ``align-train demo.yaml --shards out/ --out runs/demo``.
Several processes: ``torchrun --nproc_per_node 2 -m align_train demo.yaml ...`` (one data-parallel rank each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from pydantic import ValidationError

from align_train.config import ConfigError, TrainConfig, describe
from curate.overrides import apply_overrides, load_yaml

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    config: Annotated[Path | None, typer.Argument(help="YAML file with TrainConfig fields")] = None,
    shards: Annotated[Path | None, typer.Option(help="output folder of `curate build`")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for checkpoints and metrics")] = None,
    model: Annotated[Path | None, typer.Option(help="local Hugging Face model folder")] = None,
    objective: Annotated[str | None, typer.Option(metavar="sft|dpo|orpo")] = None,
    policy: Annotated[str | None, typer.Option(metavar="all|sample|monolingual")] = None,
    max_steps: Annotated[str | None, typer.Option(metavar="N", help="optimizer steps")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value override, repeatable")] = None,
) -> None:
    """Train a causal LM on balanced parallel batches (SFT, DPO or ORPO)."""
    # Choices and numbers arrive as text and TrainConfig checks them, so a bad value gets the same
    # one-line error whether it comes from the file, a flag or --set.
    flags = {
        "shards": shards,
        "out": out,
        "model": model,
        "objective": objective,
        "policy": policy,
        "max_steps": max_steps,
    }
    try:
        cfg = load_config(config, flags=flags, overrides=set_ or [])
        # Imported only now so that --help and config mistakes answer without waiting for torch.
        from align_train.train import train

        train(cfg)
    except ConfigError as e:
        _fail(str(e))


def load_config(path: Path | None, *, flags: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """The config file, then the flags that were given, then ``--set`` entries; validated once.

    Every user mistake (missing file, bad YAML, unknown key, invalid value) becomes a :class:`ConfigError`.
    """
    try:
        data = load_yaml(path)
        data |= {key: value for key, value in flags.items() if value is not None}
        return TrainConfig.model_validate(apply_overrides(data, overrides))
    except ValidationError as e:
        raise ConfigError(describe(e)) from e
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(" ".join(str(e).split())) from e


def _fail(message: str) -> NoReturn:
    typer.echo(f"align-train: error: {message}", err=True)
    raise typer.Exit(2)
