"""The ``translate`` stage: one candidate row per anchor and missing target language.

Only prose is sent to a translator. Code, math, URLs and placeholders are masked first
(:mod:`curate.masking`); tool calls and JSON tool results are copied verbatim; each unique masked text of
a batch is translated once per target language and cached. A candidate row whose translation failed is
rejected with the reason, never dropped:

    translator_error   the backend failed for one of the row's texts (``detail`` says why)
    empty_output       a non-empty text came back empty
    mask_lost          a ``⟦n⟧`` token was lost, duplicated or invented (``raw`` holds the output)

Backends implement :class:`Translator`. A failure that concerns only some texts of a batch is raised as
:class:`TranslationErrors` carrying the other results, so that only the rows using those texts are
rejected; any other exception fails every text of the call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import langcodes
import pyarrow as pa

from curate.config import (
    ApertiumTranslatorConfig,
    HFTranslatorConfig,
    OpenAITranslatorConfig,
    TranslateConfig,
)
from curate.masking import Masked, MaskError, mask, unmask
from curate.stage import Stage, StageResult, set_columns, split
from curate.translation_cache import TranslationCache
from schemas import PARALLEL_SCHEMA, ConfigError, base_lang, content_hash, normalize_lang

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class TranslatorConfigError(ConfigError):
    """A backend that cannot run as configured (binary, model, mode or language code missing).

    A user mistake, not bad data: :class:`Translate` lets it end the run instead of rejecting rows.
    """


class TranslationErrors(RuntimeError):
    """Some texts of a batch failed: ``results[i]`` is None exactly where ``errors[i]`` says why."""

    def __init__(self, results: list[str | None], errors: dict[int, str]) -> None:
        first = errors[min(errors)]
        super().__init__(f"{len(errors)} of {len(results)} texts failed, e.g. text {min(errors)}: {first}")
        self.results = results
        self.errors = errors


class Translator(Protocol):
    """A translation backend; ``name`` identifies it in the ``translator`` column and the cache key."""

    name: str

    def setup(self) -> None:
        """Load models or open connections, failing early on a missing binary, model or server setting."""

    def check_pair(self, src: str, tgt: str) -> None:
        """Raise :class:`TranslatorConfigError` unless ``src`` → ``tgt`` can be translated."""

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        """Translate ``texts`` in order; raise :class:`TranslationErrors` when only some fail."""


def _each(translate_one: Callable[[str], str], texts: list[str], *, workers: int = 1) -> list[str]:
    """Translate texts one at a time (``workers`` in parallel), collecting per-text failures."""

    def attempt(text: str) -> tuple[str | None, str | None]:
        try:
            return translate_one(text), None
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    if workers > 1 and len(texts) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(texts))) as pool:
            outcomes = list(pool.map(attempt, texts))
    else:
        outcomes = [attempt(t) for t in texts]
    errors = {i: error for i, (_, error) in enumerate(outcomes) if error is not None}
    results = [out for out, _ in outcomes]
    if errors:
        raise TranslationErrors(results, errors)
    return [out for out in results if out is not None]


class PretranslatedTranslator:
    """The input already holds every translation: :class:`Translate` creates no rows with this backend."""

    name = "pretranslated"

    def setup(self) -> None:
        """Nothing to load."""

    def check_pair(self, src: str, tgt: str) -> None:
        """Every pair is fine: missing languages are simply missing."""

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        msg = "translate.backend='pretranslated' translates nothing: pick apertium, hf or openai to translate"
        raise RuntimeError(msg)


# (source, target) → mode, for the pairs Debian packages (apertium-eng-spa, -eng-cat, -en-gl, -eo-en).
APERTIUM_MODES: dict[tuple[str, str], str] = {
    ("en", "es"): "eng-spa",
    ("en", "ca"): "eng-cat",
    ("en", "gl"): "en-gl",
    ("en", "eo"): "en-eo",
    ("es", "en"): "spa-eng",
    ("ca", "en"): "cat-eng",
    ("gl", "en"): "gl-en",
    ("eo", "en"): "eo-en",
}
_SEPARATOR = "\n\n⟦⟦⟦{}⟧⟧⟧\n\n"
_SEPARATOR_RE = re.compile(r"\n\n⟦⟦⟦(\d+)⟧⟧⟧\n\n")
# Apertium leaves the blanks around a word it drops ("How do I" → "Como  desfago"); indentation stays.
_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")


class ApertiumTranslator:
    """Debian's rule-based MT, one ``apertium -u MODE`` process per batch.

    The texts of a batch are joined by numbered separator paragraphs. Apertium copies them unchanged and
    treats the blank lines around them as sentence ends, so no word moves across a separator and every
    text translates exactly as it would alone. If the separators do not come back in order, each text is
    translated in its own process.
    """

    def __init__(self, config: ApertiumTranslatorConfig) -> None:
        self.binary = config.binary
        self.modes = {normalize_lang(lang): mode for lang, mode in config.modes.items()}
        self.name = "apertium" + "".join(f":{lang}={mode}" for lang, mode in sorted(self.modes.items()))

    @cached_property
    def _executable(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            msg = (
                f"translate.apertium.binary {self.binary!r} not found: install Apertium and the pairs you "
                "need, e.g. `apt-get install apertium apertium-eng-spa`"
            )
            raise TranslatorConfigError(msg)
        return path

    @cached_property
    def installed_modes(self) -> frozenset[str]:
        listing = subprocess.run([self._executable, "-l"], capture_output=True, text=True, check=True)
        return frozenset(listing.stdout.split())

    def setup(self) -> None:
        missing = sorted(set(self.modes.values()) - self.installed_modes)
        if missing:
            msg = (
                f"translate.apertium.modes names {missing}, which are not installed "
                f"(installed: {sorted(self.installed_modes)}); `apt-get install apertium-<pair>` adds them"
            )
            raise TranslatorConfigError(msg)

    def mode(self, src: str, tgt: str) -> str:
        mode = self.modes.get(tgt) or APERTIUM_MODES.get((base_lang(src), base_lang(tgt)))
        if mode is None:
            msg = (
                f"no default Apertium mode for {src}→{tgt} (defaults: "
                f"{', '.join(f'{s}→{t}: {m}' for (s, t), m in APERTIUM_MODES.items())}); "
                f"set translate.apertium.modes.{tgt}"
            )
            raise TranslatorConfigError(msg)
        if mode not in self.installed_modes:
            msg = (
                f"Apertium mode {mode!r} for {src}→{tgt} is not installed "
                f"(installed: {sorted(self.installed_modes)}): `apt-get install apertium-{mode}`"
            )
            raise TranslatorConfigError(msg)
        return mode

    def check_pair(self, src: str, tgt: str) -> None:
        self.mode(src, tgt)

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        mode = self.mode(src, tgt)
        if len(texts) > 1:
            joined = "".join(text + _SEPARATOR.format(i) for i, text in enumerate(texts))
            try:
                output = self._run(mode, joined)
            except RuntimeError:
                output = ""
            parts = _SEPARATOR_RE.split(output)
            if parts[1::2] == [str(i) for i in range(len(texts))] and not parts[-1].strip():
                return [_INNER_SPACES.sub(" ", part) for part in parts[0:-1:2]]
        return _each(lambda text: _INNER_SPACES.sub(" ", self._run(mode, text)), texts)

    def _run(self, mode: str, text: str) -> str:
        done = subprocess.run(
            [self._executable, "-u", mode], input=text, capture_output=True, text=True, encoding="utf-8"
        )
        if done.returncode != 0:
            msg = f"apertium {mode} exited with {done.returncode}: {done.stderr.strip()[-300:]}"
            raise RuntimeError(msg)
        return done.stdout


_PATH_FIELDS = frozenset({"src", "tgt"})
# Model types that translate between many languages and pick them by language token.
_MULTILINGUAL = frozenset({"m2m_100", "nllb-moe", "mbart"})


@dataclass(frozen=True)
class _Loaded:
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel


class HFSeq2SeqTranslator:
    """A local Marian, NLLB or M2M100 checkpoint, run with greedy or beam search on length-sorted batches.

    ``model_path`` may hold ``{src}`` and ``{tgt}`` (one Marian folder per pair). Multilingual models
    (NLLB, M2M100, mBART-50) need ``lang_codes``: the source code goes to the tokenizer's ``src_lang`` and
    the target code becomes the forced first token. Inputs longer than the model reads and outputs cut at
    ``max_new_tokens`` are per-text failures, never silently truncated translations.
    """

    def __init__(self, config: HFTranslatorConfig) -> None:
        if not config.model_path:
            msg = "translate.hf.model_path is required: a local folder holding a Marian, NLLB or M2M100 model"
            raise ConfigError(msg)
        fields = {name for _, name, _, _ in string.Formatter().parse(config.model_path) if name is not None}
        if fields - _PATH_FIELDS:
            msg = (
                f"translate.hf.model_path {config.model_path!r} uses {sorted(fields - _PATH_FIELDS)}: "
                "only {src} and {tgt} are allowed"
            )
            raise ConfigError(msg)
        self.config = config
        self.template = config.model_path
        self.name = f"hf:{config.model_path}"
        self._loaded: dict[str, _Loaded] = {}

    def setup(self) -> None:
        """Nothing shared to load: :meth:`check_pair` loads each pair's model."""

    def path(self, src: str, tgt: str) -> str:
        return self.template.format(src=src, tgt=tgt)

    def _load(self, src: str, tgt: str) -> _Loaded:
        path = self.path(src, tgt)
        if path not in self._loaded:
            if not Path(path).is_dir():
                msg = (
                    f"translate.hf.model_path {self.template!r} gives {path!r} for {src}→{tgt}, "
                    "which is not a folder"
                )
                raise TranslatorConfigError(msg)
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            model = AutoModelForSeq2SeqLM.from_pretrained(
                path, local_files_only=True, use_safetensors=True, trust_remote_code=False
            )
            model.to(self.config.device).eval()
            self._loaded[path] = _Loaded(tokenizer, model)
        return self._loaded[path]

    def _lang_code(self, lang: str) -> str:
        code = self.config.lang_codes.get(lang)
        if code is None:
            msg = (
                f"translate.hf.lang_codes has no entry for {lang!r} (it has "
                f"{sorted(self.config.lang_codes)}): add the model's code for it, "
                f"e.g. --set translate.hf.lang_codes.{lang}=..."
            )
            raise TranslatorConfigError(msg)
        return code

    def _forced_bos(self, loaded: _Loaded, src: str, tgt: str) -> int | None:
        """The target language token to force first, or None for a single-pair model."""
        model_type = loaded.model.config.model_type
        if not self.config.lang_codes:
            if model_type in _MULTILINGUAL:
                msg = (
                    f"{self.path(src, tgt)} is a multilingual {model_type} model: set translate.hf.lang_codes"
                )
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
                f"language code {code!r} (translate.hf.lang_codes.{tgt}) is not a token of "
                f"{self.path(src, tgt)}'s tokenizer"
            )
            raise TranslatorConfigError(msg)
        return token_id

    def check_pair(self, src: str, tgt: str) -> None:
        self._forced_bos(self._load(src, tgt), src, tgt)

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        loaded = self._load(src, tgt)
        forced_bos = self._forced_bos(loaded, src, tgt)
        if forced_bos is not None:
            loaded.tokenizer.src_lang = self._lang_code(src)
        if not texts:
            return []
        limit = getattr(loaded.model.config, "max_position_embeddings", None)  # None: relative positions
        lengths = [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]]
        results: list[str | None] = [None] * len(texts)
        errors = {
            i: f"input is {n} tokens, the model reads at most {limit}"
            for i, n in enumerate(lengths)
            if limit is not None and n > limit
        }
        order = sorted(
            (i for i in range(len(texts)) if i not in errors), key=lengths.__getitem__, reverse=True
        )
        size = self.config.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            outputs = self._generate(loaded, [texts[i] for i in batch], forced_bos)
            for i, output in zip(batch, outputs, strict=True):
                if output is None:
                    errors[i] = f"translation cut at max_new_tokens={self.config.max_new_tokens}"
                results[i] = output
        if errors:
            raise TranslationErrors(results, errors)
        return [out for out in results if out is not None]

    def _generate(self, loaded: _Loaded, texts: list[str], forced_bos: int | None) -> list[str | None]:
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


