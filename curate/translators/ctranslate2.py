"""A local Marian, NLLB or M2M100 checkpoint run by CTranslate2, the engine OPUS-MT and LibreTranslate serve
with: converted once from the transformers folder, then int8 or float32 on a CPU, float16 on a GPU, in
batches of a number of tokens."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from curate.config import CTranslate2TranslatorConfig
from curate.translators.base import TranslatorConfigError
from curate.translators.hf_seq2seq import HFSeq2SeqTranslator, Loaded, check_path_template, load_tokenizer
from schemas import ConfigError, import_optional
from schemas.threads import choose_threads

CONVERTED_DIR = ".ctranslate2"  # inside the model's folder, hidden: the model's fingerprint skips it
# What a converted folder was made from: the source folder's fingerprint and the converter's version.
SOURCE_FILE = "converted_from.json"
_GPU_ONLY = frozenset({"float16", "int8_float16"})


class CTranslate2Translator(HFSeq2SeqTranslator):
    """The ``hf`` backend's models, tokenizers, language codes, limits and per-text failures, decoded by
    CTranslate2 instead of ``transformers``: in float32 its greedy output is the ``hf`` backend's.

    The converted model is kept beside the source (``converted_path``, by default a hidden
    ``.ctranslate2`` folder inside it) with the fingerprint of the folder it came from, and converted
    again when that changes. CTranslate2 sorts the texts by length and fills each batch up to
    ``max_batch_tokens`` source tokens.
    """

    backend = "ctranslate2"

    def __init__(self, config: CTranslate2TranslatorConfig) -> None:
        super().__init__(config)
        self.config: CTranslate2TranslatorConfig = config
        if config.converted_path is not None:
            check_path_template(f"{self.section}.converted_path", config.converted_path)
        device, _, index = config.device.partition(":")
        if device not in ("cpu", "cuda") or (index and not index.isdigit()):
            msg = f"{self.section}.device={config.device!r} is invalid: expected cpu, cuda or cuda:N"
            raise ConfigError(msg)
        if device == "cpu" and config.compute_type in _GPU_ONLY:
            msg = (
                f"{self.section}.compute_type={config.compute_type!r} needs a GPU (device is cpu): "
                "use int8, float32 or auto"
            )
            raise ConfigError(msg)
        self.device, self.device_index = device, int(index or 0)

    @property
    def compute_type(self) -> str:
        """``auto`` resolved: int8 on a CPU, float16 on a GPU."""
        if self.config.compute_type != "auto":
            return self.config.compute_type
        return "int8" if self.device == "cpu" else "float16"

    def converted(self, path: str, src: str, tgt: str) -> Path:
        if self.config.converted_path is None:
            return Path(path) / CONVERTED_DIR
        return Path(self.config.converted_path.format(src=src, tgt=tgt))

    def _load_folder(self, path: str, src: str, tgt: str) -> Loaded:
        ctranslate2 = import_optional(
            "ctranslate2",
            feature="translate backend 'ctranslate2'",
            install="pip install 'polyalign[ctranslate2]'",
        )
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        target = self.converted(path, src, tgt)
        source = {"model": self.fingerprint(path), "ctranslate2": ctranslate2.__version__}
        if _read_source(target) != source:
            _convert(ctranslate2, path, target, source)
        translator = ctranslate2.Translator(
            str(target),
            device=self.device,
            device_index=self.device_index,
            compute_type=self.compute_type,
            inter_threads=1,
            intra_threads=choose_threads(None).count if self.device == "cpu" else 0,
        )
        max_positions = getattr(config, "max_position_embeddings", None)
        return Loaded(load_tokenizer(path), translator, config.model_type, max_positions)

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        """The ``hf`` backend's identity, and the compute type (int8 translates differently)."""
        return super().cache_identity(src, tgt) | {"compute_type": self.compute_type}

    def _translate_ids(
        self, loaded: Loaded, ids: list[list[int]], texts: list[str], forced_bos: int | None
    ) -> list[str | None]:
        """Outputs of the texts, None where cut at ``max_new_tokens``. The budget counts as it does in
        ``transformers``: the target language token and the end token are in it, and an output whose end
        token would be the budget's last token counts as cut (transformers forces one there)."""
        tokenizer = loaded.tokenizer
        source = [tokenizer.convert_ids_to_tokens(text_ids) for text_ids in ids]
        prefix = None if forced_bos is None else [[tokenizer.convert_ids_to_tokens(forced_bos)]] * len(ids)
        budget = self.config.max_new_tokens
        results = loaded.model.translate_batch(
            source,
            prefix,
            max_batch_size=self.config.max_batch_tokens,
            batch_type="tokens",
            beam_size=self.config.num_beams,
            max_input_length=0,  # inputs past the model's positions were refused, none is cut here
            max_decoding_length=budget,
            min_decoding_length=0,
            return_end_token=True,
        )
        eos = tokenizer.eos_token
        outputs: list[str | None] = []
        for result in results:
            tokens = result.hypotheses[0]
            if not tokens or tokens[-1] != eos or len(tokens) >= budget:
                outputs.append(None)
                continue
            output_ids = tokenizer.convert_tokens_to_ids(tokens)
            outputs.append(tokenizer.decode(output_ids, skip_special_tokens=True))
        return outputs


def _read_source(target: Path) -> dict[str, str] | None:
    try:
        return json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _convert(ctranslate2: Any, path: str, target: Path, source: dict[str, str]) -> None:
    """Convert the transformers folder ``path`` into ``target``, replacing what was there only once the
    conversion is complete (float32 weights: the compute type is chosen when a model loads)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    except OSError as e:
        msg = (
            f"cannot write the converted model to {target} ({e}): set translate.ctranslate2.converted_path "
            "to a folder that can be written"
        )
        raise TranslatorConfigError(msg) from None
    try:
        converter = ctranslate2.converters.TransformersConverter(path, trust_remote_code=False)
        try:
            converter.convert(str(staging / "model"), force=True)
        except (ValueError, NotImplementedError) as e:
            msg = f"CTranslate2 cannot convert {path}: {e}"
            raise TranslatorConfigError(msg) from None
        (staging / "model" / SOURCE_FILE).write_text(json.dumps(source), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        try:
            (staging / "model").rename(target)
        except OSError:
            if _read_source(target) != source:  # not another process's conversion of the same model
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
