"""``align-train eval``: score a model per language on held-out parallel groups, and on standard
benchmarks through lm-evaluation-harness (:mod:`align_train.eval.benchmarks`).

For every row the *target* is one assistant message (which one depends on the task's scorer: the final
answer for math, the first tool-calling turn for tool use, the last assistant turn otherwise), and the
*prompt* is the conversation before it. Each row gets

- the per-token loss of the target given the prompt, tokenised by the training :class:`Collator` (so
  the loss is the one training minimises, on the answer tokens only), and
- when its task has a scorer, a greedy generation from the prompt whose answer is compared with the
  target's (:mod:`align_train.eval.scoring`); or, with ``scoring: loglikelihood``, whether the target is
  the model's greedy continuation, read from the loss pass (:mod:`align_train.eval.likelihood`).

Per-language metrics, the gap to the anchor language and cross-lingual consistency are computed by
:mod:`align_train.eval.report`.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from align_train.choices import ScorerName, Scoring
from align_train.config import EvalConfig
from align_train.data.collator import Collator
from align_train.data.shard_stream import Group, ShardStream
from align_train.eval.benchmarks import (
    BenchmarkReport,
    load_tasks,
    run_lm_eval,
    summarize_benchmarks,
    write_lm_eval_files,
)
from align_train.eval.generate import generate_greedy, generate_vllm, import_vllm
from align_train.eval.likelihood import ReferenceScore, reference_scores
from align_train.eval.report import card_results, write_report
from align_train.eval.scoring import SCORERS, Scorer, last_assistant
from align_train.eval.summary import EvalReport, RowResult, summarize
from align_train.model_card import record_results
from align_train.modeling.model import compute_dtype, load_model, load_tokenizer
from align_train.run_folder import resolve_model
from schemas import ConfigError, stable_fraction
from schemas.threads import set_threads


@dataclass(frozen=True)
class EvalItem:
    """One row to evaluate: the conversation before the target message, the target, and its scorer."""

    group_id: str
    lang: str
    task: str
    prompt: list[dict[str, Any]]
    target: dict[str, Any]
    scorer: ScorerName | None
    expected: str | None

    def scoring_row(self) -> dict[str, Any]:
        """The row as a preference row whose ``chosen`` is the target: the collator then labels the target
        tokens only, whatever assistant turns the prompt holds."""
        return {
            "group_id": self.group_id,
            "lang": self.lang,
            "kind": "preference",
            "messages": self.prompt,
            "chosen": [self.target],
            "rejected": None,
        }


@dataclass(frozen=True)
class Evaluation:
    """What one ``align-train eval`` found: the held-out report (with ``data``) and the benchmarks (with
    ``tasks``), by benchmark name; and the model card it added them to, if any."""

    held_out: EvalReport | None
    benchmarks: dict[str, BenchmarkReport]
    card: Path | None = None  # the model card the results were added to


def evaluate(cfg: EvalConfig) -> Evaluation:
    """Evaluate as configured, write the report files to ``cfg.out`` and return what was found."""
    started = time.perf_counter()
    set_threads(cfg.threads)
    hf_logging.disable_progress_bar()
    model_dir = resolve_model(cfg.model)
    if cfg.backend == "vllm":
        import_vllm()  # before any work is done
        if model_dir is None or not (model_dir / "config.json").is_file():
            msg = f"backend='vllm' needs a full model folder, got {cfg.model}: merge a LoRA run first (align-train export RUN --out DIR, or export_merged=true) and evaluate DIR"
            raise ConfigError(msg)
    tasks = load_tasks(cfg.tasks, include_path=cfg.include_path) if cfg.tasks else []  # before the model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = compute_dtype(cfg.dtype, device)
    corpus = _corpus(cfg) if cfg.data is not None else None

    tokenizer, model = load_for_eval(model_dir, base_model=cfg.base_model)
    model = model.to(device=device, dtype=dtype).eval()
    collator = Collator(tokenizer, objective="sft", max_length=cfg.max_length)
    if corpus is not None:
        rows = [item.scoring_row() for item in corpus.items]
        references = reference_scores(model, collator, rows, batch_size=cfg.batch_size)
        generated = cfg.scoring == "generate"
        scored = [i for i, item in enumerate(corpus.items) if item.scorer is not None and generated]
        prompts = [_prompt_ids(tokenizer, collator, corpus.items[i], cfg.max_length) for i in scored]
    if cfg.backend == "vllm":
        del model  # vLLM allocates most of the GPU for itself
        torch.cuda.empty_cache()
        model = None
    held_out, results = None, []
    if corpus is not None:
        texts = _generate(cfg, model, tokenizer, prompts, model_dir) if prompts else []
        generations = dict(zip(scored, texts, strict=True))
        results = [
            _result(item, references[i], generations.get(i), cfg.scoring)
            for i, item in enumerate(corpus.items)
        ]
        held_out = summarize(results, anchor_lang=corpus.anchor, langs=corpus.langs, scoring=cfg.scoring)
    benchmarks: dict[str, BenchmarkReport] = {}
    lm_eval_results = None
    if tasks:
        lm_eval_results = run_lm_eval(
            _lm_eval_model(cfg, model, tokenizer, model_dir, device),
            tasks,
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            apply_chat_template=cfg.apply_chat_template,
        )
        benchmarks = summarize_benchmarks(lm_eval_results, anchor_lang=cfg.anchor_lang)
    header = {
        "model": None if cfg.model is None else str(cfg.model),
        "checkpoint": None if model_dir is None else str(model_dir),
        "data": None if cfg.data is None else str(cfg.data),
        "split": cfg.split,
        "holdout": cfg.holdout,
        "backend": cfg.backend,
        "scoring": cfg.scoring,
        "max_new_tokens": cfg.max_new_tokens,
        "truncated": collator.stats["truncated"],
        "wall_s": time.perf_counter() - started,
        "config": cfg.model_dump(mode="json"),
    }
    if lm_eval_results is not None:
        write_lm_eval_files(cfg.out, lm_eval_results)
    write_report(cfg.out, held_out, results, benchmarks, header=header)
    # The scored folder's card, when align-train wrote it (a checkpoint, a merged or converted model).
    card = None
    if model_dir is not None:
        card = record_results(model_dir, card_results(held_out, benchmarks, data=cfg.data, split=cfg.split))
    return Evaluation(held_out, benchmarks, card)


class _Corpus(NamedTuple):
    anchor: str
    langs: list[str]
    items: list[EvalItem]


def _corpus(cfg: EvalConfig) -> _Corpus:
    """The held-out rows to score, read before the model loads so that a mistake costs nothing."""
    assert cfg.data is not None
    stream = ShardStream(
        cfg.data,
        shuffle_buffer=1,
        langs=None if cfg.langs is None else cfg.langs[1:],  # the anchor comes first, always kept
        split=cfg.split,
        holdout=cfg.holdout,
    )
    anchor = stream.manifest.anchor_lang
    groups = _select(stream, cfg)
    items = [item for group in groups for row in group.rows if (item := eval_item(row, cfg)) is not None]
    if not items:
        msg = (
            f"no row of {cfg.data} (split {cfg.split}, holdout {cfg.holdout}, corpus_tasks "
            f"{cfg.corpus_tasks}) has an assistant answer to score"
        )
        raise ConfigError(msg)
    return _Corpus(anchor, [anchor, *sorted(lang for lang in stream.langs if lang != anchor)], items)


def _generate(
    cfg: EvalConfig,
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    model_dir: Path | None,
) -> list[str]:
    """Greedy answers to the scored items' prompts, with vLLM over the model's folder or transformers."""
    if cfg.backend == "vllm":
        assert model_dir is not None
        return generate_vllm(model_dir, prompts, max_new_tokens=cfg.max_new_tokens, dtype=cfg.dtype)
    assert model is not None
    return generate_greedy(
        model,
        tokenizer,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        lookahead=cfg.lookahead,
    )


def _lm_eval_model(
    cfg: EvalConfig,
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: Path | None,
    device: torch.device,
) -> Any:
    """The model as lm-eval's ``LM``: the one already loaded (transformers), or vLLM over its folder."""
    if cfg.backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(
            pretrained=str(model_dir), dtype={"bf16": "bfloat16", "fp32": "float32"}.get(cfg.dtype, "auto")
        )
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=str(device))


