"""weighttui.record.stats against a plain float64 brute force, element by element."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weighttui.record.stats import (
    DELTA_STATS,
    WEIGHT_STATS,
    delta_stats,
    hist_percentiles,
    histogram,
    weight_stats,
    weights_block,
)


def brute_weight_stats(x) -> dict:
    """FORMAT.md's definitions, written out with Python floats."""
    vals = [float(v) for v in np.asarray(x).reshape(-1).tolist()]
    n = len(vals)
    fin = [v for v in vals if math.isfinite(v)]
    out = {
        "nan": sum(1 for v in vals if math.isnan(v)),
        "inf": sum(1 for v in vals if math.isinf(v)),
        "zero_frac": (sum(1 for v in vals if v == 0) / n) if n else math.nan,
        "norm": math.sqrt(math.fsum(v * v for v in fin)),
    }
    if fin:
        mean = math.fsum(fin) / len(fin)
        out.update(mean=mean, std=math.sqrt(math.fsum((v - mean) ** 2 for v in fin) / len(fin)),
                   min=min(fin), max=max(fin), absmean=math.fsum(abs(v) for v in fin) / len(fin))
    else:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, absmean=math.nan)
    return out


def brute_histogram(x, bins):
    vals = [float(v) for v in np.asarray(x).reshape(-1).tolist() if math.isfinite(float(v))]
    counts = [0] * bins
    if not vals:
        return math.nan, math.nan, counts
    lo, hi = min(vals), max(vals)
    if lo == hi:
        counts[bins // 2] = len(vals)
        return lo, hi, counts
    edges = np.linspace(lo, hi, bins + 1)  # the edges numpy.histogram uses
    for v in vals:
        i = int(np.searchsorted(edges, v, side="right")) - 1
        counts[min(i, bins - 1)] += 1  # the last bin is closed
    return lo, hi, counts


def assert_stats_match(got, want, x=None):
    # float64 sums of n terms are exact to about n * eps * max|x| (the brute force
    # uses math.fsum, exactly rounded): [3.4e38, 1, -3.4e38] has mean 1/3, but 0.0
    # in any float64 summation.
    scale = 0.0
    if x is not None:
        fin = np.asarray(x, dtype=np.float64)[np.isfinite(x)]
        scale = float(np.abs(fin).max()) * 1e-12 * max(1, fin.size) if fin.size else 0.0
    for i, name in enumerate(WEIGHT_STATS):
        w = want[name]
        if math.isnan(w):
            assert math.isnan(got[i]), name
        else:
            tol = scale if name in ("mean", "std", "absmean") else 0.0
            assert got[i] == pytest.approx(w, rel=1e-9, abs=max(1e-12, tol)), name


CASES = {
    "float32 matrix": np.random.default_rng(0).normal(size=(17, 9)).astype(np.float32),
    "float16": np.random.default_rng(1).normal(size=100).astype(np.float16),
    "int8": np.arange(-64, 64, dtype=np.int8),
    "int64 with zeros": np.array([0, 0, 3, -7, 0], dtype=np.int64),
    "bool": np.array([True, False, True]),
    "scalar": np.float32(2.5),
    "0-d array": np.array(-1.25),
    "zero-size": np.zeros((0, 4), dtype=np.float32),
    "nan and inf": np.array([1.0, np.nan, -np.inf, 2.0, np.inf, 0.0]),
    "all nan": np.full(7, np.nan, dtype=np.float32),
    "all inf": np.array([np.inf, -np.inf]),
    "constant": np.full(12, 3.0, dtype=np.float32),
    "float32 extremes": np.array([3.4e38, -3.4e38, 1e38], dtype=np.float32),
}


@pytest.mark.parametrize("name", list(CASES))
def test_weight_stats_match_brute_force(name):
    x = CASES[name]
    assert_stats_match(weight_stats(x), brute_weight_stats(x))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("bins", [1, 7, 64])
def test_histogram_matches_brute_force(name, bins):
    x = CASES[name]
    lo, hi, counts = histogram(x, bins)
    blo, bhi, bcounts = brute_histogram(x, bins)
    assert counts.dtype == np.uint32 and counts.shape == (bins,)
    assert counts.tolist() == bcounts
    assert (math.isnan(lo) and math.isnan(blo)) or lo == blo
    assert (math.isnan(hi) and math.isnan(bhi)) or hi == bhi


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=8),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_stats_and_histogram_property(x):
    assert_stats_match(weight_stats(x), brute_weight_stats(x), x)
    lo, hi, counts = histogram(x, 16)
    assert counts.tolist() == brute_histogram(x, 16)[2]
    assert int(counts.sum()) == int(np.isfinite(x).sum())


