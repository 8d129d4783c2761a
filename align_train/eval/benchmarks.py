"""Standard benchmarks through lm-evaluation-harness, read across languages side by side.

lm-eval runs the tasks: its prompts, few-shot examples, answer extraction and metrics are the ones users
trust and papers report. What a multilingual study needs on top is added here, from lm-eval's results and
per-sample logs:

    xnli_en  xnli_de  xnli_sw  ──►  benchmark "xnli": lm-eval's accuracy per language, the gap of each
       doc 0    doc 0    doc 0         language to the anchor, and per item (the same ``doc_id`` in every
       doc 1    doc 1    doc 1         language) whether the languages gave the same answer, and the
                                       correct one

A task's language is the ISO code in its name (``xnli_de``, ``belebele_deu_Latn``, ``mmmlu_de_de_anatomy``
→ ``de``) or a ``lang`` in the task config's ``metadata``; tasks whose names differ only by that code form
one benchmark, parallel item by item (``doc_id``, and the subject for benchmarks such as MMMLU). A code is
read as a language only when tasks in other languages share the rest of the name, so ``gsm8k_cot`` stays a
task of its own (see :func:`task_places`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from align_train.eval.summary import Agreement
from schemas import ConfigError, DataError, UnknownLanguageError, import_optional, normalize_lang

LM_EVAL = {"feature": "align-train eval --tasks", "install": "pip install 'polyalign[eval]'"}
RESULTS_FILE = "lm_eval_results.json"
SAMPLES_FILE = "lm_eval_samples.jsonl"


@dataclass(frozen=True)
class BenchmarkLang:
    """One language of a benchmark: its task, lm-eval's score and how it compares with the anchor."""

    task: str
    items: int
    accuracy: float | None
    gap: float | None
    relative_gap: float | None
    agreement: Agreement | None  # answers equal to the anchor's, over the items both have


@dataclass(frozen=True)
class BenchmarkReport:
    """A benchmark's languages side by side; ``metric`` is the lm-eval metric reported as accuracy."""

    metric: str
    anchor_lang: str | None
    langs: dict[str, BenchmarkLang]
    mean_gap: float | None
    consistency: Agreement
    consistent_correct: Agreement


def load_tasks(tasks: Sequence[str], *, include_path: Sequence[Path] | None) -> list[Any]:
    """lm-eval's task objects for ``tasks`` (names, groups, tags or wildcards, as on its command line),
    their data loaded. Tasks that do not exist and data that cannot be loaded (offline, not staged) are
    one-line errors, raised before a model is loaded."""
    import_optional("lm_eval", **LM_EVAL)
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in include_path] if include_path else None)
    names = []
    for pattern in tasks:
        found = manager.match_tasks([pattern])
        if not found:
            msg = (
                f"task {pattern!r} is not an lm-evaluation-harness task, group or tag"
                f"{' (nor under --include-path)' if include_path else ''}: `lm-eval ls tasks` lists them; "
                "to score rows of a task of your corpus, use corpus_tasks"
            )
            raise ConfigError(msg)
        names += [name for name in found if name not in names]
    try:
        loaded = manager.load(names)
    except OSError as e:  # datasets' FileNotFoundError, or ConnectionError when the hub is out of reach
        msg = (
            f"the data of {', '.join(names)} cannot be loaded ({' '.join(str(e).split())[:300]}): stage it "
            "locally as docs/evaluation.md shows (an HF datasets cache with HF_DATASETS_OFFLINE=1, or task "
            "YAMLs over local files with --include-path)"
        )
        raise DataError(msg) from e
    return list(loaded["tasks"].values())


def run_lm_eval(
    lm: Any, tasks: list[Any], *, num_fewshot: int | None, limit: int | None, apply_chat_template: bool
) -> dict[str, Any]:
    """lm-eval's results for loaded ``tasks`` with every sample logged (its metrics, no bootstrap)."""
    lm_eval = import_optional("lm_eval", **LM_EVAL)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        log_samples=True,
        apply_chat_template=apply_chat_template,
        bootstrap_iters=0,
    )
    return results


