"""A local Hugging Face seq2seq translation model (Marian, NLLB, M2M100, mBART-50)."""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.config import CTranslate2TranslatorConfig, HFTranslatorConfig
from curate.translators.base import TranslationErrors, TranslatorConfigError
from schemas import ConfigError
from schemas.model_files import check_model_folder

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


_PATH_FIELDS = frozenset({"src", "tgt"})
# Model types that translate between many languages and pick them by language token.
_MULTILINGUAL = frozenset({"m2m_100", "nllb-moe", "mbart"})
# Files that hold weights: fingerprinted by name, size and samples of their bytes, never read whole.
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx"})
_WHOLE_LIMIT = 64 << 20  # any other file up to this size counts by all its bytes
_SAMPLES = 8
_SAMPLE_BYTES = 64 << 10


@dataclass(frozen=True)
class Loaded:
    """A pair's tokenizer and model, and what the shared code reads of the model's config."""

    tokenizer: PreTrainedTokenizerBase
    model: Any  # a transformers PreTrainedModel, or a CTranslate2 Translator
    model_type: str
    max_positions: int | None  # None: relative positions, no limit


class HFSeq2SeqTranslator:
    """A local Marian, NLLB or M2M100 checkpoint, run with greedy or beam search on length-sorted batches.

    ``model_path`` may hold ``{src}`` and ``{tgt}`` (one Marian folder per pair). Multilingual models
    (NLLB, M2M100, mBART-50) need ``lang_codes``: the source code goes to the tokenizer's ``src_lang`` and
    the target code becomes the forced first token. Inputs longer than the model reads and outputs cut at
    ``max_new_tokens`` are per-text failures, never silently truncated translations.
    """

    translates = True
    backend = "hf"  # translate.backend, the prefix of ``name`` and the settings' section

    def __init__(self, config: HFTranslatorConfig | CTranslate2TranslatorConfig) -> None:
        self.section = f"translate.{self.backend}"
        check_path_template(f"{self.section}.model_path", config.model_path)
        assert config.model_path is not None
        self.config = config
        self.template = config.model_path
        self.name = f"{self.backend}:{config.model_path}"
        self._loaded: dict[str, Loaded] = {}
        self._fingerprints: dict[str, str] = {}

    def setup(self) -> None:
        """Nothing shared to load: :meth:`check_pair` loads each pair's model."""

    def path(self, src: str, tgt: str) -> str:
        return self.template.format(src=src, tgt=tgt)

    def _load(self, src: str, tgt: str) -> Loaded:
        path = self.path(src, tgt)
        if path not in self._loaded:
            if not Path(path).is_dir():
                msg = (
                    f"{self.section}.model_path {self.template!r} gives {path!r} for {src}→{tgt}, "
                    "which is not a folder"
                )
                raise TranslatorConfigError(msg)
            try:
                check_model_folder(Path(path), setting=f"{self.section}.model_path ({src}→{tgt})")
            except ConfigError as e:
                raise TranslatorConfigError(str(e)) from e
            from safetensors import SafetensorError

            try:
                self._loaded[path] = self._load_folder(path, src, tgt)
            except (OSError, ValueError, SafetensorError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                msg = f"{self.section}.model_path: {path} cannot be loaded as a translation model ({first})"
                raise TranslatorConfigError(msg) from e
        return self._loaded[path]

    def _load_folder(self, path: str, src: str, tgt: str) -> Loaded:
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        model.to(self.config.device).eval()
        max_positions = getattr(model.config, "max_position_embeddings", None)
        return Loaded(load_tokenizer(path), model, model.config.model_type, max_positions)

    def fingerprint(self, path: str) -> str:
        """:func:`model_fingerprint` of a model folder, taken once per folder and run."""
        if path not in self._fingerprints:
            self._fingerprints[path] = model_fingerprint(Path(path))
        return self._fingerprints[path]

    def _lang_code(self, lang: str) -> str:
        code = self.config.lang_codes.get(lang)
        if code is None:
            msg = (
                f"{self.section}.lang_codes has no entry for {lang!r} (it has "
                f"{sorted(self.config.lang_codes)}): add the model's code for it, "
                f"e.g. --set {self.section}.lang_codes.{lang}=..."
            )
            raise TranslatorConfigError(msg)
        return code

    def _forced_bos(self, loaded: Loaded, src: str, tgt: str) -> int | None:
        """The target language token to force first, or None for a single-pair model."""
        model_type = loaded.model_type
        if not self.config.lang_codes:
            if model_type in _MULTILINGUAL:
                msg = f"{self.path(src, tgt)} is a multilingual {model_type} model: set {self.section}.lang_codes"
                raise TranslatorConfigError(msg)
            return None
        self._lang_code(src)
        code = self._lang_code(tgt)
        tokenizer = loaded.tokenizer
        # M2M100 names languages "__de__" and maps the bare code itself; NLLB and mBART use the token.
        get_lang_id = getattr(tokenizer, "get_lang_id", None)
        token_id = get_lang_id(code) if get_lang_id is not None else tokenizer.convert_tokens_to_ids(code)
        if token_id is None or token_id == tokenizer.unk_token_id:
            msg = (
                f"language code {code!r} ({self.section}.lang_codes.{tgt}) is not a token of "
                f"{self.path(src, tgt)}'s tokenizer"
            )
            raise TranslatorConfigError(msg)
        return token_id

    def check_pair(self, src: str, tgt: str) -> None:
        self._forced_bos(self._load(src, tgt), src, tgt)

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        """The pair's model folder by content (:func:`model_fingerprint`, taken once per folder), the
        language codes the pair uses and the decoding settings. ``device`` and ``batch_size`` are left
        out: they change the speed, not the translation."""
        return {
            "backend": self.backend,
            "model": self.fingerprint(self.path(src, tgt)),
            "lang_codes": [self.config.lang_codes.get(src), self.config.lang_codes.get(tgt)],
            "num_beams": self.config.num_beams,
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": False,
        }

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        loaded = self._load(src, tgt)
        forced_bos = self._forced_bos(loaded, src, tgt)
        if forced_bos is not None:
            loaded.tokenizer.src_lang = self._lang_code(src)
        if not texts:
            return []
        limit = loaded.max_positions
        ids = loaded.tokenizer(texts)["input_ids"]
        results: list[str | None] = [None] * len(texts)
        errors = {
            i: f"input is {len(text_ids)} tokens, the model reads at most {limit}"
            for i, text_ids in enumerate(ids)
            if limit is not None and len(text_ids) > limit
        }
        readable = [i for i in range(len(texts)) if i not in errors]
        outputs = self._translate_ids(
            loaded, [ids[i] for i in readable], [texts[i] for i in readable], forced_bos
        )
        for i, output in zip(readable, outputs, strict=True):
            if output is None:
                errors[i] = f"translation cut at max_new_tokens={self.config.max_new_tokens}"
            results[i] = output
        if errors:
            raise TranslationErrors(results, errors)
        return [out for out in results if out is not None]

    def _translate_ids(
        self, loaded: Loaded, ids: list[list[int]], texts: list[str], forced_bos: int | None
    ) -> list[str | None]:
        """Outputs of ``texts`` (tokenized as ``ids``), None where cut at ``max_new_tokens``: batches of
        ``batch_size`` texts, longest first, so that a batch pads little."""
        assert isinstance(self.config, HFTranslatorConfig)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]), reverse=True)
        results: list[str | None] = [None] * len(texts)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            outputs = self._generate(loaded, [texts[i] for i in batch], forced_bos)
            for i, output in zip(batch, outputs, strict=True):
                results[i] = output
        return results

    def _generate(self, loaded: Loaded, texts: list[str], forced_bos: int | None) -> list[str | None]:
        """Decoded outputs, None where generation stopped at ``max_new_tokens`` before its end token."""
        import torch

        inputs = loaded.tokenizer(texts, return_tensors="pt", padding=True).to(self.config.device)
        extra = {} if forced_bos is None else {"forced_bos_token_id": forced_bos}
        with torch.inference_mode():
            out = loaded.model.generate(
                **inputs,
                max_new_tokens=self.config.max_new_tokens,
                num_beams=self.config.num_beams,
                do_sample=False,
                **extra,
            )
        decoded = loaded.tokenizer.batch_decode(out, skip_special_tokens=True)
        finished = _finished(
            out[:, 1:], loaded.model.generation_config.eos_token_id, self.config.max_new_tokens
        )
        return [text if done else None for text, done in zip(decoded, finished, strict=True)]