def brute_delta(now, prev):
    a = [float(v) for v in np.asarray(now).reshape(-1)]
    b = [float(v) for v in np.asarray(prev).reshape(-1)]
    n = len(a)
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    d = [x - y for x, y in pairs]
    dnorm = math.sqrt(math.fsum(v * v for v in d))
    pnorm = math.sqrt(math.fsum(y * y for _x, y in pairs))
    ratio = dnorm / pnorm if pnorm > 0 else (math.inf if dnorm > 0 else 0.0)
    return {
        "norm": dnorm, "ratio": ratio,
        "max_abs": max((abs(v) for v in d), default=math.nan),
        "mean_abs": math.fsum(abs(v) for v in d) / len(d) if d else math.nan,
        "changed_frac": sum(1 for v in d if v != 0) / n if n else math.nan,
        "exact": 1.0,
    }


@pytest.mark.parametrize("now,prev", [
    (np.array([1.0, 2.0, 3.0], dtype=np.float32), np.array([1.0, 2.5, 2.0], dtype=np.float32)),
    (np.array([1.0, np.nan, 3.0, np.inf]), np.array([1.0, 1.0, np.nan, 2.0])),
    (np.array([0.0, 1.0]), np.zeros(2)),          # previous norm 0: ratio inf
    (np.zeros(3), np.zeros(3)),                     # no change at all: ratio 0
    (np.float32(1.5), np.float32(1.0)),             # scalars
    (np.arange(6, dtype=np.int8), np.arange(6, dtype=np.int8)[::-1].copy()),
])
def test_delta_stats_match_brute_force(now, prev):
    got = delta_stats(now, prev)
    want = brute_delta(now, prev)
    for i, name in enumerate(DELTA_STATS):
        if math.isnan(want[name]):
            assert math.isnan(got[i]), name
        else:
            assert got[i] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_sampled_delta_scales_norm_and_says_inexact():
    rng = np.random.default_rng(0)
    prev = rng.normal(size=4096)
    now = prev + rng.normal(scale=1e-3, size=4096)
    exact = delta_stats(now, prev)
    idx = rng.choice(4096, 256, replace=False)
    est = delta_stats(now[idx], prev[idx], exact=False, total=4096)
    assert est[DELTA_STATS.index("exact")] == 0.0
    # the scaled sample norm estimates the full norm (about 1/sqrt(256) relative error)
    assert est[0] == pytest.approx(exact[0], rel=0.25)
    assert est[1] == pytest.approx(exact[1], rel=0.25)


def test_delta_of_zero_size_tensor():
    got = delta_stats(np.zeros(0), np.zeros(0))
    assert got[0] == 0.0 and math.isnan(got[1])


def test_block_rows_follow_the_arrays():
    arrays = [CASES["float32 matrix"], CASES["nan and inf"], CASES["zero-size"]]
    block = weights_block(arrays, 8)
    assert block.stats.shape == (3, len(WEIGHT_STATS))
    for i, x in enumerate(arrays):
        np.testing.assert_array_equal(block.stats[i], weight_stats(x))
        np.testing.assert_array_equal(block.hist[2][i], histogram(x, 8)[2])


def test_percentiles_from_histogram_track_the_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=20000)
    lo, hi, counts = histogram(x, 64)
    qs = [0, 7, 16, 31, 50, 69, 84, 93, 100]
    est = hist_percentiles(lo, hi, counts, qs)
    width = (hi - lo) / 64
    np.testing.assert_allclose(est, np.percentile(x, qs), atol=width)
    assert np.isnan(hist_percentiles(np.nan, np.nan, np.zeros(4), [50])).all()


