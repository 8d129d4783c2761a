"""``align-train eval`` end to end with the tiny model: model loading, split defaults, the report files."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align_train.config import EvalConfig
from align_train.data.batch import IGNORE_INDEX, ParallelBatch
from align_train.data.collator import Collator
from align_train.eval.evaluate import evaluate, load_for_eval
from align_train.eval.report import METRICS_FILE, PREDICTIONS_FILE
from align_train.eval.summary import RowResult, summarize
from align_train.modeling.logps import sequence_logps
from align_train.modeling.model import load_tokenizer
from schemas import stable_fraction
from tests import ROOT
from tests.align_train.corpus import read_groups
from tests.rows import message, parallel_row

torch.set_num_threads(1)


def test_adapter_folder_is_merged_into_its_base_model(model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    tokenizer, base = load_for_eval(model_dir, base_model=None)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tokenizer("Two plus two is four.")["input_ids"]])
    expected = peft_model(input_ids=ids).logits
    _, merged = load_for_eval(tmp_path / "adapter", base_model=None)  # the base named in adapter_config.json
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_split_defaults_to_the_held_out_groups_of_the_training_run(
    shard_dir: Path, preference_shard_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "config.json").write_text("{}")
    (run / "checkpoints" / "latest").write_text("step-000002")
    (run / "config.yaml").write_text(f"shards: {shard_dir}\nholdout: 0.3\n")
    for model in (run, run / "checkpoints" / "step-000002"):
        cfg = EvalConfig(model=model, data=shard_dir, out=tmp_path / "eval")
        assert (cfg.split, cfg.holdout) == ("eval", 0.3)
    explicit = EvalConfig(model=run, data=shard_dir, out=tmp_path / "eval", split="all", holdout=0.1)
    assert (explicit.split, explicit.holdout) == ("all", 0.1)
    same_data = EvalConfig(model=run, data=shard_dir / "shards" / "..", out=tmp_path)
    assert (same_data.split, same_data.holdout) == ("eval", 0.3)  # the same folder by another path
    other_data = EvalConfig(model=run, data=preference_shard_dir, out=tmp_path)
    assert (other_data.split, other_data.holdout) == ("all", 0.0)  # a corpus the run never saw
    no_run = EvalConfig(data=shard_dir, out=tmp_path)
    assert (no_run.split, no_run.holdout) == ("all", 0.0)


@pytest.mark.slow
def test_eval_on_the_demo_shards_end_to_end(demo_shard_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    cfg = EvalConfig(
        model=model_dir, data=demo_shard_dir, out=tmp_path, holdout=0.4, max_new_tokens=4, batch_size=8
    )
    evaluate(cfg)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    predictions = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    held = {g: rows for g, rows in read_groups(demo_shard_dir).items() if stable_fraction(g) < 0.4}
    assert metrics["groups"] == len(held) and sum(len(rows) for rows in held.values()) == len(predictions)
    assert {p["group_id"] for p in predictions} == set(held)
    assert list(metrics["langs"]) == ["en", "de", "es", "fr"]  # the anchor first
    for lang, m in metrics["langs"].items():
        mine = [p for p in predictions if p["lang"] == lang]
        assert m["overall"]["rows"] == len(mine)
        assert m["overall"]["scored"] == sum(p["task"] in ("math", "tool_calling") for p in mine) > 0
        assert m["overall"]["correct"] == sum(p["correct"] is True for p in mine)
        # A random model over a 49152-token vocabulary: about ln(49152) = 10.80 nats per answer token.
        assert m["overall"]["loss"] == pytest.approx(math.log(49152), abs=0.5)
    assert metrics["langs"]["en"]["gap"] == 0.0
    for p in predictions:
        assert p["correct"] == (None if p["scorer"] is None else p["predicted"] == p["expected"])
        assert p["tokens"] > 0 and (p["generation"] is None) == (p["scorer"] is None)
    assert all(p["expected"].startswith('[{"arguments"') for p in predictions if p["task"] == "tool_calling")
    # Recomputing from predictions.jsonl gives the written report.
    rows = [RowResult(**{k: v for k, v in p.items() if k != "correct"}) for p in predictions]
    again = summarize(rows, anchor_lang="en", langs=["en", "de", "es", "fr"])
    assert again.consistency.groups == metrics["consistency"]["groups"] > 0
    assert again.langs["fr"].gap == metrics["langs"]["fr"]["gap"]
    # The loss is the one training computes: a [user, assistant] math row scored as an SFT row.
    tokenizer, model = load_for_eval(model_dir, base_model=None)
    collator = Collator(tokenizer, objective="sft", max_length=2048)
    for p in [p for p in predictions if p["task"] == "math"][:3]:
        source = next(r for r in held[p["group_id"]] if r["lang"] == p["lang"])
        batch = collator(ParallelBatch.of([source]))
        with torch.no_grad():
            logits = model(**batch.model_inputs()).logits
        logps = sequence_logps(logits, batch.labels, batch.seq_ids, batch.num_seqs)
        assert p["tokens"] == int(logps.counts[0]) and p["nll"] == pytest.approx(
            -float(logps.sums[0]), rel=1e-4
        )
    report = (tmp_path / "report.md").read_text()
    assert "| en (anchor) |" in report and "Cross-lingual consistency" in report
    assert (tmp_path / "accuracy.png").stat().st_size > 5000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "align_train", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_routes_subcommands_and_reports_user_errors_on_one_line(shard_dir: Path, tmp_path: Path) -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and all(name in result.stdout for name in ("train", "eval", "sweep"))
    result = run_cli("eval", "--data", str(shard_dir), "--out", str(tmp_path), "--split", "eval")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        "align-train: error: split='eval' selects the held-out groups, but holdout=0 holds none out: "
        "set holdout > 0 or split='all'\n"
    )
    result = run_cli("eval", "--data", str(shard_dir), "--out", str(tmp_path), "--model", str(tmp_path))
    assert result.returncode == 2 and "is neither a model folder" in result.stderr
    assert result.stderr.count("\n") == 1
    if importlib.util.find_spec("vllm") is None:
        result = run_cli("eval", "--data", str(shard_dir), "--out", str(tmp_path), "--backend", "vllm")
        assert result.returncode == 2 and result.stderr.startswith("align-train: error: backend='vllm' needs")
        assert result.stderr.count("\n") == 1 and not (tmp_path / "metrics.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is refused only where there is no GPU")
def test_cli_refuses_bf16_without_a_gpu(shard_dir: Path, tmp_path: Path) -> None:
    result = run_cli("eval", "--data", str(shard_dir), "--out", str(tmp_path), "--set", "dtype=bf16")
    assert result.returncode == 2
    assert result.stderr == (
        "align-train: error: dtype='bf16' needs a GPU, this process runs on cpu: use dtype='auto' or 'fp32'\n"
    )


def test_max_groups_counts_the_groups_left_after_the_task_filter(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    cfg = EvalConfig(
        model=model_dir,
        data=shard_dir,
        out=tmp_path,
        corpus_tasks=["tool_calling"],
        max_groups=3,
        max_new_tokens=2,
    )
    evaluate(cfg)
    rows = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    # tool_calling is 1 group in 4 of sft_rows(20): the three of them that come first by holdout hash.
    tool_groups = sorted(
        {g for g, rows in read_groups(shard_dir).items() if rows[0]["task"] == "tool_calling"}
    )
    expected = sorted(tool_groups, key=stable_fraction)[:3]
    assert sorted({r["group_id"] for r in rows}) == sorted(expected)
    assert {r["task"] for r in rows} == {"tool_calling"}


def scripted_model(tokenizer: Any, chain: list[int]) -> LlamaForCausalLM:
    """A tiny Llama whose greedy continuation of ``chain[0]`` is the rest of ``chain``: its layers add
    nothing (zero output projections), so the last hidden state is the current token's normalised
    embedding, and the output layer gives each token of the chain its successor's row (logit ``hidden`` =
    64 against ±8 for a random pair)."""
    successors = dict(itertools.pairwise(chain))
    assert len(successors) == len(chain) - 1  # no token of the chain has two successors
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for token, successor in successors.items():
            hidden = model.model.embed_tokens.weight[token]
            model.lm_head.weight[successor] = hidden / hidden.pow(2).mean().sqrt()
    return model


def test_loglikelihood_scoring_counts_the_greedy_references(
    make_shard_dir: Any, tokenizer_dir: Path, tmp_path: Path
) -> None:
    """A model that answers every question "The answer is 5.": the English reference is that answer, the
    German one ("Die Antwort ist 5.") is not. Generation finds 5 in both; log-likelihood scoring counts the
    English row only, from the loss pass (the same losses), and reports no consistency."""
    tokenizer = load_tokenizer(tokenizer_dir)
    rows = [
        parallel_row(
            "g1",
            lang,
            [message("user", question), message("assistant", reply)],
            task="math",
        )
        for lang, question, reply in [
            ("en", "What is 2 plus 3?", "The answer is 5."),
            ("de", "Was ist 2 plus 3?", "Die Antwort ist 5."),
        ]
    ]
    english = Collator(tokenizer, objective="sft", max_length=2048)(ParallelBatch.of(rows[:1]))
    labelled = (english.labels[0] != IGNORE_INDEX).nonzero()[:, 0].tolist()
    chain = english.input_ids[0, labelled[0] - 1 : labelled[-1] + 1].tolist()
    model_dir = tmp_path / "model"
    scripted_model(tokenizer, chain).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = make_shard_dir(rows)
    found = {}
    for scoring in ("generate", "loglikelihood"):
        out = tmp_path / scoring
        evaluate(EvalConfig(model=model_dir, data=data, out=out, scoring=scoring, max_new_tokens=16))
        metrics = json.loads((out / METRICS_FILE).read_text())
        predictions = {
            p["lang"]: p for p in map(json.loads, (out / PREDICTIONS_FILE).read_text().splitlines())
        }
        found[scoring] = metrics, predictions, (out / "report.md").read_text()
    metrics, predictions, report = found["generate"]
    assert predictions["de"]["generation"] == "The answer is 5." and predictions["de"]["correct"]
    assert metrics["scoring"] == "generate" and metrics["consistency"]["share"] == 1.0
    metrics, predictions, report = found["loglikelihood"]
    assert metrics["scoring"] == "loglikelihood" and metrics["config"]["scoring"] == "loglikelihood"
    assert (predictions["en"]["correct"], predictions["de"]["correct"]) == (True, False)
    assert predictions["en"]["predicted"] == "5" and predictions["de"]["predicted"] is None
    assert all(p["generation"] is None for p in predictions.values())
    assert metrics["langs"]["en"]["overall"]["accuracy"] == 1.0 and metrics["langs"]["de"]["gap"] == -1.0
    assert metrics["consistency"] == {"groups": 1, "agreeing": None, "share": None}
    assert (
        metrics["consistent_correct"]["share"] == 0.0 and metrics["langs"]["de"]["agreement"]["share"] is None
    )
    assert "log-likelihood scoring" in report
    for lang in ("en", "de"):
        assert predictions[lang]["nll"] == found["generate"][1][lang]["nll"]
