from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from align_train.data.batch import (
    IGNORE_INDEX,
    ROLE_CHOSEN,
    ROLE_REJECTED,
    ROLE_SFT,
    ParallelBatch,
    TokenBatch,
)
from align_train.data.chat_template import ChatTemplate, Span
from align_train.data.collator import Collator
from align_train.data.sampler import ParallelBatchSampler
from align_train.data.shard_stream import ShardStream
from align_train.modeling.attention import VARLEN_SDPA, register
from schemas import canonical_json
from tests.align_train.corpus import message, parallel_row, preference_rows, sft_rows

EOS = "<|im_end|>"


def labelled_runs(tokenizer: Any, batch: TokenBatch, seq: int) -> list[str]:
    """The decoded runs of consecutive labelled tokens of sequence ``seq``."""
    mask = batch.seq_ids == seq
    ids, labels = batch.input_ids[mask].tolist(), batch.labels[mask].tolist()
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def batch_of(shard_dir: Path, groups: int = 4) -> ParallelBatch:
    stream = ShardStream(shard_dir, seed=2)
    return next(iter(ParallelBatchSampler(stream, policy="all", groups_per_batch=groups, anchor_lang="en")))


def test_labels_cover_exactly_the_assistant_content(tokenizer: Any) -> None:
    call = canonical_json(
        [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 2}}}]
    )
    row = parallel_row(
        "g0",
        "en",
        [
            message("system", "Be brief."),
            message("user", "Add two."),
            message("assistant", "", tool_calls=call),
            message("tool", "4", tool_call_id="c1"),
            message("assistant", "It is 4."),
            message("user", "And again?"),
            message("assistant", "Still 4, twice over."),
        ],
    )
    collator = Collator(tokenizer, objective="sft", max_length=512)
    batch = collator(ParallelBatch.of([row]))
    tool_call = '<tool_call>\n{"arguments":{"a":2},"name":"add"}\n</tool_call>'
    assert labelled_runs(tokenizer, batch, 0) == [
        tool_call + EOS,
        "It is 4." + EOS,
        "Still 4, twice over." + EOS,
    ]
    assert batch.num_loss_tokens == int((batch.labels != IGNORE_INDEX).sum()) > 0
    assert collator.stats == {"sequences": 1}


def test_shard_rows_collate_with_group_and_language_of_each_sequence(tokenizer: Any, shard_dir: Path) -> None:
    batch = batch_of(shard_dir)
    out = Collator(tokenizer, objective="sft", max_length=512)(batch)
    assert out.num_seqs == len(batch.rows) == out.input_ids.shape[0]
    assert out.seq_langs == [row["lang"] for row in batch.rows]
    assert out.seq_group.tolist() == [batch.group_ids.index(row["group_id"]) for row in batch.rows]
    assert out.seq_role.tolist() == [ROLE_SFT] * out.num_seqs
    assert out.pair_index.tolist() == [-1] * out.num_seqs
    for i, row in enumerate(batch.rows):
        assert labelled_runs(tokenizer, out, i)[-1] == row["messages"][-1]["content"] + EOS
    assert out.attention_mask is not None
    assert torch.equal(out.attention_mask.bool(), out.seq_ids >= 0)
    assert (out.labels[out.attention_mask == 0] == IGNORE_INDEX).all()


def test_preference_rows_give_linked_chosen_and_rejected(tokenizer: Any) -> None:
    rows = preference_rows(2)
    batch = Collator(tokenizer, objective="dpo", max_length=512, pack=True)(ParallelBatch.of(rows))
    assert batch.num_seqs == 2 * len(rows)
    assert batch.seq_role.tolist() == [ROLE_CHOSEN, ROLE_REJECTED] * len(rows)
    assert batch.pair_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert batch.seq_group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    for pair, row in enumerate(rows):
        chosen, rejected = 2 * pair, 2 * pair + 1
        assert labelled_runs(tokenizer, batch, chosen) == [row["chosen"][0]["content"] + EOS]
        assert labelled_runs(tokenizer, batch, rejected) == [row["rejected"][0]["content"] + EOS]
        first_label = int((batch.labels[batch.seq_ids == chosen] != IGNORE_INDEX).nonzero()[0])
        prompt = batch.input_ids[batch.seq_ids == chosen][:first_label]
        assert torch.equal(batch.input_ids[batch.seq_ids == rejected][:first_label], prompt)

    sft = Collator(tokenizer, objective="sft", max_length=512)(ParallelBatch.of(rows))
    assert sft.num_seqs == len(rows) and sft.pair_index.tolist() == [-1] * len(rows)
    assert labelled_runs(tokenizer, sft, 0) == [rows[0]["chosen"][0]["content"] + EOS]


