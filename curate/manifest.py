"""``manifest.json``: what a build made, from what, with which cut-offs, and how every row ended."""

from __future__ import annotations

from curate.config import BuildConfig
from curate.stages.base import Stage
from curate.stages.equivalence import Equivalence
from curate.writer import ChunkRecord
from schemas import InputInfo, LangCounts, Manifest


def thresholds(config: BuildConfig, stages: list[Stage]) -> dict[str, float]:
    """The cut-offs in force, for the manifest and the report's plots (language ID's per-language
    overrides as ``lid_min_prob.ca``)."""
    out: dict[str, float] = {}
    lid = config.lid
    if lid.enabled:
        out |= {
            "lid_min_prob": lid.min_prob,
            "lid_related_ratio": lid.related_ratio,
            "lid_short_chars": lid.short_chars,
            "lid_short_ratio": lid.short_ratio,
        }
        for lang, own in sorted(lid.langs.items()):
            if own.min_prob is not None:
                out[f"lid_min_prob.{lang}"] = own.min_prob
            if own.related_ratio is not None:
                out[f"lid_related_ratio.{lang}"] = own.related_ratio
    for stage in stages:
        if isinstance(stage, Equivalence):
            out["equivalence"] = stage.threshold
            out["length_ratio_min"] = config.equivalence.length_ratio_min
            out["length_ratio_max"] = config.equivalence.length_ratio_max
    return out


def assemble_manifest(
    config: BuildConfig, records: list[ChunkRecord], inputs: list[InputInfo], cuts: dict[str, float]
) -> Manifest:
    counts: dict[str, LangCounts] = {}
    for record in records:
        for lang, c in record.counts.items():
            counts[lang] = counts.get(lang, LangCounts()) + c
    order = [config.anchor_lang, *config.langs]
    ordered = {lang: counts[lang] for lang in order if lang in counts}
    ordered |= {lang: counts[lang] for lang in sorted(counts) if lang not in ordered}
    return Manifest(
        anchor_lang=config.anchor_lang,
        langs=config.langs,
        shards=[r.shard for r in records if r.shard is not None],
        rejects=[r.rejects for r in records if r.rejects is not None],
        counts=ordered,
        inputs=inputs,
        # The executor changes where the work ran, not the output: a local and a Ray build of the same
        # config and inputs have the same manifest.
        config=config.model_dump(mode="json", exclude=config.NOT_IN_OUTPUT),
        config_hash=config.fingerprint(),
        thresholds=cuts,
    )