_SYSTEM_PROMPT = (
    "You are a professional translator. Translate the user's message from {src} to {tgt}. "
    "Tokens of the form ⟦0⟧, ⟦1⟧, ... stand for code, formulas or links: copy each one unchanged, "
    "exactly once, where it belongs in the translation. Keep line breaks and formatting. "
    "Output only the translation, without notes, quotes or explanations."
)


def _language_name(code: str) -> str:
    """English name of a language (``zh_Hans`` → "Chinese (Simplified)"); needs ``langcodes[data]``."""
    return langcodes.Language.get(code.replace("_", "-")).display_name("en")


class OpenAITranslator:
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint, one request per text.

    ``concurrency`` requests run at once from a thread pool over one HTTP client. 429, 5xx, timeouts and
    connection errors are retried ``max_retries`` times with exponential backoff (``backoff_s``, doubled
    each time); any other HTTP error fails the text at once.
    """

    def __init__(self, config: OpenAITranslatorConfig) -> None:
        if not config.model:
            msg = (
                "translate.openai.model is required: the model name the server serves "
                "(vLLM --served-model-name)"
            )
            raise ConfigError(msg)
        self.config = config
        self.name = f"openai:{config.model}"

    @cached_property
    def _client(self) -> httpx.Client:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            base_url=self.config.base_url.rstrip("/"),
            headers=headers,
            timeout=self.config.timeout_s,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        )

    def setup(self) -> None:
        self._client  # noqa: B018 - open the client once, before the worker threads share it

    def check_pair(self, src: str, tgt: str) -> None:
        """Any pair can be asked for (the later stages judge the output); the prompt needs both names."""
        self._system_prompt(src, tgt)

    def _system_prompt(self, src: str, tgt: str) -> str:
        return _SYSTEM_PROMPT.format(src=_language_name(src), tgt=_language_name(tgt))

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        system = self._system_prompt(src, tgt)
        return _each(lambda text: self._complete(system, text), texts, workers=self.config.concurrency)

    def _complete(self, system: str, text: str) -> str:
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "temperature": self.config.temperature,
        }
        failure = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as e:
                failure = f"{type(e).__name__}: {e}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                msg = f"HTTP {response.status_code} (not retried): {response.text[:200]}"
                raise RuntimeError(msg)
            return _completion_text(response)
        msg = f"gave up after {self.config.max_retries + 1} attempts, last: {failure}"
        raise RuntimeError(msg)


def _completion_text(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        msg = f"not a chat completion ({type(e).__name__}): {response.text[:200]}"
        raise RuntimeError(msg) from e
    if not isinstance(content, str):
        msg = f"chat completion content is {type(content).__name__}, expected text"
        raise RuntimeError(msg)
    return content


_BACKENDS: dict[str, Callable[[TranslateConfig], Translator]] = {
    "pretranslated": lambda config: PretranslatedTranslator(),
    "apertium": lambda config: ApertiumTranslator(config.apertium),
    "hf": lambda config: HFSeq2SeqTranslator(config.hf),
    "openai": lambda config: OpenAITranslator(config.openai),
}


def make_translator(config: TranslateConfig) -> Translator:
    return _BACKENDS[config.backend](config)


_TEXT_FIELDS = ("messages", "chosen", "rejected")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _to_translate(message: dict[str, Any]) -> Masked | None:
    """The masked text to send to the translator, or None when the content is copied as it is."""
    if message["role"] == "tool" and _is_json(message["content"]):
        return None
    masked = mask(message["content"])
    if not any(ch.isalpha() for ch in masked.text):  # empty, numbers only, all code or math
        return None
    return masked


def _keep_edges(source: str, translated: str) -> str:
    """The translation with the source's leading and trailing whitespace (MT engines drop or add it)."""
    lead = source[: len(source) - len(source.lstrip())]
    trail = source[len(source.rstrip()) :]
    return lead + translated.strip() + trail


