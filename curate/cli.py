"""The ``curate`` command line: ``build``, ``inspect`` and ``report``.

User mistakes (missing input, unknown language, bad config) end with one line on stderr and exit code 2.
Each command imports what it runs when it runs, so ``--help`` answers without loading pyarrow, polars or
the models (tests/test_cli_startup.py keeps it so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas import ConfigError, UserError

if TYPE_CHECKING:
    from schemas import Manifest, ShardInfo

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
    translator: Annotated[
        str | None, typer.Option(help="pretranslated, apertium, hf, ctranslate2 or openai.")
    ] = None,
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
    from curate.build import build
    from curate.config import BuildConfig
    from curate.report import low_keep_rates
    from schemas.config_io import load_config

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
    rejects: Annotated[
        bool, typer.Option("--rejects", help="Show rejected rows (rejects/*.arrow) instead of kept ones.")
    ] = False,
    reasons: Annotated[
        list[str] | None,
        typer.Option(
            "--reason",
            help="With --rejects: only this reason, as stage.reason (lid.wrong_lang) or reason (wrong_lang); "
            "repeat or comma-separate.",
        ),
    ] = None,
    langs: Annotated[
        list[str] | None,
        typer.Option("--lang", help="Only this language (und: rows without one); repeat or comma-separate."),
    ] = None,
) -> None:
    """Summary of a build and a few kept (or, with --rejects, rejected) rows per language."""
    from schemas import Manifest

    try:
        manifest = Manifest.load(out)
        chosen_langs = _choose_langs(manifest, _listed(langs))
        chosen_reasons = _choose_reasons(manifest, _listed(reasons), rejects=rejects)
    except UserError as e:
        raise fail(str(e)) from None
    _print_counts(manifest)
    if rejects:
        wanted = {
            lang: min(rows, sum(manifest.counts[lang].rejected.get(r, 0) for r in chosen_reasons))
            for lang in chosen_langs
        }
        files, chosen = manifest.rejects, chosen_reasons
    else:
        wanted = {lang: min(rows, manifest.counts[lang].kept) for lang in chosen_langs}
        files, chosen = manifest.shards, None
    try:
        shown = _show_rows(out, files, wanted, reasons=chosen, width=width)
    except UserError as e:
        raise fail(str(e)) from None
    if not shown and rows > 0:
        console.print(f"no {'rejected' if rejects else 'kept'} rows match", highlight=False)


def _listed(values: list[str] | None) -> list[str]:
    """Values of a repeatable option, each of which may also be comma-separated."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _choose_langs(manifest: Manifest, asked: list[str]) -> list[str]:
    """The build's languages that ``asked`` names (all of them when it names none)."""
    known = list(manifest.counts)
    chosen: list[str] = []
    for value in asked:
        lang = value if value in known else _normalized(value)
        if lang not in known:
            msg = f"--lang {value!r} is not a language of this build; it has {', '.join(known)}"
            raise ConfigError(msg)
        if lang not in chosen:
            chosen.append(lang)
    return chosen or known


def _normalized(code: str) -> str | None:
    from schemas import normalize_lang

    try:
        return normalize_lang(code)
    except UserError:
        return None


def _choose_reasons(manifest: Manifest, asked: list[str], *, rejects: bool) -> set[str]:
    """The ``stage.reason`` values that ``asked`` names (every one the build has when it names none)."""
    if asked and not rejects:
        msg = "--reason picks rejected rows: add --rejects"
        raise ConfigError(msg)
    known = sorted({reason for counts in manifest.counts.values() for reason in counts.rejected})
    chosen: set[str] = set()
    for value in asked:
        matches = {r for r in known if value in (r, r.split(".", 1)[1])}
        if not matches:
            have = f"its reasons are {', '.join(known)}" if known else "it rejected nothing"
            msg = f"--reason {value!r} matches no reject of this build; {have}"
            raise ConfigError(msg)
        chosen |= matches
    return chosen or set(known)


def _show_rows(
    out: Path, files: list[ShardInfo], wanted: dict[str, int], *, reasons: set[str] | None, width: int
) -> int:
    """Print up to ``wanted[lang]`` rows of each language from ``files`` in order, reading no file more
    than needed; ``reasons`` (``stage.reason``) picks reject rows. Returns how many were printed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas import read_ipc

    left = {lang: n for lang, n in wanted.items() if n > 0}
    shown = 0
    for info in files:
        if not left:
            break
        if info.langs and not set(info.langs) & set(left):
            continue  # none of the languages still wanted (the manifest lists each file's)
        table = read_ipc(out / info.file, "parallel" if reasons is None else "reject")
        keep = pc.is_in(pc.fill_null(table["lang"], "und"), value_set=pa.array(sorted(left)))
        if reasons is not None:
            stage_reason = pc.binary_join_element_wise(table["stage"], table["reason"], ".")
            keep = pc.and_(keep, pc.is_in(stage_reason, value_set=pa.array(sorted(reasons))))
        for row in table.filter(keep).to_pylist():
            lang = row["lang"] or "und"
            if left.get(lang, 0) == 0:
                continue
            left[lang] -= 1
            if not left[lang]:
                del left[lang]
            _print_row(row, width=width)
            shown += 1
    return shown


def _print_row(row: dict[str, Any], *, width: int) -> None:
    """A rule with the row's group, language and scores (or, for a reject, its stage.reason), then the
    start of each message; a reject without messages (a line that could not be read) shows its raw text."""
    lang = row["lang"] or "und"
    if "reason" in row:
        console.rule(escape(f"{row['group_id'] or '-'} [{lang}] {row['stage']}.{row['reason']}"), style="dim")
        if row["detail"]:
            console.print(f"[bold]detail:[/] {escape(_one_line(row['detail']))}", highlight=False)
    else:
        scores = ", ".join(
            f"{k}={row[k]:.2f}" for k in ("lid_prob", "equivalence", "length_ratio") if row[k] is not None
        )
        console.rule(escape(f"{row['group_id']} [{lang}] {row['translator']} {scores}"), style="dim")
    if not row["messages"] and "raw" in row:
        raw = "(none)" if row["raw"] is None else _cut(_one_line(row["raw"]), width)
        console.print(f"[bold]raw:[/] {escape(raw)}", highlight=False)
        return
    for m in row["messages"] or []:
        calls = f" tool_calls={json.loads(m['tool_calls'])}" if m["tool_calls"] else ""
        text = _cut(_one_line(m["content"]), width)
        console.print(f"[bold]{m['role']}:[/] {escape(text)}{escape(calls)}", highlight=False)


def _one_line(text: str) -> str:
    return text.replace("\n", " ⏎ ")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory of `curate build`.")],
    min_keep_rate: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Flag languages that keep less than this share; default: min_keep_rate of `curate build`.",
        ),
    ] = None,
) -> None:
    """Redraw ``report/`` (markdown and plots) and the dataset card (README.md) from the manifest and shards."""
    from curate.card import write_dataset_card
    from curate.config import BuildConfig
    from curate.report import write_report

    if min_keep_rate is None:
        min_keep_rate = BuildConfig.model_fields["min_keep_rate"].default
    try:
        path = write_report(out, min_keep_rate=min_keep_rate)
        card = write_dataset_card(out)
    except UserError as e:
        raise fail(str(e)) from None
    console.print(f"wrote {path} and {card}")


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
