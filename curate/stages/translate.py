"""The ``translate`` stage: one candidate row per anchor and missing target language.

Only prose is sent to a translator. Code, math, URLs and placeholders are masked first
(:mod:`curate.text.masking`); tool calls and JSON tool results are copied verbatim; each unique masked
text of a batch is translated once per target language and cached. A candidate row whose translation failed is
rejected with the reason, never dropped:

    translator_error   the backend failed for one of the row's texts (``detail`` says why), or gave
                       text UTF-8 cannot store (a lone surrogate)
    empty_output       a non-empty text came back empty
    mask_lost          a ``⟦n⟧`` token was lost, duplicated or invented (``raw`` holds the output)
    same_completions   a preference row's chosen and rejected answers came back the same

Backends implement :class:`curate.translators.Translator` (see there how they report failures).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate.stages.base import Stage, StageResult, set_columns, split
from curate.text.masking import MASKING_VERSION, Masked, MaskError, mask, unmask
from curate.translators.base import TranslationErrors, Translator, TranslatorConfigError
from curate.translators.cache import TranslationCache
from schemas import CONVERSATION_COLUMNS, PARALLEL_SCHEMA, canonical_json, content_hash, normalize_lang


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
        if self.cache is not None:
            self.cache.check()  # a path that cannot hold the cache fails here, before any work
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
            if self.translator.translates:
                work += [(row, lang) for lang in self.langs if (row["group_id"], lang) not in present]
        return work

    def _translate_unique(self, texts: list[str], tgt: str) -> _Translations:
        """Translate each text once: cached ones are looked up, the rest go to the backend in one call."""
        key: dict[str, str] = {}
        done: dict[str, str] = {}
        if self.cache is not None:
            key = {"identity": self._cache_identity(tgt), "src": self.anchor_lang, "tgt": tgt}
            done = self.cache.get_many(texts, **key)
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
        outputs = list(outputs)
        for i, out in enumerate(outputs):
            bad = None if out is None else _unencodable(out)
            if bad is not None:
                outputs[i] = None
                errors[i] = f"the translation holds a lone surrogate ({bad}), which UTF-8 cannot encode"
        fresh = {text: out for text, out in zip(missing, outputs, strict=True) if out is not None}
        if self.cache is not None and fresh:
            self.cache.put_many(fresh, **key)
        return _Translations(done | fresh, {missing[i]: error for i, error in errors.items()})

    def _cache_identity(self, tgt: str) -> str:
        """What a cached translation into ``tgt`` was made with: the backend's settings and model, and
        the masking that produced the texts it was given (a translation made otherwise is not reused)."""
        translator = self.translator.cache_identity(self.anchor_lang, tgt)
        return canonical_json({"translator": translator, "masking": MASKING_VERSION})

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
        for field in CONVERSATION_COLUMNS:
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
        if first is None and texts["chosen"] is not None and texts["chosen"] == texts["rejected"]:
            first = _Problem("same_completions", "chosen and rejected translate to the same text")
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


def _unencodable(text: str) -> str | None:
    """The escape of the first character of ``text`` UTF-8 cannot encode (a lone surrogate, which a JSON
    answer can hold as ``"\\ud800"``), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.object[e.start : e.end].encode("unicode_escape").decode("ascii")
    return None


def _messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for field in CONVERSATION_COLUMNS for m in row[field] or []]


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