def test_empty_completion_stays_in_the_batch_without_loss_tokens(tokenizer: Any) -> None:
    rows = preference_rows(1)
    rows[1] = {**rows[1], "rejected": []}
    collator = Collator(tokenizer, objective="dpo", max_length=512)
    batch = collator(ParallelBatch.of(rows))
    assert batch.num_seqs == 4
    assert labelled_runs(tokenizer, batch, 3) == []
    assert labelled_runs(tokenizer, batch, 2) == [rows[1]["chosen"][0]["content"] + EOS]
    assert collator.stats["no_loss_tokens"] == 1


def test_preference_objective_refuses_sft_rows(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"objective='orpo' needs preference rows.*kind='sft'"):
        Collator(tokenizer, objective="orpo", max_length=64)(ParallelBatch.of(sft_rows(1)))


def test_truncation_keeps_the_first_max_length_tokens(tokenizer: Any, shard_dir: Path) -> None:
    batch = batch_of(shard_dir)
    full = Collator(tokenizer, objective="sft", max_length=512, pack=True)(batch)
    collator = Collator(tokenizer, objective="sft", max_length=40, pack=True)
    cut = collator(batch)
    for i in range(full.num_seqs):
        whole = full.input_ids[full.seq_ids == i]
        assert torch.equal(cut.input_ids[cut.seq_ids == i], whole[:40])
        assert torch.equal(cut.labels[cut.seq_ids == i], full.labels[full.seq_ids == i][:40])
    assert (
        collator.stats["truncated"]
        == sum(int((full.seq_ids == i).sum()) > 40 for i in range(full.num_seqs))
        > 0
    )
    tiny = Collator(tokenizer, objective="sft", max_length=8)
    assert tiny(batch).num_loss_tokens == 0
    assert tiny.stats["no_loss_tokens"] == len(batch.rows)


def test_packed_layout_restarts_positions_per_sequence(tokenizer: Any, shard_dir: Path) -> None:
    batch = batch_of(shard_dir, groups=8)
    padded = Collator(tokenizer, objective="sft", max_length=128)(batch)
    packed = Collator(tokenizer, objective="sft", max_length=128, pack=True)(batch)
    assert packed.attention_mask is None and padded.attention_mask is not None
    lengths = padded.attention_mask.sum(1).tolist()
    # Rows of at most max_length tokens, as few as first-fit of the longest first gives.
    rows, width = packed.input_ids.shape
    assert -(-sum(lengths) // 128) <= rows < len(lengths)
    assert width == max(int(r.sum()) for r in packed.seq_ids >= 0) <= 128
    real = packed.seq_ids >= 0
    assert int(real.sum()) == sum(lengths)
    for i in range(packed.num_seqs):
        mine = packed.seq_ids == i
        assert torch.equal(packed.input_ids[mine], padded.input_ids[i, : lengths[i]])
        assert torch.equal(packed.labels[mine], padded.labels[i, : lengths[i]])
        assert packed.position_ids[mine].tolist() == list(range(lengths[i]))
        assert mine.any(dim=1).sum() == 1  # a sequence never spans two rows
        assert packed.labels[mine][0] == IGNORE_INDEX
    # The padding at a row's end is a block of its own (positions restart), unlabelled.
    for row in range(rows):
        pads = ~real[row]
        if pads.any():
            assert packed.position_ids[row][pads].tolist() == list(range(int(pads.sum())))
            assert bool(pads[int(real[row].sum()) :].all())
    assert (packed.labels[~real] == IGNORE_INDEX).all()
    assert packed.num_loss_tokens == padded.num_loss_tokens
    moved = packed.to("meta")
    assert moved.input_ids.device.type == "meta" and moved.attention_mask is None
    assert moved.seq_langs == packed.seq_langs
    assert moved.segments is not None and moved.segments.gather.device.type == "meta"

    # One row, for variable-length attention: the same sequences, no padding at all.
    flat = Collator(tokenizer, objective="sft", max_length=128, pack=True, one_row=True)(batch)
    assert flat.input_ids.shape == (1, sum(lengths)) and bool((flat.seq_ids >= 0).all())
    for i in range(flat.num_seqs):
        assert torch.equal(flat.input_ids[flat.seq_ids == i], padded.input_ids[i, : lengths[i]])
        assert flat.position_ids[flat.seq_ids == i].tolist() == list(range(lengths[i]))


def test_constructor_checks_objective_length_and_template(tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(ValueError, match="objective='ppo' is invalid"):
        Collator(tokenizer, objective="ppo", max_length=64)
    with pytest.raises(ValueError, match="max_length=1 is invalid"):
        Collator(tokenizer, objective="sft", max_length=1)
    tokenizer.chat_template = (
        "{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(ValueError, match="not render a conversation's prefix as a prefix"):
        Collator(tokenizer, objective="sft", max_length=64)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="tokenizer has no chat_template"):
        Collator(tokenizer, objective="sft", max_length=64)


@pytest.fixture(scope="module", params=["sdpa", "eager", VARLEN_SDPA])
def tiny_llama(request: pytest.FixtureRequest, tokenizer: Any) -> LlamaForCausalLM:
    register()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=request.param,
    )
    return LlamaForCausalLM(config).eval()


def token_losses(model: LlamaForCausalLM, batch: TokenBatch) -> torch.Tensor:
    """Per-token cross-entropy of every labelled token, in sequence order."""
    with torch.no_grad():
        logits = model(**batch.model_inputs()).logits
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch.labels[:, 1:], reduction="none")
    labelled = batch.labels[:, 1:] != IGNORE_INDEX
    # Row by row, then sequence by sequence: each sequence lies in one row, in order.
    order = torch.argsort(batch.seq_ids[:, 1:][labelled], stable=True)
    return losses[labelled][order]


