"""LineChart's thinning to the chart's width (`envelope`): each bucket's first minimum and first
maximum, in x order, as a loop over the buckets with argmin / argmax picks them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from weighttui.tui.widgets.charts import envelope


def by_loop(x, y, buckets):
    edges = np.linspace(0, x.size, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for a, b in itertools.pairwise(edges):
        if b > a:
            keep.extend(sorted({a + int(np.argmin(y[a:b])), a + int(np.argmax(y[a:b]))}))
    return x[keep], y[keep]


@pytest.mark.parametrize("n", [33, 100, 1551, 12395])
@pytest.mark.parametrize("buckets", [16, 72, 152])
@pytest.mark.parametrize("values", ["normal", "ties", "constant", "spike"])
def test_envelope_keeps_each_buckets_first_extremes(n, buckets, values):
    rng = np.random.default_rng(n + buckets)
    y = {"normal": rng.normal(size=n), "ties": rng.integers(0, 3, size=n).astype(np.float64),
         "constant": np.ones(n), "spike": np.where(np.arange(n) == n // 3, 1e6, 1.0)}[values]
    x = np.arange(n, dtype=np.float64) * 10
    xs, ys = envelope(x, y, buckets)
    if n <= 2 * buckets:
        assert xs is x and ys is y
        return
    want = by_loop(x, y, buckets)
    np.testing.assert_array_equal(xs, want[0])
    np.testing.assert_array_equal(ys, want[1])
    assert ys.max() == y.max() and ys.min() == y.min()  # a spike is never thinned away
