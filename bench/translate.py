"""The ``ctranslate2`` translator against the ``hf`` one, on the same Marian model of OPUS-MT's size.

No weights can be downloaded here, so the model is a randomly initialised ``MarianMTModel`` with the shape
of ``Helsinki-NLP/opus-mt-en-de`` (6 + 6 layers, d_model 512, 8 heads, FFN 2048, 58,101 tokens), saved
like a real checkpoint with a word-level tokenizer, then converted by the backend itself. The sentences
are 6 to 40 words drawn from the vocabulary. A random model does not stop on its own, so every output
runs to ``--max-new-tokens``: both backends decode the same number of steps (that their greedy outputs
are the same is tests/curate/translators/test_ctranslate2.py's to check). Speed is sentences per CPU-second on one thread, the median of ``--repeats``
interleaved runs; ``hf`` in float32 with ``--batch-size`` texts a batch, ``ctranslate2`` in float32 and in int8 (its
default on a CPU) with ``--max-batch-tokens``.

    OMP_NUM_THREADS=1 python bench/translate.py        # ~3 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from corpus import machine

from curate.config import CTranslate2TranslatorConfig, HFTranslatorConfig
from curate.translators import CTranslate2Translator, HFSeq2SeqTranslator, TranslationErrors

OPUS_MT = {  # Helsinki-NLP/opus-mt-en-de's config.json
    "vocab_size": 58101,
    "d_model": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "max_position_embeddings": 512,
    "scale_embedding": True,
    "share_encoder_decoder_embeddings": True,
}


def save_opus_sized_marian(path: Path) -> list[str]:
    """A random Marian of OPUS-MT's shape and its tokenizer (OPUS-MT's vocabulary layout: ``</s>`` first,
    ``<pad>`` last); returns the vocabulary's words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    size = OPUS_MT["vocab_size"]
    words = [f"w{i}" for i in range(size - 3)]
    vocab = {w: i for i, w in enumerate(["</s>", "<unk>", *words, "<pad>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = MarianConfig(**OPUS_MT, pad_token_id=size - 1, eos_token_id=0, decoder_start_token_id=size - 1)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return words


def outputs(translator: HFSeq2SeqTranslator, texts: list[str]) -> list[str | None]:
    try:
        return list(translator.translate(texts, src="en", tgt="de"))
    except TranslationErrors as e:
        return e.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="hf: texts per batch")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=512, help="ctranslate2: source tokens per batch"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "opus-mt-en-de"
        words = save_opus_sized_marian(model)
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(6, 41, size=args.sentences)]
        common = {"model_path": str(model), "max_new_tokens": args.max_new_tokens}
        hf = HFSeq2SeqTranslator(HFTranslatorConfig(**common, batch_size=args.batch_size))
        ct2 = {
            compute_type: CTranslate2Translator(
                CTranslate2TranslatorConfig(
                    **common, compute_type=compute_type, max_batch_tokens=args.max_batch_tokens
                )
            )
            for compute_type in ("float32", "int8")
        }
        arms: dict[str, Callable[[], list[str | None]]] = {
            "hf float32": lambda: outputs(hf, texts),
            "ctranslate2 float32": lambda: outputs(ct2["float32"], texts),
            "ctranslate2 int8": lambda: outputs(ct2["int8"], texts),
        }
        for arm in arms.values():
            arm()  # loads (and converts) before timing
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, arm in arms.items():
                start = time.process_time()
                arm()
                seconds[name].append(time.process_time() - start)

    speed = {name: args.sentences / statistics.median(times) for name, times in seconds.items()}
    print(f"machine: {machine()}")
    print(
        f"random Marian of opus-mt-en-de's shape, {args.sentences} sentences of 6-40 words, "
        f"{args.max_new_tokens} new tokens each, 1 CPU thread, median of {args.repeats} interleaved runs"
    )
    print(f"{'backend':22} {'sentences/CPU-s':>16} {'vs hf':>7}")
    for name, rate in speed.items():
        print(f"{name:22} {rate:16.2f} {rate / speed['hf float32']:6.2f}x")
    print(
        f"vs_hf: ctranslate2 int8 {speed['ctranslate2 int8'] / speed['hf float32']:.2f}x, "
        f"float32 {speed['ctranslate2 float32'] / speed['hf float32']:.2f}x (goal 3x)"
    )


if __name__ == "__main__":
    main()