def brute_histogram_vectorised(x, bins):
    """FORMAT.md's bin rule with searchsorted over numpy's edges, for big arrays."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    lo, hi = v.min(), v.max()
    edges = np.linspace(lo, hi, bins + 1)
    idx = np.minimum(np.searchsorted(edges, v, side="right") - 1, bins - 1)
    return np.bincount(idx, minlength=bins)


def _big_cases():
    rng = np.random.default_rng(7)
    n = 3 * (1 << 17) + 123  # several chunks and a ragged end
    grid = np.linspace(-1.0, 1.0, 65)  # exactly the 64-bin edges of [-1, 1]
    return {
        "normal float32": rng.normal(size=n).astype(np.float32),
        "values on every bin edge": np.resize(grid, n),
        "float32 edges": np.resize(grid.astype(np.float32), n),
        "shifted mean": (1000.0 + rng.normal(scale=1e-3, size=n)).astype(np.float32),
        "int32": rng.integers(-50, 50, size=n).astype(np.int32),
        "float16": rng.normal(size=n).astype(np.float16),
        "bool": rng.random(n) < 0.3,
        "sparse": np.where(rng.random(n) < 0.9, 0.0, rng.normal(size=n)),
        "with nan": np.where(rng.random(n) < 0.01, np.nan, rng.normal(size=n)),
    }


@pytest.mark.parametrize("name", list(_big_cases()))
def test_chunked_paths_match_the_definitions_on_big_tensors(name):
    """Tensors larger than one chunk take the chunked paths: same statistics, same counts."""
    x = _big_cases()[name]
    got = weight_stats(x)
    want = brute_weight_stats(x)
    assert_stats_match(got, want, x)
    for bins in (7, 64):
        _lo, _hi, counts = histogram(x, bins)
        assert counts.tolist() == brute_histogram_vectorised(x, bins).tolist(), bins


def test_chunked_histogram_agrees_next_to_every_bin_edge():
    """Values one ulp either side of numpy's edges: where the index formula alone is wrong."""
    real_cases = 0
    for lo, hi in [(0.5811181041963531, 0.8752506008518791), (345.584192064786, 3649.954953898657),
                   (905.3558666731177, 905.3603304188414)]:
        for bins in (7, 64, 100):
            edges = np.linspace(lo, hi, bins + 1)
            near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
            near = near[(near >= lo) & (near <= hi)]
            x = np.resize(near, 2 * (1 << 17) + 5)
            raw = np.minimum(((x - lo) / (hi - lo) * bins).astype(np.intp), bins - 1)
            reference = brute_histogram_vectorised(x, bins)
            real_cases += np.bincount(raw, minlength=bins).tolist() != reference.tolist()
            assert histogram(x, bins)[2].tolist() == reference.tolist(), (lo, hi, bins)
    assert real_cases >= 3  # the corrections were needed, not just harmless


@settings(max_examples=15, deadline=None)
@given(lo=st.floats(-1e6, 1e6), log_width=st.floats(-8, 6), bins=st.integers(1, 200), seed=st.integers(0, 99))
def test_chunked_histogram_property(lo, log_width, bins, seed):
    hi = lo + 10.0 ** log_width
    if not hi > lo:
        return
    rng = np.random.default_rng(seed)
    edges = np.linspace(lo, hi, bins + 1)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    x = np.concatenate([near[(near >= lo) & (near <= hi)], rng.uniform(lo, hi, size=(1 << 17) + 7)])
    assert histogram(x, bins)[2].tolist() == brute_histogram_vectorised(x, bins).tolist()


@pytest.mark.parametrize("size", [5, (1 << 17) + 3])
def test_histogram_of_a_range_a_few_ulps_wide(size):
    """numpy.histogram refuses ("too many bins for data range"); a snapshot must not fail."""
    x = 1e6 + (np.arange(size) % 5) * 1e-10
    _lo, _hi, counts = histogram(x, 64)
    assert counts.sum() == size
    assert counts.tolist() == brute_histogram_vectorised(x, 64).tolist()


@pytest.mark.parametrize("name", ["normal float32", "float16", "int32", "shifted mean"])
def test_chunked_delta_matches_brute_force(name):
    from weighttui.record.stats import delta_row

    now = _big_cases()[name]
    prev = now.copy()
    prev[::3] = prev[::3] * 0.5  # a third of the elements changed
    row, lo, hi, counts = delta_row(now, prev, 64)
    want = brute_delta(now, prev)
    for i, stat in enumerate(DELTA_STATS):
        assert row[i] == pytest.approx(want[stat], rel=1e-9, abs=1e-12), stat
    d = np.asarray(now, np.float64) - np.asarray(prev, np.float64)
    assert counts.tolist() == brute_histogram_vectorised(d, 64).tolist()
    assert (lo, hi) == (d.min(), d.max())
    np.testing.assert_array_equal(delta_stats(now, prev), row)