class TaskPlace(NamedTuple):
    """Where a task stands in a benchmark: the benchmark, its language and the part of the benchmark it is
    (``abstract_algebra`` of ``mmmlu``; empty for a benchmark of one task per language)."""

    benchmark: str
    lang: str
    part: str


def summarize_benchmarks(results: Mapping[str, Any], *, anchor_lang: str) -> dict[str, BenchmarkReport]:
    """Benchmarks from lm-eval's ``results``, ``configs`` and ``samples``, languages side by side."""
    members: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for task, place in task_places(results["configs"]).items():
        members[place.benchmark][place.lang][place.part] = task
    return {
        benchmark: _benchmark(results, tasks, anchor_lang=anchor_lang)
        for benchmark, tasks in sorted(members.items())
    }


def task_places(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, TaskPlace]:
    """Each task's benchmark, language and part.

    The language is a span of the task's name that reads as a language code (``de``, ``deu_Latn``,
    ``de_de``), chosen so that the name before it is shared by tasks in the most languages
    (``lambada_openai_mt_de`` is German, not Maltese: ``lambada_openai_mt_*`` spans five languages);
    ``metadata.lang`` in a task's config overrides it. The benchmark is the name before the span, the part
    the name after it. A task whose benchmark would hold one language only is a benchmark of its own, in
    its ``metadata.lang`` or ``und``: a benchmark is read across languages or not at all.
    """
    candidates = {task: _spans(task) for task in configs}
    languages: dict[str, set[str]] = defaultdict(set)  # name before the span → languages found after it
    for spans in candidates.values():
        for lang, _, before, _ in spans:
            languages[before].add(lang)
    out = {}
    for task, config in configs.items():
        declared = (config.get("metadata") or {}).get("lang")
        spans = [c for c in candidates[task] if declared is None or c[0] == normalize_lang(declared)]
        best = max(spans, key=lambda c: (len(languages[c[2]]), c[1]), default=None)
        if best is None or (declared is None and len(languages[best[2]]) < 2):
            out[task] = TaskPlace(task, normalize_lang(declared) if declared else "und", "")
            continue
        lang, _, before, after = best
        out[task] = TaskPlace(before or after or task, lang, after if before else "")
    return out


def _spans(task: str) -> list[tuple[str, int, str, str]]:
    """Every reading of a span of 1 or 2 ``_``-separated tokens of ``task`` as a language: (the language,
    a rank preferring later and longer spans, the name before the span, the name after it)."""
    tokens = task.split("_")
    out = []
    for start in range(len(tokens)):
        for end in (start + 1, start + 2):
            if end > len(tokens):
                continue
            try:
                lang = normalize_lang("_".join(tokens[start:end]))
            except UnknownLanguageError:
                continue
            out.append((lang, 2 * end + end - start, "_".join(tokens[:start]), "_".join(tokens[end:])))
    return out


