"""Typed configuration of ``curate build``, validated once at the edge (YAML file + flags + ``--set``)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curate.lid_relatives import RELATED_LANGS
from schemas import base_lang, canonical_json, normalize_lang


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Section):
    """How input columns map onto the contract; ``format="auto"`` decides from the columns present."""

    format: Literal["auto", "messages", "prompt_response", "preference", "parallel"] = "auto"
    id_field: str = "id"
    messages_field: str = "messages"
    prompt_field: str = "prompt"
    response_field: str = "response"
    system_field: str = "system"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    lang_field: str = "lang"
    task_field: str = "task"
    default_task: str = "chat"
    # Bounds that keep one oversized record from stalling a build: longer ones become read.too_long rejects.
    max_record_bytes: int = Field(1 << 20, ge=1, description="bytes of one JSON line")
    max_message_chars: int = Field(
        100_000, ge=1, description="characters of one message (content + tool calls)"
    )
    # Trial runs on a subset: both deterministic, so a re-run (or a resume) reads the same groups.
    sample: float = Field(1.0, gt=0, le=1, description="read this fraction of the groups, chosen by group id")
    limit: int | None = Field(None, ge=1, description="stop after this many groups kept by the reader")


class DedupConfig(_Section):
    """Duplicate source examples, removed before translation (see ``curate.readers.dedup``)."""

    enabled: bool = True
    near: bool = Field(True, description="also near-duplicates (MinHash LSH); off: exact repeats only")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity of word n-grams")
    ngram: int = Field(5, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    seed: int = 1


class _Seq2SeqConfig(_Section):
    """A local Marian / NLLB / M2M100 checkpoint. ``model_path`` may hold ``{src}`` and ``{tgt}`` for per-pair models."""

    model_path: str | None = None
    max_new_tokens: int = Field(512, ge=1)
    num_beams: int = Field(1, ge=1)
    device: str = "cpu"
    lang_codes: dict[str, str] = Field(default_factory=dict)


class HFTranslatorConfig(_Seq2SeqConfig):
    """The checkpoint run by ``transformers`` (torch), ``batch_size`` texts at a time."""

    batch_size: int = Field(16, ge=1)


class CTranslate2TranslatorConfig(_Seq2SeqConfig):
    """The checkpoint converted for CTranslate2 (once, kept in ``converted_path``) and run by it.

    ``compute_type`` ``auto`` is int8 on a CPU and float16 on a GPU; float32 gives the ``hf`` backend's
    greedy output. Batches hold up to ``max_batch_tokens`` source tokens, texts of similar length together.
    """

    compute_type: Literal["auto", "int8", "float32", "float16", "int8_float16"] = "auto"
    max_batch_tokens: int = Field(4096, ge=1)
    converted_path: str | None = Field(
        None,
        description="folder for the converted model, may hold {src} and {tgt}; "
        "None = a hidden .ctranslate2 folder inside the model's folder",
    )


class OpenAITranslatorConfig(_Section):
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, TGI, llama.cpp server, ...)."""

    base_url: str = "http://localhost:8000/v1"
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    temperature: float = 0.0
    max_response_bytes: int = Field(
        4 << 20, ge=1024, description="an answer longer than this is a failed text, read no further"
    )


class ApertiumTranslatorConfig(_Section):
    """Debian's offline rule-based MT; ``modes`` overrides the mode name per target (``{"es": "eng-spa"}``)."""

    binary: str = "apertium"
    modes: dict[str, str] = Field(default_factory=dict)


class TranslateConfig(_Section):
    backend: Literal["pretranslated", "hf", "ctranslate2", "openai", "apertium"] = "apertium"
    cache: Path | None = None
    hf: HFTranslatorConfig = Field(default_factory=HFTranslatorConfig)
    ctranslate2: CTranslate2TranslatorConfig = Field(default_factory=CTranslate2TranslatorConfig)
    openai: OpenAITranslatorConfig = Field(default_factory=OpenAITranslatorConfig)
    apertium: ApertiumTranslatorConfig = Field(default_factory=ApertiumTranslatorConfig)


class StructureConfig(_Section):
    enabled: bool = True
    code: bool = True
    numbers: bool = True
    tool_calls: bool = True


