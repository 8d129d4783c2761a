"""Benchmarks through the real lm-evaluation-harness: local task YAMLs over tiny parallel files in three
languages, one multiple-choice and one generation task, run on the tiny model through ``align-train eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from align_train.cli import app
from align_train.eval.benchmarks import RESULTS_FILE, SAMPLES_FILE, TaskPlace, sample_answer, task_places
from align_train.eval.report import METRICS_FILE

torch.set_num_threads(1)
pytest.importorskip("lm_eval", reason="the eval extra (lm-evaluation-harness) is not installed")


def run_eval(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["eval", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def evaluated(lm_eval_task_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    code, output = run_eval(
        "--model",
        str(model_dir),
        "--tasks",
        "tinymc,tinysum_*",
        "--include-path",
        str(lm_eval_task_dir),
        "--out",
        str(out),
    )
    assert code == 0, output
    return out


def test_languages_side_by_side_with_lm_eval_s_own_accuracy(evaluated: Path) -> None:
    metrics = json.loads((evaluated / METRICS_FILE).read_text())
    own = json.loads((evaluated / RESULTS_FILE).read_text())["results"]
    assert set(metrics["benchmarks"]) == {"tinymc", "tinysum"}
    mc, gen = metrics["benchmarks"]["tinymc"], metrics["benchmarks"]["tinysum"]
    assert (mc["metric"], gen["metric"]) == ("acc,none", "exact_match,number")
    assert list(mc["langs"]) == ["en", "de", "es"]  # the anchor first
    for name, b in (("tinymc", mc), ("tinysum", gen)):
        for lang, m in b["langs"].items():
            assert m["task"] == f"{name}_{lang}" and m["accuracy"] == own[m["task"]][b["metric"]]
    assert mc["langs"]["en"]["items"] == 5 and gen["langs"]["de"]["items"] == 4
    report = (evaluated / "report.md").read_text()
    assert "### tinymc (`acc,none`)" in report and "### tinysum (`exact_match,number`)" in report


def test_gap_and_consistency_match_the_per_sample_logs(evaluated: Path) -> None:
    """Recomputed here the plain way, from lm-eval's per-sample log."""
    metrics = json.loads((evaluated / METRICS_FILE).read_text())["benchmarks"]
    samples = [json.loads(line) for line in (evaluated / SAMPLES_FILE).read_text().splitlines()]
    for name, metric, filter_ in (("tinymc", "acc", "none"), ("tinysum", "exact_match", "number")):
        answer: dict[str, dict[int, object]] = {}
        right: dict[str, dict[int, bool]] = {}
        for s in samples:
            if s["task"].startswith(name + "_") and s["filter"] == filter_:
                lang = s["task"].rsplit("_", 1)[1]
                if metric == "acc":  # the option with the highest log-likelihood
                    scores = [r[0] for r in s["filtered_resps"]]
                    picked: object = scores.index(max(scores))
                else:
                    text = s["filtered_resps"][0]
                    picked = None if text == "[invalid]" else text
                answer.setdefault(lang, {})[s["doc_id"]] = picked
                right.setdefault(lang, {})[s["doc_id"]] = s[metric] == 1
        accuracy = {lang: sum(r.values()) / len(r) for lang, r in right.items()}
        b = metrics[name]
        for lang in ("de", "es"):
            assert b["langs"][lang]["gap"] == pytest.approx(accuracy[lang] - accuracy["en"])
            same = [answer[lang][d] is not None and answer[lang][d] == answer["en"][d] for d in answer["en"]]
            assert b["langs"][lang]["agreement"]["agreeing"] == sum(same)
        docs = answer["en"].keys()
        consistent = sum(
            answer["en"][d] is not None and len({answer[x][d] for x in answer}) == 1 for d in docs
        )
        all_right = sum(all(right[x][d] for x in right) for d in docs)
        assert (b["consistency"]["groups"], b["consistency"]["agreeing"]) == (len(docs), consistent)
        assert b["consistent_correct"]["agreeing"] == all_right


