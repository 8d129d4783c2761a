"""``curate.report``: histogram bins that split at the thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from curate.report import bin_edges


@pytest.mark.parametrize(
    ("values", "cuts"),
    [
        ([0.02, 0.31, 0.47, 0.93], [0.5]),
        ([0.0, 0.3, 1.0], [0.33, 0.1]),
        ([0.6, 0.61, 0.9], [0.75, 0.5]),  # 0.5 lies outside the data
        ([-0.2, 1.4, 2.9], [0.4, 2.5]),
    ],
)
def test_every_threshold_inside_the_data_is_a_bin_edge(values: list[float], cuts: list[float]) -> None:
    edges = bin_edges(values, cuts)
    assert edges[0] == min(values) and edges[-1] == max(values)
    assert np.all(np.diff(edges) > 0)
    for cut in cuts:
        if min(values) < cut < max(values):
            assert cut in edges
        counts, _ = np.histogram(values, bins=edges)
        assert counts.sum() == len(values)
    widths = np.diff(edges)
    assert widths.max() <= 1.5 * (max(values) - min(values)) / 20 + 1e-12  # about 20 bins, none merged
    assert len(edges) - 1 >= 20


def test_a_bar_never_straddles_a_threshold() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 500).tolist()
    edges = bin_edges(values, [0.437])
    counts, _ = np.histogram(values, bins=edges)
    below = int(np.searchsorted(edges, 0.437))
    assert counts[:below].sum() == sum(v < 0.437 for v in values)


def test_equal_values_make_one_bin() -> None:
    assert bin_edges([0.2, 0.2], [0.5]).tolist() == [-0.3, 0.7]