@pytest.mark.parametrize("one_row", [False, True], ids=["rows", "one-row"])
def test_packed_batch_gives_the_padded_per_token_loss(
    tiny_llama: LlamaForCausalLM, tokenizer: Any, shard_dir: Path, one_row: bool
) -> None:
    batch = batch_of(shard_dir, groups=2)
    padded = Collator(tokenizer, objective="sft", max_length=512)(batch)
    packed = Collator(tokenizer, objective="sft", max_length=512, pack=True, one_row=one_row)(batch)
    expected, actual = token_losses(tiny_llama, padded), token_losses(tiny_llama, packed)
    assert actual.shape == expected.shape == (padded.num_loss_tokens,)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)

    # Without the restarting position ids the sequences attend to each other and the losses move.
    leaky = TokenBatch(
        **{**vars(packed), "position_ids": torch.arange(packed.input_ids.shape[1]).unsqueeze(0)}
    )
    assert (token_losses(tiny_llama, leaky) - expected).abs().max() > 1e-3


class PrefixRenders(ChatTemplate):
    """The chat template as it found spans before skeletons: the prefix renders of every conversation."""

    def rendered(self, chats: list[dict[str, Any]]) -> tuple[str, list[Span | None]]:
        text = self.render(chats)
        return text, [
            self._span(chats, i, text) if c["role"] == "assistant" else None for i, c in enumerate(chats)
        ]


def prefix_rendering(tokenizer: Any, **settings: Any) -> Collator:
    """A collator that labels through :class:`PrefixRenders`."""
    collator = Collator(tokenizer, **settings)
    collator.template = PrefixRenders(tokenizer)
    return collator


def counting_renders(tokenizer: Any) -> list[int]:
    """Count the tokenizer's chat-template renders (the returned one-item list holds the count)."""
    calls = [0]
    render = tokenizer.apply_chat_template

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return render(*args, **kwargs)

    tokenizer.apply_chat_template = counted
    return calls


def same_batches(a: TokenBatch, b: TokenBatch) -> None:
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert a.num_loss_tokens == b.num_loss_tokens


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_each_conversation_is_rendered_once_and_labelled_as_by_its_prefixes(
    tokenizer_dir: Path, shard_dir: Path, objective: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if objective == "sft":
        batches = list(
            ParallelBatchSampler(ShardStream(shard_dir), policy="all", groups_per_batch=4, anchor_lang="en")
        )
    else:
        batches = [ParallelBatch.of(preference_rows(4))]
    expected = [prefix_rendering(tokenizer, objective=objective, max_length=512)(b) for b in batches]
    collator = Collator(tokenizer, objective=objective, max_length=512)
    renders = counting_renders(tokenizer)
    per_pass = []
    for _ in range(2):
        for batch, reference in zip(batches, expected, strict=True):
            same_batches(collator(batch), reference)
        per_pass.append(renders[0])
        renders[0] = 0
    sequences = collator.stats["sequences"] // 2
    # The first pass renders each structure's prefixes once (a question and answer; the tool-calling
    # conversation with a system prompt); then every conversation is rendered exactly once.
    assert sequences < per_pass[0] <= sequences + 12
    assert per_pass[1] == sequences
    assert collator.stats["assistant_span_not_found"] == 0


def test_a_template_that_changes_contents_falls_back_to_prefix_renders(tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # The same template, except that it strips every content: substituting contents would be wrong.
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message['content']", "message['content'] | trim"
    )
    rows = [
        parallel_row("g0", "en", [message("user", "  Two plus two? "), message("assistant", " Four.  ")]),
        parallel_row("g0", "de", [message("user", "Zwei plus zwei?"), message("assistant", "Vier.")]),
    ]
    batch = ParallelBatch.of(rows)
    collator = Collator(tokenizer, objective="sft", max_length=512)
    out = collator(batch)
    same_batches(out, prefix_rendering(tokenizer, objective="sft", max_length=512)(batch))
    assert labelled_runs(tokenizer, out, 0) == ["Four." + EOS]
    assert labelled_runs(tokenizer, out, 1) == ["Vier." + EOS]
