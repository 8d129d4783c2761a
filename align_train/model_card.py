"""``README.md`` of every model folder ``align-train`` writes: its Hugging Face model card.

A checkpoint (``OUT/checkpoints/step-N``: a model, or a peft adapter), the merged model of a LoRA run and
the folder ``from-gguf`` makes each carry one. Its metadata has ``base_model``, ``library_name``
(``transformers``, or ``peft`` for an adapter), ``language``, ``datasets`` (the sha256 of the build's
``manifest.json``) and ``pipeline_tag``; its body says how the model was trained: objective, batch policy,
coupled terms, steps and tokens.

``align-train eval`` adds what it measured to the card of the folder it scored, in the two places the
Hub reads: ``model-index`` metadata (per language, accuracy, loss and gap to the anchor; over languages,
consistency), which the Hub shows as evaluation results, and a table in the body. A later evaluation of
the same data and split replaces the earlier one; others stay. Only cards this module wrote are updated
(a base model's own card is never touched).

Everything the body is made from is kept in the card's ``polyalign`` metadata (:class:`ModelFacts`), so the
card is written again (with results, or for the merged model) from the card alone: a checkpoint copied
elsewhere keeps all it needs. Training, export and evaluation import this module; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import DataError, Manifest, is_valid_lang, sha256_file
from schemas.hub_card import CARD_FILE, card_text, hub_languages, license_fields, read_card
from schemas.records import MANIFEST_FILE

FACTS_KEY = "polyalign"
"""The card's metadata key that holds its :class:`ModelFacts`."""

# Settings of a run that say how it ran, not what it learned: left out of the card.
_MECHANICS = frozenset(
    {
        "shards",
        "out",
        "model",
        "resume",
        "threads",
        "report_to",
        "tracking_project",
        "log_every",
        "save_every",
        "prefetch",
        "prefetch_worker",
        "export_merged",
    }
)
# Settings that couple the rows of a group inside a batch (a representation or consistency term): every
# setting with one of these prefixes is listed as a coupled term.
COUPLED_PREFIXES = ("alignment_",)


class ModelFacts(BaseModel):
    """What a model folder is and how it was made: the ``polyalign`` metadata of its card."""

    model_config = ConfigDict(extra="ignore")

    origin: Literal["training", "merge", "gguf"]
    name: str = Field(description="the model's name in model-index: its run and step, or its folder")
    base_model: str | None = Field(
        None, description="the folder (or Hub id) it was trained from; None: the tiny demo model"
    )
    adapter: bool = Field(False, description="a peft adapter on base_model, not a whole model")
    license: dict[str, str] = Field(default_factory=dict, description="license fields, where known")
    languages: list[str] = Field(default_factory=list, description="the anchor language first")
    dataset: str | None = Field(None, description="sha256 of the build's manifest.json")
    shards: str | None = Field(None, description="the build's folder, as the run was given it")
    step: int | None = None
    tokens: int | None = Field(None, description="tokens of the sequences trained on, over all ranks")
    world_size: int | None = None
    settings: dict[str, Any] = Field(default_factory=dict, description="the run's settings")
    merged_from: str | None = Field(None, description="the checkpoint whose adapter was merged")
    gguf: str | None = Field(None, description="the GGUF file a converted folder was made from")
    gguf_sha256: str | None = None

    def at(self, *, step: int, tokens: int) -> ModelFacts:
        """The facts of a run (named after it) for its checkpoint of ``step``, after ``tokens`` tokens."""
        return self.model_copy(update={"name": f"{self.name} step {step}", "step": step, "tokens": tokens})


