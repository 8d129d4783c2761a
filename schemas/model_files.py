"""Whether a local folder can hold a Hugging Face model, checked before ``from_pretrained`` reads it.

``from_pretrained`` answers a folder that is empty, lacks its tokenizer or holds weights cut short with a
``ValueError``, ``TypeError``, ``OSError`` or ``SafetensorError`` from deep inside; both command lines load
user-named folders (a translation model, a sentence embedder, the model to fine-tune), so this names the
setting, the folder and the missing or damaged file in one line instead.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from schemas.errors import ConfigError, MissingFileError

# Files one of which every tokenizer ``AutoTokenizer`` loads from a folder has (fast, SentencePiece, BPE,
# WordPiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "source.spm",
    "sentencepiece.bpe.model",
    "spiece.model",
)
SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own bound on a header


class ModelFolderError(ConfigError):
    """A model folder that cannot be loaded: the setting that names it, the folder and what is wrong."""


def check_model_folder(
    path: Path, *, setting: str | None, tokenizer: bool = True, weights: bool = True
) -> None:
    """Refuse a folder that is not there, has no ``config.json``, no tokenizer files (when ``tokenizer``),
    no ``.safetensors`` weights (when ``weights``), or a weights file cut short or not safetensors at all.
    Messages start with ``setting`` (None: with the folder, for a validator whose caller names the field)."""
    prefix = f"{setting}: " if setting else ""
    if not path.is_dir():
        msg = f"{prefix}{path} is not a folder (expected a Hugging Face model folder)"
        raise MissingFileError(msg)
    if not (path / "config.json").is_file():
        msg = f"{prefix}{path} holds no config.json: not a Hugging Face model folder"
        raise ModelFolderError(msg)
    if tokenizer and not has_tokenizer(path):
        msg = (
            f"{prefix}{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the "
            "tokenizer next to the model (tokenizer.save_pretrained)"
        )
        raise ModelFolderError(msg)
    files = sorted(path.glob("*.safetensors"))
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            listed = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            msg = f"{prefix}{index} is not a safetensors index ({type(e).__name__}: {e})"
            raise ModelFolderError(msg) from e
        missing = [name for name in listed if not (path / name).is_file()]
        if missing:
            msg = f"{prefix}{index} lists {missing[0]}, which is not in {path}"
            raise ModelFolderError(msg)
    if weights and not files:
        msg = f"{prefix}{path} holds no .safetensors weights (weights are only loaded from safetensors)"
        raise ModelFolderError(msg)
    for file in files:
        problem = safetensors_problem(file)
        if problem is not None:
            msg = f"{prefix}{file} is damaged ({problem}): copy or save the model again"
            raise ModelFolderError(msg)


def has_tokenizer(path: Path) -> bool:
    """Whether a folder holds the files of a tokenizer ``AutoTokenizer`` can load."""
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, judged from its header and its size without reading the
    tensors: not safetensors at all, or shorter than the header says (a copy cut short). None when whole."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            return f"its header claims {length:,} bytes, over safetensors' limit: not a safetensors file"
        if 8 + length > size:
            return (
                f"its header claims {length:,} bytes and the file has {size:,}: not safetensors, or cut short"
            )
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            return "its header is not JSON: not a safetensors file"
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    try:
        end = max(
            (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
            default=0,
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return "its header does not describe tensors: not a safetensors file"
    if 8 + length + end > size:
        return f"its tensors need {8 + length + end:,} bytes and the file has {size:,}: cut short"
    return None
