"""Model cards: every model folder align-train writes carries one the Hub reads, and evaluation adds its
results to it.

The Hub validates cards online; offline, a card is parsed by ``huggingface_hub``'s ``ModelCard`` (which
turns ``model-index`` into ``EvalResult`` objects and refuses a malformed one) and its fields are checked
against the Hub's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from align_train.cli import app
from align_train.config import EvalConfig
from align_train.eval.evaluate import evaluate, load_for_eval
from align_train.model_card import (
    FACTS_KEY,
    ModelFacts,
    language_results,
    model_card,
    read_model_card,
    record_results,
    write_model_card,
)
from align_train.training.train import train
from schemas import MANIFEST_FILE, sha256_file
from tests.align_train.runs import train_config

torch.set_num_threads(1)


def validate(path: Path) -> ModelCard:
    """The card at ``path`` as the Hub's client reads it, its metadata in the Hub's vocabulary."""
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name in ("transformers", "peft")
    assert data.pipeline_tag == "text-generation"
    assert all(isinstance(x, str) and len(x) in (2, 3) for x in data.language or [])
    if data.eval_results:  # model-index parsed into EvalResult objects
        assert data.model_name == data.to_dict()["model-index"][0]["name"]
    return card


def facts(**changes: Any) -> ModelFacts:
    settings = {
        "objective": "sft",
        "policy": "sample",
        "k": 1,
        "temperature": 1.0,
        "groups_per_batch": 2,
        "grad_accum": 2,
        "alignment_loss": "cosine",
        "alignment_weight": 0.1,
        "lora": {"enabled": True, "r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["q_proj"]},
        "holdout": 0.1,
        "seed": 3,
    }
    values: dict[str, Any] = {
        "origin": "training",
        "name": "run step 5",
        "base_model": "/models/base",
        "adapter": True,
        "languages": ["en", "zh_Hans", "ca"],
        "dataset": "a" * 64,
        "shards": "out/demo",
        "step": 5,
        "tokens": 12345,
        "world_size": 2,
        "settings": settings,
    }
    return ModelFacts(**(values | changes))


def results(accuracy: float) -> list[dict[str, Any]]:
    return language_results(
        dataset_name="eval groups of demo",
        dataset_type="a" * 64,
        split="eval",
        anchor_lang="en",
        langs={
            "en": {"accuracy": 0.5, "gap": 0.0, "loss": 1.5},
            "ca": {"accuracy": accuracy, "gap": accuracy - 0.5, "loss": None},
        },
        overall={"consistency": 0.25, "consistent_correct": None, "mean_gap": accuracy - 0.5},
    )


def test_a_training_card_says_what_the_model_is_and_how_it_was_trained(tmp_path: Path) -> None:
    card = validate(write_model_card(tmp_path, facts()))
    data = card.data.to_dict()
    assert data["base_model"] == "/models/base" and data["library_name"] == "peft"
    assert data["language"] == ["en", "zh", "ca"] and data["datasets"] == ["a" * 64]
    assert data["tags"] == ["polyalign", "sft", "lora"]
    assert "model-index" not in data
    text = card.text
    assert "| objective | `sft`: cross-entropy on the assistant tokens |" in text
    assert "the anchor and 1 of its translations drawn with temperature 1.0 (policy `sample`)" in text
    assert "| coupled terms | `alignment_loss` cosine, `alignment_weight` 0.1 |" in text
    assert "| batch | 2 groups per micro-batch × 2 accumulated × 2 ranks |" in text
    assert "| tokens | 12,345 (of the sequences trained on, all ranks) |" in text
    assert "Not evaluated yet: `align-train eval --model path/to/this/folder --data out/demo`" in text
    assert read_model_card(tmp_path) == (facts(), [])


def test_a_run_without_a_coupled_term_says_so() -> None:
    settings = facts().settings | {"alignment_weight": 0.0, "policy": "shuffled"}
    text = model_card(facts(settings=settings, adapter=False), results=[])
    assert "no two rows of a group in the same step (policy `shuffled`, the control)" in text
    assert (
        "| coupled terms | none: each row's loss is its own "
        "(`alignment_loss` cosine, `alignment_weight` 0.0) |" in text
    )
    assert "library_name: transformers" in text


def test_results_go_to_model_index_and_a_later_run_of_the_same_data_replaces_them(tmp_path: Path) -> None:
    write_model_card(tmp_path, facts())
    record_results(tmp_path, results(0.25))
    other = language_results(
        dataset_name="tinymc", dataset_type="tinymc", split=None, anchor_lang="en",
        langs={"de": {"accuracy": 0.3}}, overall={},
    )  # fmt: skip
    record_results(tmp_path, other)
    card = validate(record_results(tmp_path, results(0.75)))  # type: ignore[arg-type]
    evals = {
        (r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results
    }
    assert evals[("a" * 64, "ca", "accuracy")] == 0.75  # the second evaluation of the same data and split
    assert evals[("a" * 64, None, "mean_gap")] == 0.25
    assert ("a" * 64, "en", "gap") not in evals  # the anchor's is 0 by definition
    assert ("a" * 64, "ca", "loss") not in evals and (
        "a" * 64,
        None,
        "consistent_correct",
    ) not in evals  # None
    assert evals[("tinymc", "de", "accuracy")] == 0.3
    assert len(card.data.eval_results) == 7  # en: accuracy, loss; ca: accuracy, gap; 2 over languages; tinymc
    assert "| ca | 75.0% | +25.0 pts | - |" in card.text and "| en | 50.0% | - | 1.500 |" in card.text
    assert "cross-lingual consistency: 25.0%, mean accuracy gap to en: +25.0 pts" in card.text
    assert read_model_card(tmp_path)[0] == facts()  # type: ignore[index]


def test_a_card_align_train_did_not_write_is_left_alone(tmp_path: Path) -> None:
    foreign = "---\nlicense: mit\n---\n# Someone's model\n"
    (tmp_path / "README.md").write_text(foreign, encoding="utf-8")
    assert record_results(tmp_path, results(0.5)) is None
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == foreign
    assert record_results(tmp_path / "nothing", results(0.5)) is None


@pytest.mark.slow
def test_lora_run_cards_load_with_peft_take_eval_results_and_follow_the_export(
    shard_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    lora = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    run = tmp_path / "run"
    final = train(train_config(shard_dir, run, model_dir, max_steps=2, lora=lora, save_every=1, holdout=0.3))
    first, second = (read_model_card(run / "checkpoints" / f"step-00000{i}") for i in (1, 2))
    assert first is not None and second is not None
    assert (first[0].step, second[0].step) == (1, 2)
    assert 0 < first[0].tokens < second[0].tokens  # type: ignore[operator]

    card = validate(final / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == str(model_dir.resolve())
    assert data["datasets"] == [sha256_file(shard_dir / MANIFEST_FILE)]
    assert data["language"] == ["en", "de", "sw"]
    assert data[FACTS_KEY]["name"] == "run step 2" and data[FACTS_KEY]["settings"]["holdout"] == 0.3
    # peft loads the adapter onto the base the card names, as evaluation does.
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(card.data.base_model), final)
    ids = AutoTokenizer.from_pretrained(final)("Was ist 2 plus 3?", return_tensors="pt").input_ids
    _, evaluated = load_for_eval(final, base_model=None)
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, evaluated(ids).logits, atol=1e-5, rtol=1e-5)

    # Evaluating the run adds per-language results to its latest checkpoint's card.
    config = EvalConfig(model=run, data=shard_dir, out=tmp_path / "eval", max_new_tokens=4)
    assert evaluate(config).card == final / "README.md"
    card = validate(final / "README.md")
    langs = {r.dataset_config for r in card.data.eval_results if r.dataset_config}
    assert langs == {"en", "de", "sw"}
    assert {r.dataset_split for r in card.data.eval_results} == {"eval"}
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy", "loss", "gap", "consistency"}
    count = len(card.data.eval_results)
    evaluate(config)
    assert len(validate(final / "README.md").data.eval_results) == count
    assert not (model_dir / "README.md").exists()  # the base model's folder is not touched

    # The merged model's card: a whole model of the same training, not yet evaluated.
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = validate(tmp_path / "merged" / "README.md").data.to_dict()
    assert merged["library_name"] == "transformers" and merged["base_model"] == str(model_dir.resolve())
    assert merged[FACTS_KEY]["origin"] == "merge" and merged[FACTS_KEY]["merged_from"] == str(final)
    assert merged[FACTS_KEY]["tokens"] == second[0].tokens and "model-index" not in merged