# A language → the close relatives a language ID model may read its text as, so that they may outrank it
# (see ``LidConfig.related_ratio``): lid.176's own confusions, measured on the UDHR in every language it
# has a label for (``curate/lid_relatives.py``), not a table written by hand. One way only: a model
# trained on unbalanced data reads a smaller language as its larger neighbour far more often than the
# reverse (lid.176 reads Galician as Portuguese or Spanish, never Portuguese as Galician), and accepting
# the reverse would let the larger language's text pass under the smaller one's label.
# Standards of one language that LID models do not tell apart: a label of any of them counts as each.
# On the UDHR dev set (tests/data/udhr) lid.176 reads 2 of 57 Bosnian paragraphs as Bosnian (the others
# as Croatian or Serbian) and 9 of 57 Malay ones as Malay (the others as Indonesian), and it has one
# label, ``no``, for Norwegian Bokmål (``nb``).
VARIETIES: tuple[tuple[str, ...], ...] = (("hr", "bs", "sr"), ("no", "nb", "nn"), ("ms", "id"))


def _lang_groups(groups: list[list[str]]) -> list[list[str]]:
    """Groups of language codes, each normalised to its base language, duplicates dropped."""
    out = []
    for group in groups:
        bases = list(dict.fromkeys(base_lang(code) for code in group))
        if len(bases) > 1:
            out.append(bases)
    return out


def _lang_lists(relatives: dict[str, list[str]]) -> dict[str, list[str]]:
    """Language → languages, every code normalised to its base language."""
    return {base_lang(code): list(dict.fromkeys(base_lang(x) for x in v)) for code, v in relatives.items()}


class LidLangConfig(_Section):
    """What one target language overrides of the ``lid`` section (``lid.langs.ca.min_prob: 0.3``)."""

    min_prob: float | None = Field(None, ge=0, le=1)
    related_ratio: float | None = Field(None, ge=0, le=1)
    related: list[str] | None = Field(None, description="replaces the language's entry of lid.related")


class LidConfig(_Section):
    """fastText language ID; ``model_path`` None means the shipped lid.176.ftz.

    A row is judged on the letters of its prose messages together (protected spans and tokens without a
    letter removed), and each message with ``short_chars`` letters alone as well; a row with fewer than
    ``min_chars`` letters is not judged. A text reads as its row's language when fastText's top label is
    that language with ``min_prob``. Otherwise its ``top_k`` labels are read: the row's language is still
    accepted when it is among them, the labels above it are close relatives it may be read as
    (``related``) and not the anchor language, and it keeps ``related_ratio`` of the top label's
    probability (any share where a ``second_opinion`` judges the relatives); in a text shorter than
    ``short_chars`` letters any language but the anchor's may outrank it, if it keeps ``short_ratio``. The
    probability it is accepted on (its own plus its relatives') must reach ``min_prob``. Where fastText is
    torn between the row's language and one other, the ``letters`` of the text decide if only one of the
    two writes some of them, else the ``second_opinion`` model if it is sure. See ``curate.stages.lid``.
    """

    enabled: bool = True
    model_path: Path | None = None
    min_prob: float = Field(0.5, ge=0, le=1)
    min_chars: int = Field(20, ge=0, description="letters a row needs to be judged (a message, to be a copy)")
    check_anchors: bool = Field(
        True,
        description="read the anchors before translating: a group whose anchor is in another language goes",
    )
    top_k: int = Field(5, ge=1, le=50, description="labels read when the top one is not enough")
    related: dict[str, list[str]] = Field(
        default_factory=lambda: {lang: list(v) for lang, v in RELATED_LANGS.items()},
        description="a language -> the close relatives its text may be read as; replaces the default table",
    )
    varieties: list[list[str]] = Field(
        default_factory=lambda: [list(g) for g in VARIETIES],
        description="groups of standards read as one language",
    )
    related_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="share of the top relative's probability the row's language keeps (no second opinion)",
    )
    short_chars: int = Field(
        100,
        ge=0,
        description="letters under which a text is short; a message with as many is also judged alone",
    )
    short_ratio: float = Field(
        0.3, ge=0, le=1, description="share of the top label's probability a short message's language keeps"
    )
    second_opinion: Literal["cld3"] | None = Field(
        "cld3", description="a second LID model deciding where fastText is torn between two languages"
    )
    letters: bool = Field(
        True,
        description="letters one of two torn languages writes and the other does not decide between them",
    )
    second_share: float = Field(
        0.1, ge=0, le=1, description="share of the row language's probability that makes another a rival"
    )
    second_min_prob: float = Field(0.9, ge=0, le=1, description="probability the second opinion must give")
    langs: dict[str, LidLangConfig] = Field(default_factory=dict, description="per-language overrides")

    _groups = field_validator("varieties")(lambda cls, v: _lang_groups(v))
    _relatives = field_validator("related")(lambda cls, v: _lang_lists(v))

    @field_validator("langs")
    @classmethod
    def _langs(cls, v: dict[str, LidLangConfig]) -> dict[str, LidLangConfig]:
        return {normalize_lang(code): settings for code, settings in v.items()}

    def for_lang(self, lang: str) -> tuple[float, float]:
        """``(min_prob, related_ratio)`` for rows in ``lang``, its overrides applied."""
        own = self.langs.get(normalize_lang(lang))
        min_prob = own.min_prob if own is not None and own.min_prob is not None else self.min_prob
        ratio = own.related_ratio if own is not None and own.related_ratio is not None else self.related_ratio
        return min_prob, ratio

    def relatives(self, lang: str) -> list[str]:
        """The close relatives rows in ``lang`` may be read as, its override applied."""
        own = self.langs.get(normalize_lang(lang))
        if own is not None and own.related is not None:
            return [base_lang(code) for code in own.related]
        return self.related.get(base_lang(lang), [])