def training_facts(
    settings: Mapping[str, Any],
    *,
    run: str,
    shards: Path,
    base_model: Path | None,
    adapter: bool,
    world_size: int,
) -> ModelFacts:
    """The facts of a training run, for :meth:`ModelFacts.at` a step: ``settings`` are the run's
    (``TrainConfig`` as JSON), ``run`` its name, ``shards`` the build it trains on."""
    manifest = Manifest.load(shards)
    langs = settings.get("langs") or manifest.langs
    return ModelFacts(
        origin="training",
        name=run,
        base_model=None if base_model is None else str(base_model),
        adapter=adapter,
        license=base_license(base_model),
        languages=[manifest.anchor_lang, *(x for x in langs if x != manifest.anchor_lang)],
        dataset=sha256_file(shards / MANIFEST_FILE),
        shards=str(shards),
        world_size=world_size,
        settings={k: v for k, v in settings.items() if k not in _MECHANICS},
    )


def gguf_facts(
    gguf: Path, *, name: str, base_model: str | None, license_name: str | None, languages: list[str]
) -> ModelFacts:
    """The facts of a folder converted from ``gguf``, with what the file's metadata says of its licence and
    languages, and the Hub model it is a quantization of (``base_model``), where known."""
    return ModelFacts(
        origin="gguf",
        name=name,
        base_model=base_model,
        license={} if license_name is None else license_fields(license_name),
        languages=[x for x in languages if is_valid_lang(x)],
        gguf=gguf.name,
        gguf_sha256=sha256_file(gguf),
    )


def base_license(base_model: Path | None) -> dict[str, str]:
    """The licence a base model folder's own card states (``license`` and, for ``other``, its name and
    link), or nothing: a fine-tune is under its base model's licence."""
    if base_model is None or not (base_model / CARD_FILE).is_file():
        return {}
    try:
        metadata, _ = read_card((base_model / CARD_FILE).read_text(encoding="utf-8"), where=str(base_model))
    except DataError:
        return {}
    keys = ("license", "license_name", "license_link")
    return {k: str(metadata[k]) for k in keys if isinstance(metadata.get(k), str)}


def write_model_card(folder: Path, facts: ModelFacts, *, results: list[dict[str, Any]] | None = None) -> Path:
    """Write ``folder/README.md`` for ``facts`` and model-index ``results`` (Hub format); returns its path.

    It replaces what ``save_pretrained`` may have put there (peft writes a stub card into an adapter folder).
    """
    path = folder / CARD_FILE
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(model_card(facts, results=results or []), encoding="utf-8")
    tmp.replace(path)
    return path


def read_model_card(folder: Path) -> tuple[ModelFacts, list[dict[str, Any]]] | None:
    """The facts and model-index results of a card this module wrote; None for a folder without one."""
    path = folder / CARD_FILE
    if not path.is_file():
        return None
    metadata, _ = read_card(path.read_text(encoding="utf-8"), where=str(path))
    if not isinstance(metadata.get(FACTS_KEY), dict):
        return None  # not ours: a base model's card, or peft's stub
    try:
        facts = ModelFacts.model_validate(metadata[FACTS_KEY])
    except ValidationError as e:
        msg = (
            f"{path}: its {FACTS_KEY!r} metadata is damaged ({e.error_count()} errors): write the card again"
        )
        raise DataError(msg) from e
    index = metadata.get("model-index")
    results = (
        index[0].get("results") if isinstance(index, list) and index and isinstance(index[0], dict) else []
    )
    return facts, list(results or [])


def merged_facts(checkpoint: Path, *, base_model: Path | None) -> ModelFacts:
    """The facts of the merged model of a LoRA ``checkpoint``: the checkpoint's, as a whole model."""
    read = read_model_card(checkpoint)
    facts = read[0] if read is not None else ModelFacts(origin="training", name=checkpoint.name)
    return facts.model_copy(
        update={
            "origin": "merge",
            "name": f"{facts.name} (merged)",
            "adapter": False,
            "merged_from": str(checkpoint),
            "base_model": None if base_model is None else str(base_model.resolve()),
            "license": base_license(base_model) or facts.license,
        }
    )