def check_path_template(setting: str, template: str | None) -> None:
    """Refuse a missing model path, or one with fields other than ``{src}`` and ``{tgt}``."""
    if not template:
        msg = f"{setting} is required: a local folder holding a Marian, NLLB or M2M100 model"
        raise ConfigError(msg)
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields - _PATH_FIELDS:
        msg = f"{setting} {template!r} uses {sorted(fields - _PATH_FIELDS)}: only {{src}} and {{tgt}} are allowed"
        raise ConfigError(msg)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


def model_fingerprint(folder: Path) -> str:
    """A hash of what a local model folder translates with, cheap enough to take on every run.

    Each file counts by its path in the folder and its size. Config, tokenizer and generation files
    count by all their bytes; weight files (``.safetensors``, ``.bin``, ...) and anything over 64 MiB by
    8 evenly spaced 64 KiB samples of their bytes, the first and the last included. So replacing the
    weights at the same path, even by a fine-tune of the same shape, changes the fingerprint without
    reading gigabytes (a change confined to the bytes between samples would go unseen). Hidden files and
    folders (download caches) and ``*.md`` do not count, nor does the folder's own location: a moved
    model keeps its cached translations.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or path.suffix == ".md" or any(p.startswith(".") for p in relative.parts):
            continue
        size = path.stat().st_size
        whole = size <= _SAMPLES * _SAMPLE_BYTES or (
            path.suffix not in _WEIGHT_SUFFIXES and size <= _WHOLE_LIMIT
        )
        digest.update(f"{relative.as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            if whole:
                digest.update(f.read())
                continue
            for i in range(_SAMPLES):
                f.seek(i * (size - _SAMPLE_BYTES) // (_SAMPLES - 1))
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _finished(generated: torch.Tensor, eos: int | list[int] | None, max_new_tokens: int) -> list[bool]:
    """Whether each sequence ended on its own, before the token budget forced it to stop."""
    import torch

    if eos is None:
        return [generated.shape[1] < max_new_tokens] * generated.shape[0]
    is_eos = torch.isin(
        generated, torch.tensor(eos if isinstance(eos, list) else [eos], device=generated.device)
    )
    ended = is_eos.any(dim=1)
    end_at = is_eos.int().argmax(dim=1) + 1
    return (ended & (end_at < max_new_tokens)).tolist()