class EquivalenceConfig(_Section):
    """Does each translation mean what its anchor means: multilingual sentence embeddings, in-batch
    margins and length (see ``curate.stages.equivalence``).

    ``floor``, ``margin`` and ``threshold`` None take the embedder's calibration (USE's, LaBSE's), and
    what an embedder does not know is estimated from the first ``calibration_groups`` groups of the input
    at the start of the build, label-free, and recorded in the manifest. Scores are model-specific: set
    them per embedder, not once for all.
    """

    enabled: bool = True
    backend: Literal["auto", "use", "e5", "sentence-transformers"] = Field(
        "auto", description="auto: USE where it reads every target language, else multilingual-e5-small"
    )
    model_path: str | None = None
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    scoring: Literal["margin", "cosine"] = Field(
        "margin", description="margin: in-batch ratio margins; cosine: one cut on the cosine to the anchor"
    )
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="a cosine every translation must reach; None: only where margins cannot",
    )
    floor: float | None = Field(None, ge=-1, le=1, description="cosine under which a message is garbage")
    margin: float | None = Field(None, description="ratio margin under which a translation is a mismatch")
    neighbours: int = Field(4, ge=1, description="nearest other pairs a ratio margin is taken against")
    aggregate: Literal["min", "mean"] = "min"
    length_ratio_min: float = Field(0.4, gt=0)
    length_ratio_max: float = Field(2.5, gt=0)
    length_z: float | None = Field(
        3.5, gt=0, description="robust z-score of a translation's log length ratio within its language"
    )
    min_rows: int = Field(16, ge=3, description="rows of a language in a batch for its length statistics")
    min_chars_for_ratio: int = Field(20, ge=0)
    calibration_groups: int = Field(256, ge=2, description="groups read to estimate a missing calibration")

    @field_validator("margin")
    @classmethod
    def _ratio(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            msg = (
                f"must be a ratio above 0 (got {v}): a translation's cosine to its anchor over the mean cosine "
                "of its nearest other pairs in the batch, about 1 (USE's calibration: 0.95)"
            )
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _ratio_order(self) -> EquivalenceConfig:
        if self.length_ratio_min >= self.length_ratio_max:
            msg = f"length_ratio_min ({self.length_ratio_min}) must be below length_ratio_max ({self.length_ratio_max})"
            raise ValueError(msg)
        return self


class WriteConfig(_Section):
    chunk_size: int = Field(256, ge=1, description="groups per chunk; one chunk is one shard")
    compression: Literal["zstd", "lz4", "none"] = "zstd"


class RayStageConfig(_Section):
    """The actors of one stage: each loads the stage's models once, then takes one chunk at a time.

    ``num_cpus`` None lets the executor choose: one CPU for ``translate`` and ``equivalence``, a quarter
    for the light stages (``anchor_lid``, ``structure``, ``lid``), scaled down on a local instance until
    every actor fits on its CPUs.
    """

    actors: int = Field(1, ge=1)
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class RayConfig(_Section):
    """Where the Ray executor runs and how many actors each stage gets (default: one).

    ``address`` None joins the cluster of a ``ray job submit`` (``RAY_ADDRESS``) or else starts a local
    instance; ``local`` always starts one; ``auto`` joins the cluster this machine belongs to;
    ``ray://host:10001`` goes through Ray Client. A cluster that asks for more than it has fails at once,
    unless ``autoscale`` says that it adds nodes when actors wait for them.
    """

    address: str | None = None
    autoscale: bool = Field(
        False, description="the cluster grows when actors wait: start even if it lacks the CPUs or GPUs asked"
    )
    stages: dict[Literal["anchor_lid", "translate", "structure", "lid", "equivalence"], RayStageConfig] = (
        Field(default_factory=dict)
    )


class ExecutorConfig(_Section):
    """What runs the stages: where the work happens, never what it produces (not part of the fingerprint)."""

    backend: Literal["local", "ray"] = "local"
    ray: RayConfig = Field(default_factory=RayConfig)


class BuildConfig(_Section):
    inputs: list[Path] = Field(default_factory=list)
    out: Path | None = None
    anchor_lang: str = "en"
    langs: list[str] = Field(default_factory=list)
    input: InputConfig = Field(default_factory=InputConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    structure: StructureConfig = Field(default_factory=StructureConfig)
    lid: LidConfig = Field(default_factory=LidConfig)
    equivalence: EquivalenceConfig = Field(default_factory=EquivalenceConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    report: bool = True
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of every pool (BLAS, torch, the encoders, CTranslate2) in each process; "
        "None = OMP_NUM_THREADS, else the idle cores",
    )
    min_keep_rate: float = Field(
        0.5, ge=0, le=1, description="warn in the summary and the report when a language keeps less"
    )
    license: str | None = Field(
        None,
        description="licence of the source data, for the dataset card: a Hub identifier (cc-by-4.0, "
        "apache-2.0...) or another short name; None: unknown, and the card says so",
    )

    # Settings that change where a build goes, how it runs or what it says, never the shards, rejects and
    # manifest: left out of the fingerprint and of the manifest's copy of the config, so toggling them
    # between a killed build and its re-run changes nothing the build writes.
    NOT_IN_OUTPUT: ClassVar[set[str]] = {"out", "executor", "report", "min_keep_rate", "threads"}
    # Settings that describe the data without changing a row: in the manifest (and the card), not in the
    # fingerprint, so a finished build takes a corrected value by running it again, recomputing nothing.
    DESCRIPTIVE: ClassVar[set[str]] = {"license"}

    @field_validator("license")
    @classmethod
    def _license(cls, v: str | None) -> str | None:
        if v is None:
            return None
        name = v.strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", name):
            msg = (
                f"license {v!r} is not a licence identifier: use the Hub's (cc-by-4.0, apache-2.0, mit, "
                "odc-by...) or a short name of letters, digits, '.', '-', '+' and '_'"
            )
            raise ValueError(msg)
        return name

    @field_validator("anchor_lang")
    @classmethod
    def _anchor(cls, v: str) -> str:
        return normalize_lang(v)

    @field_validator("langs")
    @classmethod
    def _langs(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for code in v:
            lang = normalize_lang(code)
            if lang not in out:
                out.append(lang)
        return out

    @model_validator(mode="after")
    def _targets(self) -> BuildConfig:
        self.langs = [lang for lang in self.langs if lang != self.anchor_lang]
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the output (not where it goes), to refuse mixing builds."""
        payload = self.model_dump(mode="json", exclude=self.NOT_IN_OUTPUT | self.DESCRIPTIVE)
        payload["translate"].pop("cache", None)
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]
