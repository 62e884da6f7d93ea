"""torch_stats (statistics on the device) against weighttui.record.stats, the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from weighttui.integrations import torch_stats as ts  # noqa: E402
from weighttui.record import stats  # noqa: E402

pytestmark = pytest.mark.torch
BINS = 64


def _np(t: torch.Tensor) -> np.ndarray:
    """What the reference sees: bfloat16 widened to float32 (numpy has no bfloat16)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _raw(eng, work: ts.Work) -> np.ndarray:
    """Raw rows in input order, fast path then the masked path where it is needed."""
    raw = np.zeros((len(work.xs), ts.N_RAW + eng.bins))
    for rows, idx in eng.fast(work):
        raw[idx] = rows.cpu().numpy()
    bad = np.nonzero(ts.needs_redo(raw))[0]
    if bad.size:
        raw[bad] = eng.masked(work, bad.tolist()).numpy()
    return raw


def _assert_weight_row(got, ref, n):
    """Column by column, at float32 tolerance.

    min/max, zero_frac, nan, inf must be equal; std/absmean/norm to 2e-6
    relative; the mean to 2e-6 of absmean (it is a difference of positive and
    negative sums, so its own relative error is unbounded near zero).
    """
    names = stats.WEIGHT_STATS
    for j, name in enumerate(names):
        g, r = got[j], ref[j]
        if np.isnan(r):
            assert np.isnan(g), (name, g, r)
        elif name in ("min", "max", "zero_frac", "nan", "inf"):
            assert g == r, (name, g, r)
        elif name == "mean":
            assert abs(g - r) <= 2e-6 * max(ref[names.index("absmean")], 1e-30) + 1e-300, (name, g, r)
        else:
            assert g == pytest.approx(r, rel=2e-6, abs=1e-300), (name, g, r)


def _assert_counts(got, ref, n):
    """Histogram counts: equal totals; per bin within a few elements.

    The device bins a value with float32 arithmetic ((x - lo) * B / (hi - lo)),
    numpy with float64 edges: a value within float32 rounding of an edge can
    land one bin over. Such values are rare (about n * B * 2^-24), so each
    moved element shifts one count by one between neighbouring bins.
    """
    assert got.sum() == ref.sum()
    slack = 2 + int(n * BINS * 2.0 ** -22)
    assert np.abs(got.astype(np.int64) - ref.astype(np.int64)).sum() <= 2 * slack


def _check_weights(tensors, eng=None):
    eng = eng or ts.DeviceStats(BINS)
    raw = _raw(eng, ts.Work(tensors))
    got = ts.weight_rows(raw)
    lo, hi, counts = ts.hist_parts(raw, BINS)
    for i, t in enumerate(tensors):
        x = _np(t)
        ref = stats.weight_stats(x)
        _assert_weight_row(got[i], ref, x.size)
        rlo, rhi, rcounts = stats.histogram(x, BINS)
        if np.isnan(rlo):
            assert np.isnan(lo[i]) and np.isnan(hi[i])
        else:
            assert (lo[i], hi[i]) == (rlo, rhi)
        _assert_counts(counts[i], rcounts, x.size)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_float_dtypes_match_reference(dtype):
    g = _gen(1)
    tensors = [
        (torch.randn(300, 200, generator=g) * 0.05).to(dtype),  # one big tensor (>= SMALL)
        (torch.randn(96, generator=g) * 0.01 + 1.0).to(dtype),  # LayerNorm-like: mean >> std
        (torch.randn(96, generator=g)).to(dtype),  # stacked with the one above (same size)
        (torch.randn(7, 3, 3, generator=g)).to(dtype),
        torch.tensor(2.5, dtype=dtype),  # a scalar parameter
        torch.zeros(0, 4, dtype=dtype),  # zero-size
        torch.zeros(33, dtype=dtype),  # all zero: lo == hi
        torch.full((10,), 3.0, dtype=dtype),  # constant: every value in bin B // 2
    ]
    _check_weights(tensors)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool])
