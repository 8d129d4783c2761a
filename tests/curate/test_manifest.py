"""``curate.manifest.thresholds``: the cut-offs a build records, and which of them were estimated."""

from __future__ import annotations

from curate.config import BuildConfig
from curate.manifest import thresholds
from curate.stages.embedders import Calibration, UniversalSentenceEncoderEmbedder
from curate.stages.equivalence import Equivalence


def config(**sections: object) -> BuildConfig:
    return BuildConfig.model_validate({"langs": ["ca"], **sections})


def test_the_thresholds_in_force_with_per_language_overrides() -> None:
    build = config(lid={"langs": {"cat": {"min_prob": 0.3}}})
    cuts = thresholds(build, [Equivalence(build.equivalence, UniversalSentenceEncoderEmbedder())])
    assert cuts == {
        "lid_min_prob": 0.5,
        "lid_min_prob.ca": 0.3,
        "lid_related_ratio": 0.1,
        "lid_short_chars": 100,
        "lid_short_ratio": 0.3,
        "equivalence": 0.5,
        "equivalence_floor": 0.1,
        "equivalence_margin": 0.95,
        "length_ratio_min": 0.4,
        "length_ratio_max": 2.5,
        "length_z": 3.5,
    }


class Unknown:
    name = "an encoder of unknown scale"
    calibration = Calibration(threshold=0.7, source="its threshold")


def test_estimated_values_say_from_how_many_groups() -> None:
    build = config(equivalence={"threshold": None, "length_z": None}, lid={"enabled": False})
    stage = Equivalence(build.equivalence, Unknown())  # type: ignore[arg-type]
    stage.calibration = stage.calibration.filled(
        Calibration(floor=0.2, margin=1.1, estimated=("floor", "margin"), groups=40)
    )
    assert thresholds(build, [stage]) == {
        "equivalence": 0.7,
        "equivalence_floor": 0.2,
        "equivalence_margin": 1.1,
        "estimated.equivalence_floor": 40,
        "estimated.equivalence_margin": 40,
        "length_ratio_min": 0.4,
        "length_ratio_max": 2.5,
    }
    cosine = config(equivalence={"scoring": "cosine", "threshold": 0.6}, lid={"enabled": False})
    assert thresholds(cosine, [Equivalence(cosine.equivalence, Unknown())])["equivalence"] == 0.6  # type: ignore[arg-type]