def _benchmark(
    results: Mapping[str, Any], tasks: dict[str, dict[str, str]], *, anchor_lang: str
) -> BenchmarkReport:
    """One benchmark: ``tasks`` maps each language to its tasks by part."""
    metric = primary_metric(results["results"][next(iter(next(iter(tasks.values())).values()))])
    name, filter_ = metric.split(",", 1)
    answers: dict[str, dict[Hashable, Hashable | None]] = {}
    correct: dict[str, dict[Hashable, bool]] = {}
    accuracy: dict[str, float | None] = {}
    for lang, parts in tasks.items():
        answers[lang], correct[lang] = {}, {}
        for part, task in parts.items():
            config = results["configs"][task]
            for sample in results["samples"].get(task, []):
                if sample["filter"] != filter_:
                    continue  # one entry per filter: read the filter the metric reports
                item = (part, sample["doc_id"])
                answers[lang][item] = sample_answer(sample, config, metric)
                correct[lang][item] = bool(sample[name])
        if len(parts) == 1:  # lm-eval's own number
            score = results["results"][next(iter(parts.values()))].get(metric)
            accuracy[lang] = None if not isinstance(score, int | float) or math.isnan(score) else float(score)
        else:  # the mean over every item of the language's tasks, as lm-eval's size-weighted groups
            marks = list(correct[lang].values())
            accuracy[lang] = sum(marks) / len(marks) if marks else None
    anchor = anchor_lang if anchor_lang in tasks else None
    base = accuracy.get(anchor) if anchor else None
    langs = {}
    for lang, parts in tasks.items():
        gap = None if accuracy[lang] is None or base is None else accuracy[lang] - base
        agreement = None
        if anchor is not None and lang != anchor:
            shared = answers[lang].keys() & answers[anchor].keys()
            agreement = Agreement.of(
                [_same([answers[lang][d], answers[anchor][d]]) for d in sorted(shared, key=str)]
            )
        langs[lang] = BenchmarkLang(
            task=", ".join(parts.values()) if len(parts) <= 3 else f"{len(parts)} tasks",
            items=len(answers[lang]),
            accuracy=accuracy[lang],
            gap=gap,
            relative_gap=None if gap is None or not base else gap / base,
            agreement=agreement,
        )
    items = defaultdict(list)
    for lang in tasks:
        for item, answer in answers[lang].items():
            items[item].append((answer, correct[lang][item]))
    parallel = [pairs for pairs in items.values() if len(pairs) >= 2]
    gaps = [r.gap for lang, r in langs.items() if lang != anchor and r.gap is not None]
    return BenchmarkReport(
        metric=metric,
        anchor_lang=anchor,
        langs=dict(sorted(langs.items(), key=lambda kv: (kv[0] != anchor, kv[0]))),
        mean_gap=sum(gaps) / len(gaps) if gaps else None,
        consistency=Agreement.of([_same([a for a, _ in pairs]) for pairs in parallel]),
        consistent_correct=Agreement.of([all(c for _, c in pairs) for pairs in parallel]),
    )


def primary_metric(task_results: Mapping[str, Any]) -> str:
    """lm-eval's first ``metric,filter`` of a task (the order of its ``metric_list`` and ``filter_list``):
    the number its own tables lead with."""
    for key in task_results:
        if "," in key and not key.split(",", 1)[0].endswith("_stderr"):
            return key
    msg = f"lm-eval reported no metric for this task: {sorted(task_results)}"
    raise DataError(msg)


def sample_answer(sample: Mapping[str, Any], config: Mapping[str, Any], metric: str) -> Hashable | None:
    """What the model answered for one item, comparable across languages: the index of the chosen option
    for ``multiple_choice`` (by log-likelihood; per character for ``acc_norm``), the extracted answer for
    generation. None for no answer (lm-eval's "[invalid]", an empty generation)."""
    responses = sample["filtered_resps"]
    if config.get("output_type") == "multiple_choice":
        scores = [float(r[0] if isinstance(r, list | tuple) else r) for r in responses]
        if metric.startswith("acc_norm"):
            lengths = [max(1, len(str(args[1]))) for args in sample["arguments"]]
            scores = [s / n for s, n in zip(scores, lengths, strict=True)]
        return max(range(len(scores)), key=scores.__getitem__) if scores else None
    answer = responses[0] if isinstance(responses, list | tuple) and responses else responses
    if isinstance(answer, list | tuple):
        answer = answer[0] if answer else None
    text = None if answer is None else str(answer).strip()
    return None if not text or text == "[invalid]" else text


def _same(answers: Sequence[Hashable | None]) -> bool:
    return answers[0] is not None and all(a == answers[0] for a in answers)


def write_lm_eval_files(out: Path, results: Mapping[str, Any]) -> None:
    """lm-eval's own results (as its ``--output_path`` writes them, less the samples) and every sample."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in results.items() if key != "samples"}
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    with (out / SAMPLES_FILE).open("w", encoding="utf-8") as f:
        for task, samples in sorted(results.get("samples", {}).items()):
            for sample in samples:
                f.write(json.dumps({"task": task} | sample, default=str, ensure_ascii=False) + "\n")