def test_integer_and_bool_tensors_match_reference(dtype):
    g = _gen(2)
    if dtype == torch.bool:
        tensors = [torch.rand(50, generator=g) > 0.5, torch.rand(70_000, generator=g) > 0.3]
    else:
        lo = 0 if dtype == torch.uint8 else -100
        tensors = [torch.randint(lo, 100, (50,), generator=g, dtype=dtype),
                   torch.randint(lo, 100, (70_000,), generator=g, dtype=dtype),
                   torch.tensor(7, dtype=dtype)]
    _check_weights(tensors)


def test_nan_and_inf_are_counted_and_stats_use_finite_values():
    g = _gen(3)
    a = torch.randn(1000, generator=g)
    a[[3, 10, 500]] = float("nan")
    a[7] = float("inf")
    a[8] = -float("inf")
    b = torch.randn(100_000, generator=g)  # big tensor path
    b[12345] = float("nan")
    c = torch.full((20,), float("nan"))  # nothing finite
    d = torch.tensor([float("inf"), 1.0, 0.0], dtype=torch.bfloat16)
    e = torch.randn(1000, generator=g)  # clean, in the same group as a
    f = torch.randn(700, generator=g)  # same group, padded to 1024
    f[0] = float("nan")  # ... with NaN as the padding value
    _check_weights([a, b, c, d, e, f])
    raw = _raw(ts.DeviceStats(BINS), ts.Work([a, c]))
    rows = ts.weight_rows(raw)
    assert rows[0, stats.WEIGHT_STATS.index("nan")] == 3 and rows[0, stats.WEIGHT_STATS.index("inf")] == 2
    assert rows[1, stats.WEIGHT_STATS.index("nan")] == 20


def test_float32_overflow_in_sums_falls_back_to_float64():
    x = torch.tensor([3e38, -3e38, 1e38, 2.0] * 10, dtype=torch.float32)
    _check_weights([x])


def test_big_tensor_in_slices_matches_whole(monkeypatch):
    """Tensors over SLICE elements are reduced slice by slice (bounded scratch)."""
    g = _gen(4)
    x = torch.randn(10_007, generator=g) * 3 + 0.5
    prev = x + torch.randn(10_007, generator=g) * 1e-3
    whole = _raw(ts.DeviceStats(BINS), ts.Work([x]))
    whole_d = _raw(ts.DeviceStats(BINS), ts.Work([x], [prev]))
    monkeypatch.setattr(ts, "SLICE", 1000)
    monkeypatch.setattr(ts, "SMALL", 100)
    sliced = _raw(ts.DeviceStats(BINS), ts.Work([x]))
    sliced_d = _raw(ts.DeviceStats(BINS), ts.Work([x], [prev]))
    np.testing.assert_allclose(ts.weight_rows(sliced), ts.weight_rows(whole), rtol=1e-6)
    np.testing.assert_array_equal(sliced[:, ts.N_RAW:], whole[:, ts.N_RAW:])
    np.testing.assert_allclose(ts.delta_rows(sliced_d, np.ones(1)), ts.delta_rows(whole_d, np.ones(1)), rtol=1e-6)
    _check_weights([x], ts.DeviceStats(BINS))