@dataclass(frozen=True)
class _Problem:
    reason: str
    detail: str
    raw: str | None = None


@dataclass
class _Translations:
    """Outcomes for the unique masked texts of one target language."""

    done: dict[str, str]
    failed: dict[str, str]


class Translate(Stage):
    """Add a translated row for every anchor and every target language its group does not have yet."""

    name = "translate"

    def __init__(
        self,
        translator: Translator,
        *,
        anchor_lang: str,
        langs: list[str],
        cache: TranslationCache | None = None,
    ) -> None:
        self.translator = translator
        self.anchor_lang = normalize_lang(anchor_lang)
        targets = (normalize_lang(lang) for lang in langs)
        self.langs = list(dict.fromkeys(lang for lang in targets if lang != self.anchor_lang))
        self.cache = cache

    def setup(self) -> None:
        self.translator.setup()
        for lang in self.langs:
            self.translator.check_pair(self.anchor_lang, lang)

    def process(self, batch: pa.Table) -> StageResult:
        rows = batch.to_pylist()
        work = self._work(rows)
        masks: dict[tuple[str, str], Masked | None] = {}
        needed: dict[str, set[str]] = {lang: set() for _, lang in work}
        for row, lang in work:
            for message in _messages(row):
                key = (message["role"], message["content"])
                if key not in masks:
                    masks[key] = _to_translate(message)
                masked = masks[key]
                if masked is not None:
                    needed[lang].add(masked.text)
        outcomes = {lang: self._translate_unique(sorted(texts), lang) for lang, texts in needed.items()}

        new_rows: list[dict[str, Any]] = []
        problems: list[_Problem | None] = []
        for row, lang in work:
            new_row, problem = self._candidate(row, lang, masks, outcomes[lang])
            new_rows.append(new_row)
            problems.append(problem)
        created = Counter(lang for _, lang in work)
        result = split(
            pa.Table.from_pylist(new_rows, schema=PARALLEL_SCHEMA),
            [p.reason if p else None for p in problems],
            stage=self.name,
            details=[p.detail if p else None for p in problems],
        )
        rejected = set_columns(result.rejected, {"raw": [p.raw for p in problems if p is not None]})
        kept = pa.concat_tables([batch, result.kept]).sort_by(
            [("group_id", "ascending"), ("lang", "ascending")]
        )
        return StageResult(kept=kept, rejected=rejected, created=created)

    def _work(self, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        """(anchor row, target language) for every translation the batch lacks."""
        present = {(row["group_id"], row["lang"]) for row in rows}
        work: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            if not row["is_anchor"]:
                continue
            if row["lang"] != self.anchor_lang:
                msg = (
                    f"anchor row of group {row['group_id']!r} has lang {row['lang']!r}, "
                    f"expected anchor_lang {self.anchor_lang!r}"
                )
                raise ValueError(msg)
            if not isinstance(self.translator, PretranslatedTranslator):
                work += [(row, lang) for lang in self.langs if (row["group_id"], lang) not in present]
        return work

    def _translate_unique(self, texts: list[str], tgt: str) -> _Translations:
        """Translate each text once: cached ones are looked up, the rest go to the backend in one call."""
        key = {"backend": self.translator.name, "src": self.anchor_lang, "tgt": tgt}
        done = self.cache.get_many(texts, **key) if self.cache is not None else {}
        missing = [t for t in texts if t not in done]
        if not missing:
            return _Translations(done, {})
        errors: dict[int, str] = {}
        try:
            outputs: list[str | None] = list(
                self.translator.translate(missing, src=self.anchor_lang, tgt=tgt)
            )
        except TranslatorConfigError:
            raise
        except TranslationErrors as e:
            outputs, errors = e.results, e.errors
        except Exception as e:
            outputs, errors = (
                [None] * len(missing),
                dict.fromkeys(range(len(missing)), f"{type(e).__name__}: {e}"),
            )
        if len(outputs) != len(missing):
            msg = f"translator {self.translator.name!r} returned {len(outputs)} texts for {len(missing)}"
            raise RuntimeError(msg)
        fresh = {text: out for text, out in zip(missing, outputs, strict=True) if out is not None}
        if self.cache is not None and fresh:
            self.cache.put_many(fresh, **key)
        return _Translations(done | fresh, {missing[i]: error for i, error in errors.items()})

    def _candidate(
        self,
        anchor: dict[str, Any],
        lang: str,
        masks: dict[tuple[str, str], Masked | None],
        outcome: _Translations,
    ) -> tuple[dict[str, Any], _Problem | None]:
        """The translated row for ``lang`` and the first problem found in it (None when it is whole)."""
        first: _Problem | None = None
        texts: dict[str, list[dict[str, Any]] | None] = {}
        for field in _TEXT_FIELDS:
            if anchor[field] is None:
                texts[field] = None
                continue
            translated: list[dict[str, Any]] = []
            for k, message in enumerate(anchor[field]):
                masked = masks[(message["role"], message["content"])]
                content, problem = (
                    (message["content"], None) if masked is None else _render(masked, message, outcome)
                )
                translated.append({**message, "content": content})
                if problem is not None and first is None:
                    where = f"{field}[{k}] ({message['role']}): "
                    first = _Problem(problem.reason, where + problem.detail, problem.raw)
            texts[field] = translated
        row = {
            **anchor,
            **texts,
            "lang": lang,
            "is_anchor": False,
            "translator": self.translator.name,
            "lid_lang": None,
            "lid_prob": None,
            "equivalence": None,
            "length_ratio": None,
            "content_hash": content_hash(texts["messages"], texts["chosen"], texts["rejected"]),
        }
        return row, first


def _messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for field in _TEXT_FIELDS for m in row[field] or []]


def _render(masked: Masked, message: dict[str, Any], outcome: _Translations) -> tuple[str, _Problem | None]:
    """The translated content of one message, or what is left of it and why it cannot be used."""
    if masked.text in outcome.failed:
        return "", _Problem("translator_error", outcome.failed[masked.text])
    output = outcome.done[masked.text]
    if not output.strip():
        return "", _Problem("empty_output", f"empty translation of {len(masked.text)} characters", output)
    try:
        restored = unmask(output, masked.spans)
    except MaskError as e:
        return output, _Problem("mask_lost", str(e), output)
    return _keep_edges(message["content"], restored), None