def record_results(folder: Path, results: list[dict[str, Any]]) -> Path | None:
    """Add model-index ``results`` to the card of ``folder`` when this module wrote it; returns the card's
    path, or None when the folder has no such card. Earlier results of the same dataset and split go."""
    read = read_model_card(folder)
    if read is None:
        return None
    facts, earlier = read
    replaced = {_result_key(r) for r in results}
    kept = [r for r in earlier if _result_key(r) not in replaced]
    return write_model_card(folder, facts, results=kept + results)


def _result_key(result: Mapping[str, Any]) -> tuple[Any, ...]:
    dataset = result.get("dataset") or {}
    return dataset.get("type"), dataset.get("split")


def language_results(
    *,
    dataset_name: str,
    dataset_type: str,
    split: str | None,
    anchor_lang: str | None,
    langs: Mapping[str, Mapping[str, float | None]],
    overall: Mapping[str, float | None],
) -> list[dict[str, Any]]:
    """model-index results of one evaluation: one result per language (its ``config``) with the metrics of
    ``langs[lang]`` (``accuracy``, ``loss``, ``gap``), and one over languages with those of ``overall``
    (``consistency``, ``consistent_correct``, ``mean_gap``). Metrics that are None are left out."""
    out = []
    for lang, metrics in langs.items():
        listed = _metrics(metrics, lang=lang, anchor_lang=anchor_lang)
        if listed:
            out.append(_result(dataset_name, dataset_type, split, lang, listed))
    listed = _metrics(overall, lang=None, anchor_lang=anchor_lang)
    if listed:
        out.append(_result(dataset_name, dataset_type, split, None, listed))
    return out


_METRIC_NAMES = {
    "accuracy": "accuracy",
    "loss": "loss (nats per answer token)",
    "gap": "accuracy gap to {anchor}",
    "consistency": "cross-lingual consistency",
    "consistent_correct": "consistent and correct",
    "mean_gap": "mean accuracy gap to {anchor}",
}


def _metrics(values: Mapping[str, float | None], *, lang: str | None, anchor_lang: str | None) -> list[dict]:
    out = []
    for key, value in values.items():
        if value is None or (key == "gap" and lang == anchor_lang):  # the anchor's gap is 0 by definition
            continue
        name = _METRIC_NAMES.get(key, key).format(anchor=anchor_lang or "the anchor")
        out.append({"type": key, "value": round(float(value), 6), "name": f"{lang} {name}" if lang else name})
    return out


def _result(name: str, type_: str, split: str | None, config: str | None, metrics: list[dict]) -> dict:
    dataset: dict[str, str] = {"name": name, "type": type_}
    if config is not None:
        dataset["config"] = config
    if split is not None:
        dataset["split"] = split
    return {
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": dataset,
        "metrics": metrics,
    }


def model_card(facts: ModelFacts, *, results: list[dict[str, Any]]) -> str:
    """The card of ``facts`` with model-index ``results``: metadata, then the body."""
    return card_text(_metadata(facts, results), _body(facts, results))


