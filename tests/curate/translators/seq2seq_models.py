"""Tiny randomly initialised translation models, saved like real checkpoints, for the seq2seq backends."""

from pathlib import Path

# The tokenizer's whole vocabulary: the words of these lines.
CORPUS = ("the cat is on the table .", "hello world ?", "el gato está en la mesa ,", "hola mundo ⟦0⟧ ⟦1⟧")
# Layer sizes of every tiny encoder-decoder here (Marian, M2M100): small enough to build in milliseconds.
TINY_DIMS = {
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "max_position_embeddings": 64,
}


def save_marian(
    path: Path,
    *,
    seed: int,
    bias: dict[str, float] | None = None,
    opus_layout: bool = False,
    init_std: float = 0.02,
) -> None:
    """A tiny randomly initialised Marian model with a word-level tokenizer, saved like a real checkpoint.

    ``opus_layout`` orders the vocabulary as OPUS-MT models do, which CTranslate2's converter expects:
    the end token first and the pad token (which starts the decoder) last. A larger ``init_std`` than
    transformers' 0.02 gives logits that depend on the input, so that outputs differ in words and length.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    corpus = [w for line in CORPUS for w in line.split()]
    order = ["</s>", "<unk>", *corpus, "<pad>"] if opus_layout else ["<pad>", "</s>", "<unk>", *corpus]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(order))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = MarianConfig(
        vocab_size=len(vocab),
        **TINY_DIMS,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
        init_std=init_std,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    for token, value in (bias or {}).items():
        model.final_logits_bias[0, vocab[token]] = value
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