def _check_delta(now, prev):
    eng = ts.DeviceStats(BINS)
    raw = _raw(eng, ts.Work(now, prev))
    psq = np.array([np.sum(np.where(np.isfinite(_np(p)), _np(p).astype(np.float64), 0) ** 2) for p in prev])
    # the fast path takes sum(prev^2) from the previous snapshot; here, measured
    psq = np.where(raw[:, ts._PSQ] != 0, raw[:, ts._PSQ], psq)
    got = ts.delta_rows(raw, psq)
    lo, hi, counts = ts.hist_parts(raw, BINS)
    for i, (a, b) in enumerate(zip(now, prev, strict=True)):
        na, nb = _np(a), _np(b)
        ref = stats.delta_stats(na, nb)
        for j, name in enumerate(stats.DELTA_STATS):
            if np.isnan(ref[j]):
                assert np.isnan(got[i, j]), (i, name)
            elif name in ("max_abs", "changed_frac", "exact"):
                assert got[i, j] == pytest.approx(ref[j], rel=1e-6), (i, name, got[i, j], ref[j])
            else:
                assert got[i, j] == pytest.approx(ref[j], rel=2e-6), (i, name, got[i, j], ref[j])
        d = na.astype(np.float64) - nb.astype(np.float64)
        both = np.isfinite(na) & np.isfinite(nb)
        rlo, rhi, rcounts = stats.histogram(d[both], BINS)
        if not np.isnan(rlo):
            assert lo[i] == pytest.approx(rlo, rel=1e-6) and hi[i] == pytest.approx(rhi, rel=1e-6)
        _assert_counts(counts[i], rcounts, d.size)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_delta_matches_reference(dtype):
    g = _gen(5)
    prev = [torch.randn(300, 300, generator=g).to(dtype), torch.randn(64, generator=g).to(dtype),
            torch.randn(64, generator=g).to(dtype), torch.tensor(1.0, dtype=dtype),
            torch.randn(50, generator=g).to(dtype), torch.randn(5, 7, generator=g).to(dtype)]  # padded to 64
    now = [p + (torch.randn(p.shape, generator=g) * 1e-2).to(dtype) for p in prev]
    now[1] = prev[1].clone()  # unchanged: changed_frac 0, ratio 0
    now[1][5] += 1
    _check_delta(now, prev)


def test_delta_with_nonfinite_values_uses_elements_finite_in_both():
    g = _gen(6)
    prev = [torch.randn(500, generator=g), torch.randn(80_000, generator=g)]
    now = [p + 0.01 for p in prev]
    now[0][3] = float("nan")
    prev[0][4] = float("inf")
    prev[1][100] = float("nan")
    _check_delta(now, prev)


