"""``curate build``: read → anchor_lid → translate → structure → lid → equivalence → write, resumable chunk
by chunk; then the manifest, the report and the dataset card."""

from __future__ import annotations

import json
from collections.abc import Iterator

from curate.card import write_dataset_card
from curate.config import BuildConfig
from curate.executors.base import Executor, run_chunk
from curate.executors.local import LocalExecutor
from curate.manifest import assemble_manifest, thresholds
from curate.readers import Chunk, fingerprint_inputs, read_chunks
from curate.report import write_report
from curate.stages.base import Stage
from curate.stages.embedders import Calibration, make_embedder
from curate.stages.equivalence import Equivalence
from curate.stages.lid import AnchorLid, Lid
from curate.stages.structure import Structure
from curate.stages.translate import Translate
from curate.translators import TranslationCache, make_translator
from curate.writer import STATE_DIR, ShardWriter, atomic_write_bytes, exclusive
from schemas import ConfigError, InputInfo, Manifest, UserError
from schemas.threads import set_threads

CALIBRATION_FILE = "calibration.json"


def make_stages(config: BuildConfig) -> list[Stage]:
    """The pipeline's stages in order, as the config switches them on."""
    assert config.out is not None
    cache = None
    if config.translate.backend != "pretranslated":
        cache = TranslationCache(config.translate.cache or config.out / STATE_DIR / "translations.sqlite")
    stages: list[Stage] = []
    if config.lid.enabled and config.lid.check_anchors:
        stages.append(AnchorLid(config.lid, anchor_lang=config.anchor_lang))
    stages.append(
        Translate(
            make_translator(config.translate), anchor_lang=config.anchor_lang, langs=config.langs, cache=cache
        )
    )
    if config.structure.enabled:
        stages.append(Structure(config.structure))
    if config.lid.enabled:
        stages.append(Lid(config.lid, anchor_lang=config.anchor_lang))
    if config.equivalence.enabled:
        embedder = make_embedder(config.equivalence, langs=config.langs, threads=config.threads)
        stages.append(Equivalence(config.equivalence, embedder))
    return stages


def make_executor(
    config: BuildConfig, stages: list[Stage], writer: ShardWriter, *, progress: bool
) -> Executor:
    """The executor ``executor.backend`` names; Ray is imported only when it is chosen."""
    if config.executor.backend == "ray":
        from curate.executors.ray import RayExecutor

        return RayExecutor(
            stages, writer, config=config.executor.ray, threads=config.threads, progress=progress
        )
    return LocalExecutor(stages, writer, progress=progress)


def build(config: BuildConfig, *, progress: bool = True) -> Manifest:
    """Run a whole build into ``config.out`` and return its manifest; committed chunks are skipped."""
    if not config.inputs:
        msg = "no input: pass --input PATH (or `inputs:` in the config file)"
        raise ConfigError(msg)
    if config.out is None:
        msg = "no output directory: pass --out DIR"
        raise ConfigError(msg)
    if config.out.exists() and not config.out.is_dir():
        msg = f"--out {config.out} is a file: the output must be a folder (new, or of an earlier build to resume)"
        raise ConfigError(msg)
    if not config.langs:
        msg = "no target languages: pass --langs, e.g. --langs de,fr,sw"
        raise ConfigError(msg)
    inputs = fingerprint_inputs(config.inputs)
    with exclusive(config.out):
        return _build(config, inputs, progress=progress)


def _build(config: BuildConfig, inputs: list[InputInfo], *, progress: bool) -> Manifest:
    assert config.out is not None
    set_threads(config.threads)  # this process's pools: the local executor's stages and the calibration
    stages = make_stages(config)  # before claiming --out, so a setting refused here can be fixed in place
    _claim_output(config, inputs)
    calibrate(config, stages)
    writer = ShardWriter(config.out, compression=config.write.compression)
    chunks = _chunks(config, chunk_size=config.write.chunk_size)
    executor = make_executor(config, stages, writer, progress=progress)
    records = executor.run(chunks)
    atomic_write_bytes(config.out / STATE_DIR / "stages.json", executor.stats.to_json().encode())
    manifest = assemble_manifest(config, records, inputs, thresholds(config, stages))
    atomic_write_bytes(config.out / "manifest.json", manifest.model_dump_json(indent=1).encode())
    if config.report:
        write_report(config.out, min_keep_rate=config.min_keep_rate)
    # Always, report or not: without the card, datasets.load_dataset(OUT) mixes kept and rejected rows.
    write_dataset_card(config.out)
    return manifest


def _chunks(config: BuildConfig, *, chunk_size: int) -> Iterator[Chunk]:
    """The input as ``curate build`` reads it, in chunks of ``chunk_size`` groups."""
    return read_chunks(
        config.inputs,
        config=config.input,
        anchor_lang=config.anchor_lang,
        langs=config.langs,
        chunk_size=chunk_size,
        dedup=config.dedup,
    )


def calibrate(config: BuildConfig, stages: list[Stage]) -> None:
    """Give the equivalence stage the calibration values its embedder lacks, estimated once per output
    folder from the first ``equivalence.calibration_groups`` groups of the input, label-free.

    The sample goes through fresh copies of the stages before ``equivalence`` (translations are cached,
    so they are not paid twice), in this process: the values are fixed before the first chunk, so every
    chunk is judged alike whichever executor runs it. They are kept in ``OUT/.state/calibration.json``,
    and a resumed build reads them back instead of estimating again.
    """
    assert config.out is not None
    stage = next((s for s in stages if isinstance(s, Equivalence)), None)
    if stage is None or not stage.missing():
        return
    path = config.out / STATE_DIR / CALIBRATION_FILE
    if path.is_file():
        stage.calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
        return
    sample = next(iter(_chunks(config, chunk_size=config.equivalence.calibration_groups)), None)
    if sample is None:
        return  # no group to judge
    helpers = make_stages(config)
    *before, equivalence = helpers[: next(i for i, s in enumerate(helpers) if isinstance(s, Equivalence)) + 1]
    assert isinstance(equivalence, Equivalence)
    try:
        for helper in [*before, equivalence]:
            helper.setup()
    except UserError as e:
        msg = (
            f"{e} (the calibration of {stage.embedder.name} lacks {', '.join(stage.missing())}, estimated "
            "from the first groups on this machine; set them under equivalence: to skip it)"
        )
        raise ConfigError(msg) from e
    stage.calibration = equivalence.calibrate(run_chunk(before, sample).rows)
    atomic_write_bytes(path, json.dumps(stage.calibration.as_dict(), indent=1).encode())


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
