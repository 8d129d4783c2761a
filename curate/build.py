"""``curate build``: read → translate → structure → lid → equivalence → write, resumable chunk by chunk."""

from __future__ import annotations

import json

from curate.config import BuildConfig
from curate.equivalence import Equivalence
from curate.executor import Executor, LocalExecutor
from curate.lid import Lid
from curate.readers import fingerprint_inputs, read_chunks
from curate.report import write_report
from curate.stage import Stage
from curate.structure import Structure
from curate.translate import Translate, make_translator
from curate.translation_cache import TranslationCache
from curate.writer import STATE_DIR, ChunkRecord, ShardWriter, atomic_write_bytes
from schemas import ConfigError, InputInfo, LangCounts, Manifest


def make_stages(config: BuildConfig) -> list[Stage]:
    """The pipeline's stages in order, as the config switches them on."""
    assert config.out is not None
    cache = None
    if config.translate.backend != "pretranslated":
        cache = TranslationCache(config.translate.cache or config.out / STATE_DIR / "translations.sqlite")
    stages: list[Stage] = [
        Translate(
            make_translator(config.translate), anchor_lang=config.anchor_lang, langs=config.langs, cache=cache
        )
    ]
    if config.structure.enabled:
        stages.append(Structure(config.structure))
    if config.lid.enabled:
        stages.append(Lid(config.lid))
    if config.equivalence.enabled:
        stages.append(Equivalence(config.equivalence))
    return stages


def make_executor(
    config: BuildConfig, stages: list[Stage], writer: ShardWriter, *, progress: bool
) -> Executor:
    """The executor ``executor.backend`` names; Ray is imported only when it is chosen."""
    if config.executor.backend == "ray":
        from curate.ray_executor import RayExecutor

        return RayExecutor(stages, writer, config=config.executor.ray, progress=progress)
    return LocalExecutor(stages, writer, progress=progress)


def thresholds(config: BuildConfig, stages: list[Stage]) -> dict[str, float]:
    """The cut-offs in force, for the manifest and the report's plots."""
    out: dict[str, float] = {}
    if config.lid.enabled:
        out["lid_min_prob"] = config.lid.min_prob
    for stage in stages:
        if isinstance(stage, Equivalence):
            out["equivalence"] = stage.threshold
            out["length_ratio_min"] = config.equivalence.length_ratio_min
            out["length_ratio_max"] = config.equivalence.length_ratio_max
    return out


def build(config: BuildConfig, *, progress: bool = True) -> Manifest:
    """Run a whole build into ``config.out`` and return its manifest; committed chunks are skipped."""
    if not config.inputs:
        msg = "no input: pass --input PATH (or `inputs:` in the config file)"
        raise ConfigError(msg)
    if config.out is None:
        msg = "no output directory: pass --out DIR"
        raise ConfigError(msg)
    if not config.langs:
        msg = "no target languages: pass --langs, e.g. --langs de,fr,sw"
        raise ConfigError(msg)
    inputs = fingerprint_inputs(config.inputs)
    _claim_output(config, inputs)
    stages = make_stages(config)
    writer = ShardWriter(config.out, compression=config.write.compression)
    chunks = read_chunks(
        config.inputs,
        config=config.input,
        anchor_lang=config.anchor_lang,
        langs=config.langs,
        chunk_size=config.write.chunk_size,
    )
    executor = make_executor(config, stages, writer, progress=progress)
    records = executor.run(chunks)
    atomic_write_bytes(config.out / STATE_DIR / "stages.json", executor.stats.to_json().encode())
    manifest = assemble_manifest(config, records, inputs, thresholds(config, stages))
    atomic_write_bytes(config.out / "manifest.json", manifest.model_dump_json(indent=1).encode())
    if config.report:
        write_report(config.out)
    return manifest


def _claim_output(config: BuildConfig, inputs: list[InputInfo]) -> None:
    """Refuse to resume into a directory built from another config or other inputs."""
    assert config.out is not None
    state = config.out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    identity = {"config": config.fingerprint(), "inputs": [i.sha256 for i in inputs]}
    path = state / "build.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != identity:
            msg = (
                f"{config.out} holds a build from another config or other inputs "
                f"(config {previous.get('config')} vs {identity['config']}): use a new --out or delete it"
            )
            raise ConfigError(msg)
    else:
        atomic_write_bytes(path, json.dumps(identity).encode())


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
        config=config.model_dump(mode="json", exclude={"out", "executor"}),
        config_hash=config.fingerprint(),
        thresholds=cuts,
    )
