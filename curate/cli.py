"""The ``curate`` command line: ``build``, ``inspect`` and ``report``.

User mistakes (missing input, unknown language, bad config) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.build import build
from curate.config import BuildConfig
from curate.report import low_keep_rates, write_report
from schemas import Manifest, UserError
from schemas.config_io import load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Curate multilingual parallel SFT corpora."
)
console = Console()
err = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command("build")
def build_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config; flags override it.")] = None,
    inputs: Annotated[
        list[Path] | None, typer.Option("--input", "-i", help="JSONL, Parquet or datasets dir.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    langs: Annotated[str | None, typer.Option(help="Target languages, comma-separated: de,fr,sw.")] = None,
    anchor_lang: Annotated[str | None, typer.Option(help="Language of the source data.")] = None,
    translator: Annotated[str | None, typer.Option(help="pretranslated, apertium, hf or openai.")] = None,
    executor: Annotated[str | None, typer.Option(help="local (default) or ray.")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join: auto, ray://HOST:10001 or HOST:PORT.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Trial run: stop after N source groups (input.limit).")
    ] = None,
    sample: Annotated[
        float | None, typer.Option(help="Trial run: read this fraction of the groups, by id (input.sample).")
    ] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: a.b=value.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Translate, filter and score source data into Arrow shards with a manifest and a report."""
    flags: dict[str, object] = {
        "inputs": [str(p) for p in inputs] if inputs else None,
        "out": str(out) if out else None,
        "langs": [x for x in langs.split(",") if x.strip()] if langs else None,
        "anchor_lang": anchor_lang,
        "translate.backend": translator,
        "executor.backend": executor,
        "executor.ray.address": ray_address,
        "input.limit": limit,
        "input.sample": sample,
    }
    try:
        cfg = load_config(BuildConfig, config, flags=flags, overrides=sets or [])
        manifest = build(cfg, progress=progress)
    except UserError as e:
        raise fail(str(e)) from None
    kept = sum(s.rows for s in manifest.shards)
    rejected = sum(s.rows for s in manifest.rejects)
    console.print(f"wrote {kept} rows in {len(manifest.shards)} shards, {rejected} rejects → {cfg.out}")
    _print_counts(manifest)
    for line in low_keep_rates(manifest, cfg.min_keep_rate).values():
        err.print(f"[bold yellow]warning:[/] {escape(line)} (min_keep_rate)", highlight=False, soft_wrap=True)


@app.command("inspect")
def inspect_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory of `curate build`.")],
    rows: Annotated[int, typer.Option(help="Example rows to show per language.")] = 2,
    width: Annotated[int, typer.Option(help="Characters of each message to show.")] = 160,
) -> None:
    """Summary of a build and a few rows per language."""
    try:
        manifest = Manifest.load(out)
    except UserError as e:
        raise fail(str(e)) from None
    _print_counts(manifest)
    if not manifest.shards:
        return
    with pa.memory_map(str(out / manifest.shards[0].file)) as source:
        table = pa.ipc.open_file(source).read_all()
    shown: dict[str, int] = {}
    for row in table.to_pylist():
        if shown.get(row["lang"], 0) >= rows:
            continue
        shown[row["lang"]] = shown.get(row["lang"], 0) + 1
        scores = ", ".join(
            f"{k}={row[k]:.2f}" for k in ("lid_prob", "equivalence", "length_ratio") if row[k] is not None
        )
        title = f"{row['group_id']} [{row['lang']}] {row['translator']} {scores}"
        console.rule(escape(title), style="dim")
        for m in row["messages"]:
            text = m["content"].replace("\n", " ⏎ ")
            text = text if len(text) <= width else text[: width - 1] + "…"
            calls = f" tool_calls={json.loads(m['tool_calls'])}" if m["tool_calls"] else ""
            console.print(f"[bold]{m['role']}:[/] {text}{calls}", highlight=False)


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory of `curate build`.")],
    min_keep_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Flag languages that keep less than this share.")
    ] = BuildConfig.model_fields["min_keep_rate"].default,
) -> None:
    """Redraw ``report/`` (markdown and plots) from the manifest and shards."""
    try:
        path = write_report(out, min_keep_rate=min_keep_rate)
    except UserError as e:
        raise fail(str(e)) from None
    console.print(f"wrote {path}")


def _print_counts(manifest: Manifest) -> None:
    table = Table(title=f"anchor {manifest.anchor_lang} → {', '.join(manifest.langs)}")
    for col in ("lang", "read", "kept", "rejected", "top reasons"):
        table.add_column(col, justify="right" if col in ("read", "kept", "rejected") else "left")
    for lang, c in manifest.counts.items():
        top = sorted(c.rejected.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            lang,
            str(c.read),
            str(c.kept),
            str(sum(c.rejected.values())),
            ", ".join(f"{r} {n}" for r, n in top),
        )
    console.print(table)