def test_an_adapter_folder_is_evaluated(lm_eval_task_dir: Path, model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    code, output = run_eval(
        "--model",
        str(tmp_path / "adapter"),
        "--tasks",
        "tinymc_en,tinymc_de",
        "--include-path",
        str(lm_eval_task_dir),
        "--out",
        str(tmp_path / "out"),
        "--limit",
        "2",
    )
    assert code == 0, output
    langs = json.loads((tmp_path / "out" / METRICS_FILE).read_text())["benchmarks"]["tinymc"]["langs"]
    assert {lang: m["items"] for lang, m in langs.items()} == {"en": 2, "de": 2}


def test_a_missing_task_or_missing_data_is_one_line(
    lm_eval_task_dir: Path, model_dir: Path, tmp_path: Path
) -> None:
    code, output = run_eval(
        "--model", str(model_dir), "--tasks", "tinymc_xx_nope", "--out", str(tmp_path / "a")
    )
    assert code == 2
    [line] = [x for x in output.splitlines() if x.startswith("align-train: error:")]
    assert "'tinymc_xx_nope' is not an lm-evaluation-harness task" in line
    broken = tmp_path / "tasks"
    broken.mkdir()
    text = (
        (lm_eval_task_dir / "tinymc_de.yaml")
        .read_text()
        .replace(str(lm_eval_task_dir / "mc_de.jsonl"), str(tmp_path / "gone.jsonl"))
    )
    (broken / "tinygone_de.yaml").write_text(text.replace("tinymc_de", "tinygone_de"))
    code, output = run_eval(
        "--model",
        str(model_dir),
        "--tasks",
        "tinygone_de",
        "--include-path",
        str(broken),
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2
    [line] = [x for x in output.splitlines() if x.startswith("align-train: error:")]
    assert "the data of tinygone_de cannot be loaded" in line and "docs/evaluation.md" in line


def test_task_places_from_codes_in_the_names_siblings_and_metadata() -> None:
    names = [
        "xnli_de",
        "xnli_sw",
        "belebele_deu_Latn",
        "belebele_swh_Latn",
        "lambada_openai_mt_de",  # German, though "mt" is Maltese
        "lambada_openai_mt_it",
        "mmmlu_de_de_anatomy",
        "mmmlu_ar_xy_anatomy",
        "mmmlu_de_de_virology",  # a subject in one language only: still a part of mmmlu
        "gsm8k_cot",  # "cot" is an ISO 639-3 code, but no other language shares the name
    ]
    configs = {name: {} for name in names} | {"mmlu_french": {"metadata": {"lang": "fr"}}}
    assert task_places(configs) == {
        "xnli_de": TaskPlace("xnli", "de", ""),
        "xnli_sw": TaskPlace("xnli", "sw", ""),
        "belebele_deu_Latn": TaskPlace("belebele", "de", ""),
        "belebele_swh_Latn": TaskPlace("belebele", "sw", ""),
        "lambada_openai_mt_de": TaskPlace("lambada_openai_mt", "de", ""),
        "lambada_openai_mt_it": TaskPlace("lambada_openai_mt", "it", ""),
        "mmmlu_de_de_anatomy": TaskPlace("mmmlu", "de", "anatomy"),
        "mmmlu_ar_xy_anatomy": TaskPlace("mmmlu", "ar", "anatomy"),
        "mmmlu_de_de_virology": TaskPlace("mmmlu", "de", "virology"),
        "gsm8k_cot": TaskPlace("gsm8k_cot", "und", ""),
        "mmlu_french": TaskPlace("mmlu_french", "fr", ""),
    }


def test_multiple_choice_answers_follow_the_metric() -> None:
    sample = {
        "filtered_resps": [[-3.0, False], [-4.0, False]],
        "arguments": [["q", " a"], ["q", " a much longer option"]],
    }
    config = {"output_type": "multiple_choice"}
    assert sample_answer(sample, config, "acc,none") == 0
    assert sample_answer(sample, config, "acc_norm,none") == 1  # per character, the long option wins
    generated = {"output_type": "generate_until"}
    assert sample_answer({"filtered_resps": ["[invalid]"]}, generated, "exact_match,x") is None
    assert sample_answer({"filtered_resps": [" 42 "]}, generated, "exact_match,x") == "42"