def _result(item: EvalItem, reference: ReferenceScore, generation: str | None, scoring: Scoring) -> RowResult:
    """The row's result. Under ``loglikelihood`` the answer is known only when the reference is the greedy
    continuation: the generation would then be the reference, whose answer is ``expected``."""
    if scoring == "loglikelihood":
        predicted = item.expected if reference.greedy else None
    else:
        scorer = SCORERS[item.scorer] if item.scorer is not None and generation is not None else None
        predicted = None if scorer is None else scorer.predicted(generation)
    return RowResult(
        group_id=item.group_id,
        lang=item.lang,
        task=item.task,
        nll=reference.nll,
        tokens=reference.tokens,
        scorer=item.scorer,
        expected=item.expected,
        predicted=predicted,
        generation=generation,
    )


def load_for_eval(
    model_dir: Path | None, *, base_model: Path | None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model of a model folder (a full fine-tune's checkpoint is one), of a peft adapter folder
    over its base model (a LoRA checkpoint is one; merged here), or the tiny demo model."""
    if model_dir is None or (model_dir / "config.json").is_file():
        tokenizer = load_tokenizer(model_dir)
        return tokenizer, load_model(model_dir, tokenizer)
    from peft import PeftModel

    base = base_model or _adapter_base(model_dir)
    tokenizer = load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base)
    merged = PeftModel.from_pretrained(load_model(base, tokenizer), model_dir).merge_and_unload()
    return tokenizer, merged


def _adapter_base(adapter_dir: Path) -> Path:
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base or not (Path(base) / "config.json").is_file():
        msg = f"adapter {adapter_dir} names base model {base!r}, which is not a local model folder: set base_model"
        raise ConfigError(msg)
    return Path(base)


def eval_item(row: dict[str, Any], cfg: EvalConfig) -> EvalItem | None:
    """The row's target and prompt, or None when it has no assistant message after a prompt or its task
    is not evaluated. A row whose reference answer cannot be read is kept for the loss, unscored."""
    if cfg.corpus_tasks is not None and row["task"] not in cfg.corpus_tasks:
        return None
    conversation = list(row["messages"]) + list(row["chosen"] or [])
    name = cfg.scorers.get(row["task"])
    scorer: Scorer | None = SCORERS[name] if name is not None else None
    target = (scorer.target if scorer is not None else last_assistant)(conversation)
    if not target:  # None, or an assistant message with nothing before it
        return None
    expected = scorer.expected(conversation[target]) if scorer is not None else None
    return EvalItem(
        group_id=row["group_id"],
        lang=row["lang"],
        task=row["task"],
        prompt=conversation[:target],
        target=conversation[target],
        scorer=name if expected is not None else None,
        expected=expected,
    )


def _select(stream: ShardStream, cfg: EvalConfig) -> list[Group]:
    """The groups to evaluate: those with a row to score (of the chosen tasks), then with ``max_groups``
    the first by holdout hash, so the subset does not depend on how the corpus is sharded. Filters come
    before the limit: ``max_groups=3`` with ``tasks=[math]`` is three math groups."""
    groups: Iterable[Group] = (g for g in stream if any(eval_item(row, cfg) for row in g.rows))
    if cfg.require_all_langs:
        wanted = set(stream.langs) | {stream.manifest.anchor_lang}
        groups = (g for g in groups if wanted <= set(g.langs))
    if cfg.max_groups is not None:
        return heapq.nsmallest(cfg.max_groups, groups, key=lambda g: stable_fraction(g.group_id))
    return list(groups)


def _prompt_ids(
    tokenizer: PreTrainedTokenizerBase, collator: Collator, item: EvalItem, max_length: int
) -> list[int]:
    """The prompt's tokens; a prompt longer than ``max_length`` keeps its end, next to the answer."""
    ids = tokenizer(collator.prompt(item.prompt), add_special_tokens=False)["input_ids"]
    return ids[-max_length:]
