"""``manifest.json``: what a build made, from what, with which cut-offs, and how every row ended."""

from __future__ import annotations

from curate.config import BuildConfig
from curate.stages.base import Stage
from curate.stages.equivalence import Equivalence
from curate.writer import ChunkRecord
from schemas import InputInfo, LangCounts, Manifest

# Prefix of the keys saying which values were estimated from the data, and from how many groups.
ESTIMATED = "estimated."


def thresholds(config: BuildConfig, stages: list[Stage]) -> dict[str, float]:
    """The cut-offs in force, for the manifest and the report's plots: ``lid_*`` (with per-language
    overrides as ``lid_min_prob.ca``), ``equivalence`` (the cosine cut where margins are not used),
    ``equivalence_floor`` and ``equivalence_margin`` (margin scoring), ``length_*``; and for each value
    estimated from the data, ``estimated.<key>``: the number of groups it was estimated from."""
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
            calibration = stage.calibration
            keys = {"threshold": "equivalence"}
            if calibration.threshold is not None:
                out["equivalence"] = calibration.threshold
            if config.equivalence.scoring == "margin":
                keys |= {"floor": "equivalence_floor", "margin": "equivalence_margin"}
                if stage.cut is not None:
                    out["equivalence_floor"] = stage.cut
                if calibration.margin is not None:
                    out["equivalence_margin"] = calibration.margin
            for name in calibration.estimated:
                if name in keys and keys[name] in out:
                    out[ESTIMATED + keys[name]] = calibration.groups
            out["length_ratio_min"] = config.equivalence.length_ratio_min
            out["length_ratio_max"] = config.equivalence.length_ratio_max
            if config.equivalence.length_z is not None:
                out["length_z"] = config.equivalence.length_z
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
