"""Re-binning, percentile bands and the density grid, checked against brute force on real data."""

from __future__ import annotations

import numpy as np
import pytest

from weighttui.analysis import heatmap
from weighttui.record.stats import hist_percentiles, histogram


def hists(xs, bins=32):
    parts = [histogram(x, bins) for x in xs]
    return (np.array([p[0] for p in parts]), np.array([p[1] for p in parts]),
            np.array([p[2] for p in parts]))


@pytest.fixture
def drifting():
    """20 snapshots of a distribution that drifts and widens, one of them constant."""
    rng = np.random.default_rng(1)
    xs = [rng.normal(0.1 * i, 1 + 0.05 * i, 4000) for i in range(20)]
    xs[7] = np.full(100, 0.25)
    return xs


def test_rebin_onto_a_covering_grid_keeps_every_count(drifting):
    lo, hi, counts = hists(drifting)
    vmin, vmax = heatmap.value_range(lo, hi)
    for g in (7, 40, 333):
        grid = heatmap.rebin(lo, hi, counts, np.linspace(vmin, vmax, g + 1))
        assert grid.shape == (20, g)
        assert np.allclose(grid.sum(axis=1), counts.sum(axis=1))
        assert (grid >= -1e-9).all()


def test_rebin_matches_the_data_within_a_source_bin(drifting):
    """Mass below any grid edge equals the true count below it, up to one source bin's count."""
    lo, hi, counts = hists(drifting)
    edges = np.linspace(-3, 5, 17)  # narrower than the data: outside mass is dropped
    grid = heatmap.rebin(lo, hi, counts, edges)
    for i, x in enumerate(drifting):
        below = np.concatenate([[0.0], np.cumsum(grid[i])])
        true = np.array([np.count_nonzero((x >= edges[0]) & (x < e)) for e in edges])
        assert np.all(np.abs(below - true) <= counts[i].max() + 1e-9)


def test_rebin_onto_the_same_bins_is_the_identity():
    x = np.random.default_rng(2).uniform(-1, 3, 1000)
    lo, hi, c = histogram(x, 16)
    grid = heatmap.rebin(np.array([lo]), np.array([hi]), c[None], np.linspace(lo, hi, 17))
    assert np.allclose(grid[0], c)


def test_constant_tensor_is_a_point_mass():
    grid = heatmap.rebin(np.array([0.25]), np.array([0.25]), np.array([[0, 0, 9, 0]]), np.linspace(0, 1, 5))
    assert grid.tolist() == [[0.0, 9.0, 0.0, 0.0]]


def test_empty_and_nan_histograms_give_nothing():
    grid = heatmap.rebin(np.array([np.nan, 0.0]), np.array([np.nan, 1.0]),
                         np.array([[0, 0], [0, 0]]), np.linspace(0, 1, 4))
    assert not grid.any()
    assert heatmap.value_range(np.array([np.nan]), np.array([np.nan])) is None


def test_percentile_bands_match_numpy_within_a_bin(drifting):
    lo, hi, counts = hists(drifting)
    bands = heatmap.percentile_bands(lo, hi, counts)
    assert bands.shape == (20, len(heatmap.PERCENTILES))
    for i, x in enumerate(drifting):
        true = np.percentile(x, heatmap.PERCENTILES)
        width = (hi[i] - lo[i]) / counts.shape[1]
        assert np.all(np.abs(bands[i] - true) <= width + 1e-12), i
        assert bands[i, 0] == x.min() and bands[i, -1] == x.max()
        assert np.all(np.diff(bands[i]) >= 0)


def test_percentile_bands_agree_with_stats_hist_percentiles(drifting):
    lo, hi, counts = hists(drifting)
    qs = np.linspace(0, 100, 41)
    bands = heatmap.percentile_bands(lo, hi, counts, qs)
    for i in range(len(drifting)):
        ref = hist_percentiles(lo[i], hi[i], counts[i], qs)
        width = (hi[i] - lo[i]) / counts.shape[1]
        assert np.allclose(bands[i], ref, atol=width * 1e-6 + 1e-12)


def test_build_grid_columns_follow_steps(drifting):
    lo, hi, counts = hists(drifting)
    steps = np.arange(20) * 5
    hm = heatmap.build(steps, lo, hi, counts, columns=50, bins=24)
    assert hm.density.shape == (24, 50)
    assert np.nanmax(hm.density) == 1.0
    assert np.allclose(hm.density.max(axis=0), 1.0)  # every column scaled by its own peak
    assert hm.col_steps[0] == 0 and hm.col_steps[-1] == 95
    assert np.all(np.diff(hm.col_steps) >= 0)
    # the drift upwards shows: the densest bin of the last column lies above the first's
    assert np.argmax(hm.density[:, -1]) > np.argmax(hm.density[:, 0])


def test_build_compresses_many_snapshots_and_log_mode(drifting):
    lo, hi, counts = hists(drifting)
    hm = heatmap.build(np.arange(20), lo, hi, counts, columns=5, bins=10, log=True)
    assert hm.density.shape == (10, 5)
    assert hm.col_steps.tolist() == [3, 7, 11, 15, 19]
    assert ((hm.density >= 0) & (hm.density <= 1)).all()
    lin = heatmap.build(np.arange(20), lo, hi, counts, columns=5, bins=10)
    # log density lifts the faint tails relative to linear
    faint = (lin.density > 0) & (lin.density < 0.1)
    assert faint.any() and (hm.density[faint] > lin.density[faint]).all()


def test_window_selects_snapshots_up_to_the_position():
    steps = np.arange(0, 100, 10)
    assert heatmap.window(steps, None, 80, "run") == slice(0, 10)
    assert heatmap.window(steps, 45, 80, "run") == slice(0, 10)  # the whole run, position marked
    assert heatmap.window(steps, 95, 3, "recent") == slice(7, 10)
    assert heatmap.window(steps, 45, 3, "recent") == slice(2, 5)
    assert heatmap.window(steps, None, 80, "recent") == slice(0, 10)


def test_unit_strip_draws_units_whose_weights_went_all_nan_in_magenta():
    """The usual divergence (a whole tensor NaN): the strip drew those snapshots blank, as if nothing were
    recorded; an all-NaN gradient row still means "no gradient" and is not marked."""
    from weighttui.tui.widgets.unit_strip import NONFINITE, cells

    steps = np.array([0, 1, 2])
    weights = np.array([[1.0, 2.0], [np.nan, np.nan], [np.nan, np.nan]])
    grads = np.array([[np.nan, np.nan], [0.1, 0.2], [np.nan, np.nan]])
    drawn = cells(steps, weights, weights, grads, columns=3, half_rows=2)
    assert drawn is not None
    assert (drawn.codes[:, 1:] == NONFINITE).all() and (drawn.codes[:, 0] != NONFINITE).all()
    drawn = cells(steps, grads, np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]), grads, columns=3, half_rows=2)
    assert drawn is not None and not (drawn.codes == NONFINITE).any()