def _chunk_sample(x: np.ndarray, chunk: int, count: int) -> np.ndarray:
    """count runs of chunk contiguous elements, the first at the start, the last
    at the end, the others evenly spaced (floor) in between."""
    n = x.size
    return np.concatenate([x[j * (n - chunk) // (count - 1):][:chunk] for j in range(count)])


def test_hist_sample_bins_contiguous_chunks_and_keeps_stats_exact():
    g = _gen(7)
    x = torch.randn(100_000, generator=g)
    eng = ts.DeviceStats(BINS, hist_sample=10_000)
    raw = _raw(eng, ts.Work([x]))
    _assert_weight_row(ts.weight_rows(raw)[0], stats.weight_stats(x.numpy()), x.numel())
    counts = ts.hist_parts(raw, BINS)[2][0]
    # 39 chunks of 256 elements (the most that fit in 10,000) spread over the tensor
    sample = _chunk_sample(x.numpy(), 256, 39)
    assert counts.sum() == sample.size == 9984
    ref = np.histogram(sample, bins=BINS, range=(float(x.min()), float(x.max())))[0]
    _assert_counts(counts, ref, sample.size)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sampled_histograms_of_many_big_tensors_are_binned_together(dtype):
    """Big tensors' chunk samples share one [T, S] matrix: each row keeps its own
    range and counts, for weights and deltas, mixed with unsampled tensors."""
    g = _gen(11)
    xs = [(torch.randn(ts.SMALL + 997 * i, generator=g) * (i + 1) + i).to(dtype) for i in range(4)]
    xs.insert(2, torch.randn(1500, generator=g).to(dtype))  # small: every element
    eng = ts.DeviceStats(BINS, hist_sample=4096)
    out = eng.fast(ts.Work(xs))
    assert [len(idx) for _rows, idx in out].count(4) == 1  # the four big ones in one batch
    raw = _raw(eng, ts.Work(xs))
    lo, hi, counts = ts.hist_parts(raw, BINS)
    for i, t in enumerate(xs):
        x = _np(t)
        _assert_weight_row(ts.weight_rows(raw)[i], stats.weight_stats(x), x.size)
        sample = x if x.size <= 4096 else _chunk_sample(x, 256, 16)
        ref = np.histogram(sample.astype(np.float64), bins=BINS, range=(float(x.min()), float(x.max())))[0]
        assert (lo[i], hi[i]) == (float(x.min()), float(x.max()))
        if dtype == torch.float32:
            _assert_counts(counts[i], ref, sample.size)
        else:  # quantised values: numpy's edges exactly
            np.testing.assert_array_equal(counts[i], ref)
    prevs = [t + (torch.randn(t.shape, generator=g) * 1e-2).to(dtype) for t in xs]
    raw_d = _raw(eng, ts.Work(prevs, xs))
    for i, (a, b) in enumerate(zip(prevs, xs, strict=True)):
        d = _np(a).astype(np.float64) - _np(b).astype(np.float64)
        sample = d if d.size <= 4096 else _chunk_sample(d, 256, 16)
        ref = np.histogram(sample, bins=BINS, range=(d.min(), d.max()))[0]
        _assert_counts(ts.hist_parts(raw_d, BINS)[2][i], ref, sample.size)


def test_hist_sample_of_a_sliced_tensor_is_strided(monkeypatch):
    """Tensors reduced in slices keep the strided sample (counted from the tensor's
    start, so that the slices' samples join up)."""
    g = _gen(7)
    x = torch.randn(100_000, generator=g)
    monkeypatch.setattr(ts, "SLICE", 30_000)
    raw = _raw(ts.DeviceStats(BINS, hist_sample=10_000), ts.Work([x]))
    _assert_weight_row(ts.weight_rows(raw)[0], stats.weight_stats(x.numpy()), x.numel())
    counts = ts.hist_parts(raw, BINS)[2][0]
    # every 11th element: the smallest odd prime >= 100,000 / 10,000, so that in a
    # [rows, cols] matrix the sample visits every column, not a fixed few
    assert counts.sum() == 9091
    ref = np.histogram(x.numpy()[::11], bins=BINS, range=(float(x.min()), float(x.max())))[0]
    _assert_counts(counts, ref, 9091)


def test_unshifted_sums_of_an_offset_tensor_are_recomputed():
    """One big CPU tensor is summed about 0; when its mean dwarfs its spread
    (sum(x^2) - sum(x)^2/m would cancel) the row is flagged and recomputed."""
    g = _gen(12)
    centred = torch.randn(200_000, generator=g) * 0.02
    offset = 1.0 + torch.randn(200_000, generator=g) * 1e-4  # float32 sums lose the std here
    eng = ts.DeviceStats(BINS)
    first = np.concatenate([rows.numpy() for rows, _idx in eng.fast(ts.Work([centred, offset]))])
    assert (first[:, ts._C] == 0).all()
    assert ts.cancelled(first).tolist() == [False, True]
    _check_weights([centred, offset])


def test_small_tensors_of_many_sizes_share_padded_matrices():
    """Rows shorter than their size class are padded; the padding is taken back out."""
    g = _gen(8)
    sizes = [1, 2, 3, 5, 17, 100, 255, 256, 257, 1000, 4000, 5000]
    tensors = [torch.randn(n, generator=g) * (i + 1) + i for i, n in enumerate(sizes)]
    tensors[4][3:] = 0.0  # many zeros, not in the first (padding) element
    tensors[5][0] = 0.0  # zero padding value
    eng = ts.DeviceStats(BINS)
    groups = eng.fast(ts.Work(tensors))
    assert len(groups) == len({ts._bucket(n) for n in sizes}) < len(sizes)  # one matrix per size class
    assert sorted(len(idx) for _rows, idx in groups) == sorted(
        [sum(1 for n in sizes if ts._bucket(n) == b) for b in {ts._bucket(n) for n in sizes}])
    _check_weights(tensors)
    prevs = [t + torch.randn(t.shape, generator=g) * 0.1 for t in tensors]
    prevs[6] = tensors[6].clone()  # no change at all
    _check_delta(tensors, prevs)


def test_scratch_is_reused_between_snapshots():
    eng = ts.DeviceStats(BINS)
    x = [torch.randn(70_000).to(torch.bfloat16)]
    eng.fast(ts.Work(x))
    bufs = {k: v.data_ptr() for k, v in eng.scratch._bufs.items()}
    eng.fast(ts.Work(x))
    assert bufs and bufs == {k: v.data_ptr() for k, v in eng.scratch._bufs.items()}