def _metadata(facts: ModelFacts, results: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if facts.base_model is not None:
        metadata["base_model"] = facts.base_model
        if facts.origin == "gguf":
            metadata["base_model_relation"] = "quantized"  # its weights are the GGUF's, rounding and all
    metadata["library_name"] = "peft" if facts.adapter else "transformers"
    if facts.languages:
        metadata["language"] = hub_languages(facts.languages)
    if facts.license:
        metadata |= facts.license
    if facts.dataset is not None:
        metadata["datasets"] = [facts.dataset]
    metadata["pipeline_tag"] = "text-generation"
    objective = facts.settings.get("objective")
    lora = bool(facts.settings.get("lora", {}).get("enabled"))
    metadata["tags"] = ["polyalign", *([objective] if objective else []), *(["lora"] if lora else [])]
    metadata[FACTS_KEY] = facts.model_dump(mode="json", exclude_defaults=True)
    if results:
        metadata["model-index"] = [{"name": facts.name, "results": results}]
    return metadata


def _body(facts: ModelFacts, results: list[dict[str, Any]]) -> str:
    lines = [f"# {facts.name}", "", *_intro(facts), *_use(facts)]
    if facts.origin != "gguf":
        lines += [*_training(facts), *_data(facts)]
    lines += _evaluation(facts, results)
    return "\n".join(lines)


def _base(facts: ModelFacts) -> str:
    if facts.base_model is None:
        seed = facts.settings.get("seed", 0)
        return f"the tiny randomly initialised demo model (2-layer Llama, seed {seed})"
    return f"`{facts.base_model}`"


def _intro(facts: ModelFacts) -> list[str]:
    if facts.origin == "gguf":
        return [
            f"`{facts.gguf}` (sha256 `{facts.gguf_sha256}`) as a Hugging Face model folder, written by "
            "`align-train from-gguf`: the weights dequantized to float32 from the file's quantization (so "
            "they carry its rounding), the tokenizer and chat template from the same file.",
            "",
        ]
    s = facts.settings
    langs = facts.languages
    trained = f"by `align-train` (polyalign) with the `{s.get('objective')}` objective"
    if facts.origin == "merge":
        what = (
            f"The adapter of `{facts.merged_from}` merged into {_base(facts)}: a plain model folder, "
            f"trained {trained}"
        )
    elif facts.adapter:
        what = f"A LoRA adapter on {_base(facts)}, trained {trained}"
    else:
        base = _base(facts)
        what = f"{base[0].upper()}{base[1:]}, fine-tuned {trained}"
    corpus = f"`{langs[0]}` and its translations into {', '.join(f'`{x}`' for x in langs[1:])}"
    text = (
        f"{what} on a parallel corpus: {corpus if len(langs) > 1 else ', '.join(f'`{x}`' for x in langs)}, "
        f"{_policy(s)}. {facts.step} optimizer steps, {_count(facts.tokens)} tokens."
    )
    return [text, ""]


def _use(facts: ModelFacts) -> list[str]:
    lines = ["## Use", "", "```python"]
    if facts.adapter:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            "# loads base_model (the folder named in adapter_config.json), then this adapter",
            'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        ]
    lines += [
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")  # with its chat template',
        "```",
        "",
    ]
    if facts.adapter and facts.base_model is None:
        lines += [
            "Its base is the demo model, which `align-train` builds from its seed: `align-train eval` and "
            "`align-train export` load this adapter, other tools cannot.",
            "",
        ]
    elif facts.base_model is not None and facts.origin != "gguf":
        lines += [
            "`base_model` is the folder the run was given; before uploading the card, set it to the base "
            "model's Hub id if it has one.",
            "",
        ]
    return lines


def _policy(s: Mapping[str, Any]) -> str:
    policy = s.get("policy")
    if policy == "all":
        return "every language of a parallel group in the same batch (policy `all`)"
    if policy == "sample":
        return (
            f"each batch holding the anchor and {s.get('k')} of its translations drawn with temperature "
            f"{s.get('temperature')} (policy `sample`)"
        )
    if policy == "shuffled":
        return (
            "each optimizer step holding the rows per language of policy `all` with no two rows of a group "
            "in the same step (policy `shuffled`, the control)"
        )
    if policy == "monolingual":
        return "each batch holding rows of one language (policy `monolingual`, the ablation baseline)"
    return f"batches of policy `{policy}`"


def _objective(s: Mapping[str, Any]) -> str:
    objective = s.get("objective")
    if objective == "sft":
        return "`sft`: cross-entropy on the assistant tokens"
    if objective == "dpo":
        reference = s.get("reference")
        precomputed = ", precomputed" if s.get("precompute_reference") else ""
        return f"`dpo`: β {s.get('dpo_beta')}, reference {reference}{precomputed}"
    if objective == "orpo":
        return f"`orpo`: β {s.get('orpo_beta')}"
    return f"`{objective}`"


def _coupled(s: Mapping[str, Any]) -> str:
    terms = {k: v for k, v in s.items() if k.startswith(COUPLED_PREFIXES)}
    listed = ", ".join(f"`{k}` {v}" for k, v in terms.items())
    if not terms.get("alignment_weight"):
        return f"none: each row's loss is its own ({listed})" if listed else "none"
    return listed


def _training(facts: ModelFacts) -> list[str]:
    s = facts.settings
    lora = s.get("lora") or {}
    model = (
        f"LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, on "
        f"{', '.join(f'`{m}`' for m in lora.get('target_modules', []))}; the base frozen"
        if lora.get("enabled")
        else "full fine-tune"
    )
    steps = f"{facts.step}" + (f" of {s['max_steps']}" if s.get("max_steps") else "")
    rows = [
        ("objective", _objective(s)),
        ("batch policy", _policy(s)),
        (
            "batch",
            f"{s.get('groups_per_batch')} groups per micro-batch × {s.get('grad_accum')} accumulated × "
            f"{facts.world_size} rank{'s' * (facts.world_size != 1)}",
        ),
        ("coupled terms", _coupled(s)),
        ("model", model),
        (
            "optimizer",
            f"AdamW, lr {s.get('lr')}, {s.get('warmup_steps')} warm-up steps then cosine, weight decay "
            f"{s.get('weight_decay')}, gradient norm clipped at {s.get('max_grad_norm')}",
        ),
        ("sequences", f"up to {s.get('max_length')} tokens, packing {s.get('pack')}"),
        ("seed", str(s.get("seed"))),
        ("steps", steps),
        ("tokens", f"{_count(facts.tokens)} (of the sequences trained on, all ranks)"),
    ]
    lines = ["## Training", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", f"Every setting of the run is in this card's metadata (`{FACTS_KEY}.settings`).", ""]
    return lines


def _data(facts: ModelFacts) -> list[str]:
    holdout = facts.settings.get("holdout") or 0
    held = (
        f" A fixed {holdout:.0%} of the groups (by a hash of `group_id`) was held out of training: "
        f"`align-train eval --model path/to/this/folder --data {facts.shards}` scores those."
        if holdout
        else " No group was held out."
    )
    return [
        "## Data",
        "",
        f"The `curate build` folder `{facts.shards}`, whose `manifest.json` has sha256 `{facts.dataset}` "
        f"(the card's `datasets`); its own dataset card says how its rows were made.{held}",
        "",
    ]


def _evaluation(facts: ModelFacts, results: list[dict[str, Any]]) -> list[str]:
    lines = ["## Evaluation", ""]
    if not results:
        where = f" --data {facts.shards}" if facts.shards else " --data BUILD"
        return [
            *lines,
            f"Not evaluated yet: `align-train eval --model path/to/this/folder{where}` scores it per "
            "language and adds the results here and to the card's `model-index`.",
            "",
        ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"]["name"], *_result_key(r)), []).append(r)
    for (name, type_, split), group in groups.items():
        lines += [f"### {name}", "", f"Dataset `{type_}`" + (f", split `{split}`." if split else "."), ""]
        per_lang = {r["dataset"]["config"]: _values(r) for r in group if "config" in r["dataset"]}
        columns = [c for c in ("accuracy", "gap", "loss") if any(c in v for v in per_lang.values())]
        if per_lang and columns:
            lines += ["| lang | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            for lang, values in per_lang.items():
                cells = [_format(c, values.get(c)) for c in columns]
                lines.append(f"| {lang} | " + " | ".join(cells) + " |")
            lines.append("")
        for r in group:
            if "config" not in r["dataset"]:
                lines += [
                    ", ".join(f"{m['name']}: {_format(m['type'], m['value'])}" for m in r["metrics"]),
                    "",
                ]
    return lines


def _values(result: Mapping[str, Any]) -> dict[str, float]:
    return {m["type"]: m["value"] for m in result.get("metrics", [])}


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in ("gap", "mean_gap"):
        return f"{value * 100:+.1f} pts"
    if metric == "loss":
        return f"{value:.3f}"
    return f"{value:.1%}"


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
