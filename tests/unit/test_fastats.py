"""weighttui._fastats.snapshot (weighttui/record/native/fastats.c) against numpy and weighttui.record.stats.

The fused CPU kernel is tested directly with numpy arrays (no torch here): raw
rows in the RAW layout of weighttui.record.raw_rows plus histogram counts, for float32,
float16, bfloat16 (raw uint16 bits) and float64 inputs, exact deltas, the copy into the previous
buffer, status bytes and argument errors.

References: the raw columns that are counts or extrema must be exact; the
float64 sums are compared with math.fsum under the worst-case bound of the
kernel's summation order; statistics derived from the raw rows are compared
with weighttui.record.stats; histogram counts must equal numpy.histogram's exactly.

Without the built kernel the module is skipped, unless WEIGHTTUI_REQUIRE_KERNEL=1
(CI) turns that into a failure.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from weighttui.record import stats

REQUIRE_KERNEL = os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") == "1"
try:
    from weighttui import _fastats
except ImportError as exc:
    _fastats = None
    MISSING = (f"weighttui._fastats is not built ({exc}); reinstall weighttui with a C compiler "
               "present (`pip install -e .`)")
    if not REQUIRE_KERNEL:
        pytest.skip(MISSING + "; set WEIGHTTUI_REQUIRE_KERNEL=1 to make this a failure",
                    allow_module_level=True)
else:
    MISSING = None

ROOT = pathlib.Path(__file__).resolve().parents[2]

# weighttui.record.raw_rows.RAW (checked below)
RAW = ("n", "m", "lo", "hi", "c", "s1", "s2", "asum", "zeros", "nan", "inf", "psq")
N_RAW = len(RAW)
_N, _M, _LO, _HI, _C, _S1, _S2, _ASUM, _ZEROS, _NAN, _INF, _PSQ = range(N_RAW)
W_NOT_DONE, D_NOT_DONE = 1, 2
F32, F16, BF16, F64 = 0, 1, 2, 3
CODES = (F32, F16, BF16, F64)
# NaN, +Inf, -Inf as each dtype's elements (16-bit ones as bit patterns)
BAD = {F32: (np.nan, np.inf, -np.inf), F64: (np.nan, np.inf, -np.inf),
       F16: (0x7E00, 0x7C00, 0xFC00), BF16: (0x7FC0, 0x7F80, 0xFF80)}
MAX_BINS = 4096
BINS = (1, 2, 3, 7, 64, 4096)
# the kernel works in lanes of 16, index groups of 256 and 4096-element blocks (16-bit inputs)
LENGTHS = (1, 2, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097, 300_001)
U = 2.0 ** -53  # float64 unit roundoff
FLT_MAX = float(np.finfo(np.float32).max)

# Derived statistics against weighttui.record.stats: the kernel's raw sums carry about
# sqrt(n / 16) * U relative error (16 lanes summed recursively), the reference's
# a few U. Over this file the worst derived statistic is 2e-14 off (7e-14 per
# unit of condition number, below), so 1e-12 leaves 14x margin and still fails
# on float32 accumulation (>= 1e-8 at these sizes) or one element dropped or
# doubled (>= 1 / n). Where a statistic is a difference of raw sums, the
# tolerance is scaled by that difference's condition number (assert_weight_stats).
RTOL = 1e-12


def kernel():
    """The extension module; a failure (not a skip) when it is required and missing."""
    if _fastats is None:
        pytest.fail(MISSING)
    return _fastats


# ------------------------------------------------------------ inputs


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def bf16_bits(values) -> np.ndarray:
    """bfloat16 bit patterns: the high 16 bits of the float32 values (truncation)."""
    return (np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def f16_bits(values) -> np.ndarray:
    """float16 bit patterns of the float32 values (rounded to nearest, as numpy casts)."""
    return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint16)


def as_code(values32: np.ndarray, code: int) -> np.ndarray:
    """A new array: float32 values as the kernel's input of dtype `code` (16-bit ones rounded/truncated)."""
    if code == F32:
        return np.array(values32, dtype=np.float32)
    if code == F64:
        return np.array(values32, dtype=np.float64)
    return f16_bits(values32) if code == F16 else bf16_bits(values32)


def widen(x: np.ndarray, code: int) -> np.ndarray:
    """The values the kernel reads from input x of dtype `code` (exact: float32, float64 as they are)."""
    if code == F32:
        return x.view(np.float32)
    if code == F64:
        return x.view(np.float64)
    if code == F16:
        return x.view(np.float16).astype(np.float32)
    return (x.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def ulps_from(base: float, count: int) -> np.ndarray:
    """The float32 values 0, 1, ..., count - 1 ulps away from `base`, away from zero
    (consecutive bit patterns: for a given sign the patterns are ordered like the values)."""
    start = np.float32(abs(base)).view(np.int32)
    out = (start + np.arange(count, dtype=np.int32)).view(np.float32)
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) > 0)
    return out if base > 0 else -out


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------ running the kernel


def run(xs, prevs=None, codes=None, bins=64, copy=False):
    """snapshot() into NaN-filled outputs: (raw_w [T, 12 + B], raw_d [T, 12 + B], status uint8 [T])."""
    t = len(xs)
    prevs = [None] * t if prevs is None else prevs
    codes = [F32] * t if codes is None else codes
    raw_w = np.full((t, N_RAW + bins), np.nan)
    raw_d = np.full((t, N_RAW + bins), np.nan)
    status = kernel().snapshot(list(xs), list(prevs), bytes(codes), bins, raw_w, raw_d, copy)
    assert isinstance(status, bytes) and len(status) == t
    return raw_w, raw_d, np.frombuffer(status, dtype=np.uint8)


# ------------------------------------------------------------ references


def chain(n: int) -> int:
    """Most float64 additions one kernel sum passes through: n / 16 per lane, the
    <= 15 tail elements (lane 0), the 16 lane totals per 4096-element block."""
    return n // 16 + 15 + 16 * (n // 4096 + 1)


def assert_sum(got: float, terms: np.ndarray, what: str):
    """got is a float64 sum of `terms` (each as numpy rounds it): within the
    recursive-summation bound (chain + 2) * U * sum|terms| of the exact sum."""
    exact = math.fsum(terms.tolist())
    bound = (chain(terms.size) + 2) * U * float(np.abs(terms).sum())
    assert abs(got - exact) <= bound, f"{what}: {got!r} vs exact {exact!r} (bound {bound:.3g})"


def numpy_counts(v64: np.ndarray, bins: int):
    """numpy.histogram counts over [min, max] with float64 edges (bin B // 2 for a constant
    array); None where numpy refuses (edges coincide: "too many bins")."""
    lo, hi = v64.min(), v64.max()
    if lo == hi:
        counts = np.zeros(bins, dtype=np.int64)
        counts[bins // 2] = v64.size
        return counts
    try:
        return np.histogram(v64, bins, range=(float(lo), float(hi)))[0]
    except ValueError:
        return None


def may_decline(v64: np.ndarray, bins: int) -> bool:
    """Whether the kernel may hand a histogram back: numpy refuses it, or float64
    rounding of the edges is over 1e-4 bin widths (numpy's "edges nearly coincide").
    Never true for float32 values (at most 8e-6 bin widths: a 1-ulp range)."""
    lo, hi = float(v64.min()), float(v64.max())
    if lo == hi:
        return False
    if numpy_counts(v64, bins) is None:
        return True
    return U * max(abs(lo), abs(hi)) * bins > 1e-4 * (hi - lo)


def assert_counts(row: np.ndarray, v64: np.ndarray, bins: int, what: str):
    """The row's counts equal numpy.histogram's exactly and count every element."""
    counts = row[N_RAW:N_RAW + bins]
    ref = numpy_counts(v64, bins)
    assert ref is not None, f"{what}: the kernel binned a range numpy refuses"
    assert counts.sum() == v64.size, f"{what}: {counts.sum()} counted of {v64.size}"
    if not np.array_equal(counts, ref):
        diff = np.nonzero(counts != ref)[0]
        raise AssertionError(f"{what}: counts differ from numpy.histogram in bins {diff[:10]}: "
                             f"{counts[diff[:10]]} vs {ref[diff[:10]]}")


def weight_stats_of(row: np.ndarray) -> np.ndarray:
    """WEIGHT_STATS of one raw row, as raw_rows.weight_rows derives them."""
    n, m, c, s1, s2 = row[_N], row[_M], row[_C], row[_S1], row[_S2]
    mean = c + s1 / m
    m2 = max(s2 - s1 * s1 / m, 0.0)
    return np.array([mean, math.sqrt(m2 / m), row[_LO], row[_HI], row[_ASUM] / m,
                     math.sqrt(m2 + m * mean * mean), row[_ZEROS] / n, row[_NAN], row[_INF]])


def delta_stats_of(row: np.ndarray) -> np.ndarray:
    """DELTA_STATS of one raw delta row (prev_sumsq = its psq), as raw_rows.delta_rows."""
    n, m, c, s1, s2 = row[_N], row[_M], row[_C], row[_S1], row[_S2]
    mean = c + s1 / m
    dnorm = math.sqrt(max(s2 - s1 * s1 / m, 0.0) + m * mean * mean)
    pnorm = math.sqrt(max(row[_PSQ], 0.0))
    ratio = dnorm / pnorm if pnorm > 0 else (math.inf if dnorm > 0 else 0.0)
    return np.array([dnorm, ratio, max(-row[_LO], row[_HI]), row[_ASUM] / m, (m - row[_ZEROS]) / n, 1.0])


def close(got: float, ref: float, rtol: float) -> bool:
    return got == ref or abs(got - ref) <= rtol * abs(ref)


def assert_weight_stats(row: np.ndarray, v32: np.ndarray):
    """Derived WEIGHT_STATS against weighttui.record.stats.weight_stats.

    min, max, zero_frac, nan, inf equal; absmean within RTOL; the mean within RTOL
    of the larger of absmean and mean|x - c| (s1 = sum(x - c) cancels); std and
    norm within RTOL times the condition number of m2 = s2 - s1^2/m, which is
    s2 / m2 (<= n + 1 since c is one of the values; about 2 for a typical first
    element, up to n when it is an outlier).
    """
    got, ref = weight_stats_of(row), stats.weight_stats(v32)
    x = v32.astype(np.float64)
    for j in (2, 3, 6, 7, 8):
        assert got[j] == ref[j], (stats.WEIGHT_STATS[j], got[j], ref[j])
    assert close(got[4], ref[4], RTOL), ("absmean", got[4], ref[4])
    mean_scale = max(ref[4], float(np.abs(x - x[0]).mean()))
    assert abs(got[0] - ref[0]) <= RTOL * mean_scale, ("mean", got[0], ref[0])
    s2 = float(np.square(x - x[0]).sum())
    m2 = ref[1] ** 2 * x.size
    if m2 == 0:
        assert got[1] == 0, ("std", got[1])
    else:
        assert close(got[1], ref[1], RTOL * max(1.0, s2 / m2)), ("std", got[1], ref[1], s2 / m2)
    if ref[5] == 0:
        assert got[5] == 0, ("norm", got[5])
    else:
        assert close(got[5], ref[5], RTOL * max(1.0, s2 / ref[5] ** 2)), ("norm", got[5], ref[5])


def check_weight_row(row: np.ndarray, v32: np.ndarray, bins: int, what: str = "weights"):
    """One done weights row of float32 values v32 against the references."""
    x = v32.astype(np.float64)
    n = x.size
    assert row[_N] == n and row[_M] == n, (what, row[_N], row[_M], n)
    assert row[_LO] == x.min() and row[_HI] == x.max(), (what, row[_LO], row[_HI], x.min(), x.max())
    assert row[_C] == x[0], (what, "c", row[_C], x[0])
    assert row[_ZEROS] == np.count_nonzero(x == 0), (what, "zeros")
    assert row[_NAN] == 0 and row[_INF] == 0 and row[_PSQ] == 0, (what, row[_NAN], row[_INF], row[_PSQ])
    t = x - x[0]
    assert_sum(row[_S1], t, f"{what} s1")
    assert_sum(row[_S2], t * t, f"{what} s2")
    assert_sum(row[_ASUM], np.abs(x), f"{what} asum")
    assert_weight_stats(row, v32)
    assert_counts(row, x, bins, f"{what} histogram")


def check_delta_row(row: np.ndarray, v32: np.ndarray, p32: np.ndarray, bins: int, what: str = "delta"):
    """One done delta row of d = v - p (float64) against the references."""
    x, p = v32.astype(np.float64), p32.astype(np.float64)
    d = x - p
    n = d.size
    assert row[_N] == n and row[_M] == n, (what, row[_N], row[_M], n)
    assert row[_C] == 0 and row[_S1] == 0, (what, row[_C], row[_S1])
    assert row[_LO] == d.min() and row[_HI] == d.max(), (what, row[_LO], row[_HI], d.min(), d.max())
    assert row[_ZEROS] == np.count_nonzero(d == 0), (what, "zeros")
    assert row[_NAN] == 0 and row[_INF] == 0, (what, row[_NAN], row[_INF])
    assert_sum(row[_S2], d * d, f"{what} s2")
    assert_sum(row[_ASUM], np.abs(d), f"{what} asum")
    assert_sum(row[_PSQ], p * p, f"{what} psq")
    assert_counts(row, d, bins, f"{what} histogram")
    # the derived statistics and the histogram against the numpy reference
    ref, lo, hi, counts = stats.delta_row(v32, p32, bins)
    got = delta_stats_of(row)
    names = stats.DELTA_STATS
    for j in (2, 4, 5):
        assert got[j] == ref[j], (what, names[j], got[j], ref[j])
    for j in (0, 1, 3):  # sums of squares and of |d|: no cancellation
        assert close(got[j], ref[j], RTOL), (what, names[j], got[j], ref[j])
    assert (row[_LO], row[_HI]) == (lo, hi)
    assert np.array_equal(row[N_RAW:], counts), (what, "counts differ from stats.delta_row")


def check_snapshot(xs, prevs=None, codes=None, bins=64, copy=False):
    """Runs one snapshot call and checks every tensor of it: status bits, the done
    rows against the references, the previous copies, the inputs left alone."""
    t = len(xs)
    prevs = [None] * t if prevs is None else prevs
    codes = [F32] * t if codes is None else codes
    for x in xs:
        x.setflags(write=False)  # inputs only need to be readable
    xs_before = [x.copy() for x in xs]
    prevs_before = [None if p is None else p.copy() for p in prevs]
    raw_w, raw_d, status = run(xs, prevs, codes, bins, copy)
    for i, (x, p, code) in enumerate(zip(xs, prevs, codes, strict=True)):
        v = widen(x, code)
        w_done = not status[i] & W_NOT_DONE
        d_done = not status[i] & D_NOT_DONE
        finite = v.size > 0 and bool(np.isfinite(v).all())
        if code == F64 and finite and not w_done:
            # float64 values may be handed back where float32 ones never are: sums that
            # overflow, a range a few float64 ulps wide (numpy's edges nearly coincide) or
            # so small that bins / range overflows (subnormals)
            assert overflows(v) or may_decline(v, bins) or scale_overflows(v, bins), \
                f"tensor {i}: float64 handed back"
        else:
            assert w_done == finite, f"tensor {i}: status {status[i]}, weights finite: {finite}"
        if w_done:
            check_weight_row(raw_w[i], v, bins, f"tensor {i} weights")
        if p is not None:
            q = widen(prevs_before[i], code)  # p itself may hold x by now
            if not (finite and np.isfinite(q).all()):
                assert not d_done, f"tensor {i}: delta of non-finite values reported done"
            elif not d_done:
                with np.errstate(over="ignore", invalid="ignore"):
                    d = v.astype(np.float64) - q.astype(np.float64)
                assert not w_done or overflows(d) or overflows(q) or may_decline(d, bins) or scale_overflows(d, bins), \
                    f"tensor {i}: a well-conditioned delta was handed back"
            if d_done:
                check_delta_row(raw_d[i], v, q, bins, f"tensor {i} delta")
            if copy and d_done:
                assert bits_equal(p, x), f"tensor {i}: prev is not a bit copy of x after copy=True"
            else:
                assert bits_equal(p, prevs_before[i]), f"tensor {i}: prev changed (status {status[i]})"
        assert bits_equal(x, xs_before[i]), f"tensor {i}: x changed"
    return raw_w, raw_d, status


def overflows(v: np.ndarray) -> bool:
    """Whether a float64 sum of squares (or the range) of v overflows: float64 inputs the kernel hands back."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = v.astype(np.float64)
        c = v - v[0]
        return not (np.isfinite(np.square(c).sum()) and np.isfinite(np.square(v).sum())
                    and np.isfinite(v.max() - v.min()) and np.isfinite(c.sum()))


def scale_overflows(v: np.ndarray, bins: int) -> bool:
    """Whether bins / (max - min) overflows float64 (a range of subnormals)."""
    with np.errstate(over="ignore", divide="ignore"):
        return v.max() > v.min() and not np.isfinite(bins / (float(v.max()) - float(v.min())))


def random_values(n: int, seed: int, scale: float = 1.0, loc: float = 0.0) -> np.ndarray:
    return (loc + scale * rng(seed).standard_normal(n)).astype(np.float32)


def step_from(x32: np.ndarray, seed: int, scale: float = 1e-3) -> np.ndarray:
    """A previous value of x: x minus a small update, some elements unchanged."""
    g = rng(seed)
    prev = (x32 - scale * g.standard_normal(x32.size)).astype(np.float32)
    keep = g.random(x32.size) < 0.2
    prev[keep] = x32[keep]
    return prev


# ------------------------------------------------------------ the module itself


def test_kernel_is_built():
    """The extension imports (with WEIGHTTUI_REQUIRE_KERNEL=1 a missing kernel fails here and
    in every other test instead of skipping the module) and has the raw layout's width."""
    assert kernel().NRAW == N_RAW


def test_kernel_build_is_current():
    """The built extension reads every dtype code of the source (a stale build, from before
    float64, would hand float64 tensors to the slow paths): rebuild with
    `python setup.py build_ext --inplace` (or `pip install -e .`) if this fails."""
    assert getattr(kernel(), "DTYPES", 3) == 4


def test_require_flag_turns_missing_kernel_into_failure():
    """With the kernel hidden (sys.modules entry None), the module skips without
    WEIGHTTUI_REQUIRE_KERNEL and fails with it set to 1."""
    code = ("import sys, pytest; sys.modules['weighttui._fastats'] = None; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'test_kernel_is_built', {__file__!r}]))")
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTTUI_REQUIRE_KERNEL"}
    skipped = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    # the module is skipped at collection (pytest exits 5: -k then selects nothing)
    assert skipped.returncode in (0, 5) and "1 skipped" in skipped.stdout, skipped.stdout + skipped.stderr
    env["WEIGHTTUI_REQUIRE_KERNEL"] = "1"
    failed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and "is not built" in failed.stdout, failed.stdout + failed.stderr


def test_raw_layout_matches_raw_rows():
    """The columns checked here are weighttui.record.raw_rows.RAW (the core's layout, which torch_stats re-exports)."""
    from weighttui.record import raw_rows

    assert raw_rows.RAW == RAW and raw_rows.N_RAW == N_RAW


# ------------------------------------------------------------ weights rows


def signed_zeros(n: int, seed: int) -> np.ndarray:
    """-0.0 and 0.0 at random, every fifth element 1.0."""
    x = np.where(rng(seed).random(n) < 0.5, -0.0, 0.0).astype(np.float32)
    x[::5] = 1.0
    return x


WEIGHT_CASES = {
    "normal": lambda n: random_values(n, 1),
    "layernorm": lambda n: random_values(n, 2, 1e-3, 1.0),  # |mean| >> std
    "outlier_first": lambda n: np.r_[np.float32(100), random_values(n - 1, 3, 1e-3, 1.0)],  # c far off
    "positive": lambda n: rng(4).random(n, dtype=np.float32),
    "tiny": lambda n: random_values(n, 5, 1e-38),  # float32 subnormals among them
    "huge": lambda n: np.clip(1e38 * rng(6).standard_normal(n), -FLT_MAX, FLT_MAX).astype(np.float32),
    "sparse": lambda n: np.where(rng(7).random(n) < 0.7, 0, random_values(n, 8)).astype(np.float32),
    "signed_zeros": lambda n: signed_zeros(n, 9),
    "integers": lambda n: rng(10).integers(-3, 4, n).astype(np.float32),  # few repeated values
}


@pytest.mark.parametrize("case,n", [(case, n) for case in sorted(WEIGHT_CASES) for n in LENGTHS
                                    if n < LENGTHS[-1] or case in ("normal", "outlier_first", "tiny", "integers")])
def test_weight_rows(case, n):
    """Weights rows of float32 tensors of every awkward length (lanes of 16, groups of
    256, blocks of 4096; the largest length for a few cases only): exact n, m, lo, hi,
    c, zeros, sums within the summation bound, derived stats against
    stats.weight_stats, counts equal to numpy.histogram."""
    x = WEIGHT_CASES[case](n)
    check_snapshot([x], bins=64 if n > 300 else 7)


@pytest.mark.parametrize("bins", BINS)
def test_bins(bins):
    """Every bin count the format allows, on weights and deltas of one call."""
    x = random_values(5000, 11)
    prev = step_from(x, 12)
    check_snapshot([x, x[:1000].copy()], [prev, None], bins=bins)


def test_constant_tensor_goes_to_the_middle_bin():
    """lo == hi: every element in bin B // 2 (numpy would spread [lo - 0.5, lo + 0.5])."""
    for bins in BINS:
        for value in (0.0, -0.0, 1.0, -3e38, 1e-45):
            x = np.full(37, value, dtype=np.float32)
            raw_w, _, _ = check_snapshot([x], bins=bins)
            expected = np.zeros(bins)
            expected[bins // 2] = 37
            assert np.array_equal(raw_w[0, N_RAW:], expected)


# ------------------------------------------------------------ histograms


def edge_values(lo: float, hi: float, bins: int) -> np.ndarray:
    """float32 values on numpy's float64 edges for [lo, hi] (rounded to float32) and the
    float32 neighbours either side, within [lo, hi]; lo and hi themselves pin the range."""
    edges = np.linspace(lo, hi, bins + 1).astype(np.float32)
    with np.errstate(over="ignore"):  # past +-FLT_MAX: Inf, dropped below
        near = np.concatenate([edges, np.nextafter(edges, np.float32(-np.inf)),
                               np.nextafter(edges, np.float32(np.inf)), np.float32([lo, hi])])
    near = near[(near >= np.float32(lo)) & (near <= np.float32(hi))]
    return near


EDGE_RANGES = [(-1.0, 1.0), (0.0, 4096.0), (-3.7, 12.1), (1e-3, 2e-3), (-1e30, 1e30), (100.0, 100.5),
               (-FLT_MAX, FLT_MAX), (1e-43, 1e-40), (0.0, 1e-38)]


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("lo,hi", EDGE_RANGES)
def test_values_on_bin_edges(lo, hi, bins):
    """Values on the float64 edges (rounded to float32) and their float32 neighbours,
    shuffled and repeated: every one must land where numpy.histogram puts it."""
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    vals = edge_values(lo, hi, bins)
    x = np.tile(vals, 3)
    rng(bins).shuffle(x)
    # lo first on purpose in one copy (the shift c), in the middle in the other
    check_snapshot([np.r_[np.float32(lo), x], x.copy()], bins=bins)


@pytest.mark.parametrize("bins", [3, 6, 10, 14, 22, 4094])
@pytest.mark.parametrize("a", [5.0, 0.1, 3.0, 1e30, 1e-30])
def test_rounded_edges_symmetric_ranges(a, bins):
    """[-a, a] with a step (2a / B) that is not exact: numpy's edges round k * step
    before adding lo (its middle edge of an even B is exactly 0); the kernel must use
    those, not a fused multiply-add's (0 would land one bin low), for values and deltas."""
    a32 = np.float32(a)
    vals = np.r_[np.float32([-a32, a32, 0.0, -0.0]), edge_values(-float(a32), float(a32), bins)]
    x = np.tile(vals, 2)
    rng(bins).shuffle(x)
    _, _, status = check_snapshot([x.copy()], [np.zeros_like(x)], bins=bins)  # d = x
    assert status[0] == 0


@pytest.mark.parametrize("bins", BINS)
def test_deltas_on_bin_edges(bins):
    """Deltas x - p on numpy's float64 edges of [-1, 1] (exactly, where the edges are
    dyadic) and a few float64 steps either side of them: x an edge rounded to float32,
    p = 0, +-2^-30, +-2^-40 or +-2^-60 (d = x - p is then exact or rounds onto the edge)."""
    edges = np.linspace(-1.0, 1.0, bins + 1).astype(np.float32)
    xs, ps = [np.float32(-1), np.float32(1)], [np.float32(0), np.float32(0)]  # d = -1 and 1 pin the range
    for off in (0.0, 2.0 ** -30, -(2.0 ** -30), 2.0 ** -40, -(2.0 ** -40), 2.0 ** -60, -(2.0 ** -60)):
        for e in edges:
            if -1 <= float(e) - off <= 1:
                xs.append(e)
                ps.append(np.float32(off))
    order = rng(bins).permutation(len(xs) * 3) % len(xs)
    x, p = np.array(xs, dtype=np.float32)[order], np.array(ps, dtype=np.float32)[order]
    _, _, status = check_snapshot([x], [p], bins=bins)
    assert status[0] == 0


@pytest.mark.parametrize("bins", BINS)
def test_narrow_deltas_on_bin_edges(bins):
    """Deltas in [X - 2^-28, X], X = 1 + 2^-20 (narrow next to their magnitude: the
    kernel's float64 delta index), on numpy's float64 edges and 1 or 2 float64 ulps
    either side: x = X, p = X - d, which float32 holds exactly for such d."""
    big = 1.0 + 2.0 ** -20
    lo, hi = big - 2.0 ** -28, big
    ds = [lo, hi]
    for e in np.linspace(lo, hi, bins + 1):
        for j in (-2, -1, 0, 1, 2):
            d = e
            for _ in range(abs(j)):
                d = np.nextafter(d, np.inf if j > 0 else -np.inf)
            if lo <= d <= hi:
                ds.append(float(d))
    ds = np.array(ds)[rng(bins).permutation(len(ds) * 3) % len(ds)]
    p = (big - ds).astype(np.float32)
    assert np.array_equal(big - p.astype(np.float64), ds)  # the deltas are exactly these
    x = np.full(ds.size, big, dtype=np.float32)
    _, _, status = check_snapshot([x], [p], bins=bins, copy=True)
    assert status[0] == 0


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("base", [1.0, -1.0, 1e30, -3e38, 1e-30, 1e-44, 65504.0])
def test_narrow_ranges(base, bins):
    """Ranges 1, 2, 3, 16 and 1000 ulps wide at many magnitudes (the float32 index is
    useless there, each value is near an edge): counts still exactly numpy's."""
    g = rng(int(bins))
    tensors = []
    for width in (1, 2, 3, 16, 1000):
        vals = ulps_from(base, width + 1)
        tensors.append(g.choice(vals, 500))
    check_snapshot(tensors, bins=bins)


def test_narrow_delta_ranges():
    """Delta ranges one or a few float64 ulps wide: numpy refuses them ("too many
    bins") for B >= 4; the kernel must hand them back (bit 1, prev untouched) and
    still do the weights; wider ones (2^-30 of the magnitude) it must do exactly."""
    x = np.ones(100, dtype=np.float32)
    for bins in BINS:
        for k in (1, 2, 3):
            p = np.zeros(100, dtype=np.float32)
            p[::2] = -k * 2.0 ** -52  # d in {1, 1 + k ulp(1.0)}
            _, _, status = check_snapshot([x.copy()], [p], bins=bins, copy=True)
            if bins >= 4:
                assert status[0] == D_NOT_DONE, (bins, k, status)
        p = np.zeros(100, dtype=np.float32)
        p[::3] = -(2.0 ** -30)
        p[1::3] = -(2.0 ** -31)  # d in {1, 1 + 2^-31, 1 + 2^-30}: the float64 delta index
        _, _, status = check_snapshot([x.copy()], [p], bins=bins, copy=True)
        assert status[0] == 0, (bins, status)


def joint_min(bins: int) -> int:
    """The size from which the kernel counts (value bin, delta bin) pairs in one joint table,
    or pairs of neighbouring elements of a lone histogram (fastats.c JOINT_MIN; bins^2 <= 4096):
    tensors at least this big take that path."""
    return kernel().JOINT_FACTOR * bins * bins


@pytest.mark.parametrize("bins", [1, 2, 3, 7, 12, 64])
@pytest.mark.parametrize("code", CODES)
def test_pair_tables_of_one_histogram_on_edges(code, bins):
    """A lone histogram of a tensor big enough for the pair tables (values without a previous
    copy; the deltas of a constant tensor), of odd and even sizes around the threshold (an
    odd group's last element is counted alone), its elements on numpy's edges and their
    neighbours: the counts (both marginals of the pairs) equal numpy.histogram's."""
    g = rng(70 + bins)
    edges = edge_values(-1.0, 1.0, bins)
    for n in (joint_min(bins) - 1, joint_min(bins), joint_min(bins) + 17, max(joint_min(bins), 5000) * 3 + 5):
        x32 = g.choice(edges, n).astype(np.float32)
        _, _, status = check_snapshot([as_code(x32, code)], codes=[code], bins=bins)
        assert status[0] == 0, (n, status)
        ones = np.ones(n, dtype=np.float32)  # constant values: the deltas' histogram alone
        p32 = (ones - x32).astype(np.float32)
        _, raw_d, status = check_snapshot([as_code(ones, code)], [as_code(p32, code)], [code], bins=bins, copy=True)
        assert status[0] == 0 and raw_d[0, N_RAW:].sum() == n, (n, status)


@pytest.mark.parametrize("bins", [1, 2, 3, 7, 12, 64])
@pytest.mark.parametrize("code", CODES)
def test_joint_table_values_and_deltas_on_edges(code, bins):
    """Tensors big enough for the joint (value, delta) table, just below and just above its
    threshold, whose values and deltas sit on numpy's edges (small integers: the edges of
    [-3, 3] and of [-6, 6] meet them for many B) and in between, with copy: both histograms
    (the joint table's two marginals) still equal numpy.histogram's."""
    g = rng(40 + bins)
    for n in (joint_min(bins) - 1, joint_min(bins) + 17, max(joint_min(bins), 5000) * 3 + 5):
        x32 = g.integers(-3, 4, n).astype(np.float32)
        x32[g.random(n) < 0.3] += np.float32(0.5)
        p32 = (x32 - g.integers(-6, 7, n)).astype(np.float32)
        p32[::7] = x32[::7]  # zero deltas too
        x, p = as_code(x32, code), as_code(p32, code)
        _, _, status = check_snapshot([x], [p], [code], bins=bins, copy=True)
        assert status[0] == 0, (n, status)
        edges = edge_values(-1.0, 1.0, bins)
        xe = g.choice(edges, n).astype(np.float32)
        pe = g.choice(edges, n).astype(np.float32)
        _, _, status = check_snapshot([as_code(xe, code)], [as_code(pe, code)], [code], bins=bins, copy=True)


def test_repeated_and_quantised_values():
    """Many equal values and float16/bfloat16-quantised data (values repeat, sit on a
    coarse grid that often meets the edges)."""
    g = rng(13)
    base = g.standard_normal(50_000).astype(np.float32)
    tensors = [np.repeat(base[:7], 5000), base.astype(np.float16).astype(np.float32),
               widen(bf16_bits(base), BF16).copy(), np.round(base * 4).astype(np.float32) / 4]
    for bins in (7, 64, 4096):
        check_snapshot([t.copy() for t in tensors], bins=bins)


def test_huge_and_tiny_magnitudes():
    """Extremes: values near +-FLT_MAX (a float32 index of them overflows), deltas
    beyond float32 range (FLT_MAX - -FLT_MAX), float32 subnormals and their deltas."""
    g = rng(14)
    huge = (g.choice([-1.0, 1.0], 3000) * FLT_MAX * g.uniform(0.5, 1.0, 3000)).astype(np.float32)
    huge[:2] = [FLT_MAX, -FLT_MAX]
    tiny = (g.integers(-1000, 1000, 3000) * 1e-45).astype(np.float32)  # multiples of 2^-149
    mixed = np.r_[huge[:100], tiny[:100], np.float32([1.0, -1.0])]
    xs = [huge, tiny, mixed]
    prevs = [-huge, g.permutation(tiny), g.permutation(mixed)]
    for bins in (1, 3, 64, 4096):
        check_snapshot([x.copy() for x in xs], [p.copy() for p in prevs], bins=bins, copy=True)


# ------------------------------------------------------------ delta rows


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("code", CODES)
def test_delta_rows(code, n):
    """Delta rows next to weights rows for every dtype and awkward length: exact
    d = x - prev in float64, psq, extrema, zeros, counts; copy=True leaves prev == x."""
    x32 = random_values(n, 20 + n)
    x = as_code(x32, code)
    prev = as_code(step_from(widen(x, code), 21 + n, 1e-2), code)
    if n == 1:
        prev = as_code(np.float32([0.5]), code)
    check_snapshot([x], [prev], [code], bins=64 if n > 300 else 7, copy=True)


def test_delta_special_shapes():
    """Deltas that are constant (lo == hi: bin B // 2), all zero, of constant weights,
    and from a prev of a very different magnitude (d is rounded in float64); all done."""
    g = rng(22)
    v = g.integers(-50, 50, 999).astype(np.float32)
    for code in CODES:
        big, small = (6e4, 1e-6) if code == F16 else (1e30, 1e-20)  # within the dtype's range
        cases = [
            (v, v - 1),  # d == 1 everywhere
            (v, v.copy()),  # d == 0 everywhere: nothing changed
            (np.full(999, 2.0, np.float32), np.full(999, 1.0, np.float32)),  # both constant
            (np.full(999, 2.0, np.float32), v),  # constant weights, varied delta
            (random_values(999, 23), small * g.uniform(-1, 1, 999)),  # |prev| << |x|
            (small * g.uniform(-1, 1, 999), big * g.uniform(-1, 1, 999)),  # |prev| >> |x|
        ]
        for bins in (1, 2, 64, 4096):
            xs = [as_code(x, code) for x, _ in cases]
            ps = [as_code(p, code) for _, p in cases]
            _, _, status = check_snapshot(xs, ps, [code] * len(cases), bins=bins, copy=True)
            assert not status.any(), (code, bins, status)


# ------------------------------------------------------------ copy semantics


@pytest.mark.parametrize("code", CODES)
def test_copy_only_where_the_delta_was_done(code):
    """copy=True: prevs of done deltas become bit copies of x; prevs whose delta was
    handed back (NaN in x, +Inf in prev, a delta range numpy refuses) keep their bits;
    copy=False touches no prev, and read-only prevs are then fine."""
    n = 5000
    good = random_values(n, 30)
    nan_x = as_code(good, code)
    nan_x[4097] = BAD[code][0]
    inf_prev = as_code(step_from(good, 31), code)
    inf_prev[17] = BAD[code][1]
    xs = [as_code(good, code), nan_x, as_code(good, code)]
    prevs = [as_code(step_from(good, 32), code), as_code(step_from(good, 33), code), inf_prev]
    expect = [0, W_NOT_DONE | D_NOT_DONE, D_NOT_DONE]
    if code != F16:  # d in {1, 1 + 2^-52}: not a float16 difference
        narrow = np.zeros(n, np.float32)
        narrow[::2] = -(2.0 ** -52)
        xs.append(as_code(np.ones(n, np.float32), code))
        prevs.append(as_code(narrow, code))
        expect.append(D_NOT_DONE)
    codes = [code] * len(xs)
    _, _, status = check_snapshot(xs, prevs, codes, bins=64, copy=True)
    assert list(status) == expect
    # copy=False: nothing is written, read-only previous copies are accepted
    xs = [as_code(good, code) for _ in expect]
    prevs = [as_code(step_from(good, 35 + i), code) for i in range(len(expect))]
    for p in prevs:
        p.setflags(write=False)
    _, _, status = check_snapshot(xs, prevs, codes, bins=64, copy=False)
    assert not status.any()


# ------------------------------------------------------------ status bytes


def test_status_bits_in_a_mixed_call():
    """NaN/+Inf/-Inf anywhere (first element, inside a 16-lane group, in the tail,
    last, in the second 4096 block), zero-length inputs and non-finite prevs (an
    all-Inf prev too): each flagged on its own, every other tensor in the same call
    still correct."""
    n = 4096 + 37
    good = random_values(n, 40)
    xs, prevs, codes, expect = [], [], [], []

    def add(x, p, code, st):
        xs.append(x)
        prevs.append(p)
        codes.append(code)
        expect.append(st)

    for code in CODES:
        g = as_code(good, code)
        add(g.copy(), as_code(step_from(good, 41), code), code, 0)
        for value in BAD[code]:
            for at in (0, 5, n - 1 - 3, n - 1, 4100):  # first, group, tail, last, second block
                x = g.copy()
                x[at] = value
                add(x, None, code, W_NOT_DONE)
                p = g.copy()
                p[at] = value
                add(g.copy(), p, code, D_NOT_DONE)  # weights still done
                add(x.copy(), as_code(good, code), code, W_NOT_DONE | D_NOT_DONE)
        for value in BAD[code][1:]:  # a delta of constant -Inf/+Inf: not the lo == hi shortcut
            add(g.copy(), np.full_like(g, value), code, D_NOT_DONE)
            add(g[:1].copy(), np.full_like(g[:1], value), code, D_NOT_DONE)
        empty = np.empty(0, {F32: np.float32, F64: np.float64}.get(code, np.uint16))
        add(empty, None, code, W_NOT_DONE)
        add(empty.copy(), empty.copy(), code, W_NOT_DONE | D_NOT_DONE)
        add(g.copy(), None, code, 0)
    _, _, status = check_snapshot(xs, prevs, codes, bins=64, copy=True)
    assert list(status) == expect


def test_empty_call():
    """No tensors: an empty status, nothing else."""
    assert kernel().snapshot([], [], b"", 64, np.zeros(0), np.zeros(0), True) == b""


# ------------------------------------------------------------ float64


def random64(n: int, seed: int, scale: float = 1.0, loc: float = 0.0) -> np.ndarray:
    """float64 values that float32 cannot hold (full 53-bit mantissas)."""
    return loc + scale * rng(seed).standard_normal(n)


F64_CASES = {
    "normal": lambda n: random64(n, 1),
    "layernorm": lambda n: random64(n, 2, 1e-9, 1.0),  # |mean| >> std, spread below float32's ulp
    "wide": lambda n: random64(n, 3, 1e100),  # beyond float32's range
    "tiny": lambda n: random64(n, 4, 1e-300),  # near the bottom of float64's normal range
    "subnormal": lambda n: random64(n, 4, 1e-310),  # may be handed back (bins / range overflows)
    "integers": lambda n: rng(5).integers(-3, 4, n).astype(np.float64),
}


@pytest.mark.parametrize("case,n", [(c, n) for c in sorted(F64_CASES) for n in (1, 17, 257, 4097, 300_001)])
def test_float64_rows(case, n):
    """float64 weights and exact deltas (d = x - prev rounded once, as numpy does):
    the same contract as float32, with float64 lanes and a float64 bin index."""
    x = F64_CASES[case](n)
    prev = x - 1e-3 * np.abs(x).max() * rng(6).standard_normal(n) if n > 1 else x - 0.5
    prev[::5] = x[::5]
    _, _, status = check_snapshot([x], [prev.copy()], [F64], bins=64 if n > 300 else 7, copy=True)
    assert status[0] == 0 or case == "subnormal"


@pytest.mark.parametrize("bins", BINS)
@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.1, 0.7), (-3.7e100, 1.2e101), (1 - 1e-9, 1 + 1e-9)])
def test_float64_values_on_bin_edges(lo, hi, bins):
    """float64 values on numpy's float64 edges and one float64 ulp either side."""
    edges = np.linspace(lo, hi, bins + 1)
    vals = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [lo, hi]])
    vals = vals[(vals >= lo) & (vals <= hi)]
    x = np.tile(vals, 3)
    rng(bins).shuffle(x)
    _, _, status = check_snapshot([np.r_[lo, x], x.copy()], codes=[F64, F64], bins=bins)
    assert not status.any()


def test_float64_overflow_is_handed_back():
    """Finite float64 values whose sums of squares (or range, or delta) overflow are
    handed back untouched, and a tensor next to them is still done."""
    big = np.array([1e300, -1e300, 5e299])
    ok = random64(100, 7)
    xs = [big.copy(), ok.copy(), np.array([1.7e308, -1.7e308])]
    prevs = [None, ok - 1e-3 * random64(100, 8), np.array([-1.7e308, 1.7e308])]
    _, _, status = check_snapshot(xs, prevs, [F64] * 3, bins=64, copy=True)
    assert list(status) == [W_NOT_DONE, 0, W_NOT_DONE | D_NOT_DONE]


def test_float32_values_as_float64_give_the_same_rows():
    """float32 values passed as float64 give the float32 rows (extrema, counts, sums
    within the summation bound: the lanes are the same, only the pass differs)."""
    x32 = random_values(10_000, 8)
    p32 = step_from(x32, 9)
    w32, d32, _ = run([x32], [p32], [F32])
    w64, d64, _ = run([x32.astype(np.float64)], [p32.astype(np.float64)], [F64])
    assert bits_equal(w32, w64) and bits_equal(d32, d64)


# ------------------------------------------------------------ 16-bit dtypes


def special_f16() -> np.ndarray:
    """Every float16 subnormal, the smallest normals, the largest finite values, zeros."""
    bits = np.r_[np.arange(0, 0x0400), np.arange(0x0400, 0x0410), np.arange(0x7BF0, 0x7C00)].astype(np.uint16)
    return np.r_[bits, bits | 0x8000].astype(np.uint16)


def special_bf16() -> np.ndarray:
    """bfloat16 subnormals, smallest normals, largest finite values, zeros, and values near 1."""
    bits = np.r_[np.arange(0, 0x0090), np.arange(0x7F70, 0x7F80), np.arange(0x3F70, 0x3F90)].astype(np.uint16)
    return np.r_[bits, bits | 0x8000].astype(np.uint16)


def sixteen_bit_inputs(code: int, n: int, seed: int):
    """(x, prev) of dtype `code`: random values with the special values mixed in."""
    g = rng(seed)
    special = special_f16() if code == F16 else special_bf16()
    x = as_code(random_values(n, seed), code)
    k = min(n, special.size)
    x[g.choice(n, k, replace=False)] = g.choice(special, k, replace=False)
    prev = as_code(step_from(widen(x, code), seed + 1, 1e-2), code)
    mixed = g.random(n) < 0.3
    prev[mixed] = g.choice(special, int(mixed.sum()))
    return x, prev


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 255, 256, 257, 2048, 4095, 4096])
@pytest.mark.parametrize("code", [F16, BF16])
def test_16bit_rows_equal_float32_rows(code, n):
    """float16/bfloat16 bits give bit for bit the rows (and statuses) of their values
    widened to float32, subnormals and largest values included; the widened rows
    are themselves checked against the references."""
    x, prev = sixteen_bit_inputs(code, n, 50 + n)
    x32, prev32 = widen(x, code).copy(), widen(prev, code).copy()
    w16, d16, s16 = check_snapshot([x], [prev], [code], bins=64)
    w32, d32, s32 = check_snapshot([x32], [prev32], [F32], bins=64)
    assert s16[0] == s32[0] == 0
    assert bits_equal(w16, w32), np.nonzero(w16 != w32)
    assert bits_equal(d16, d32), np.nonzero(d16 != d32)


def test_16bit_large_rows_equal_float32_rows():
    """16-bit rows equal, bit for bit, the rows of the values widened to float32, sums
    included, for a tensor of several 4096-element blocks (what holds up to 4096)."""
    x = f16_bits(random_values(100_000, 70))
    prev = f16_bits(step_from(widen(x, F16), 71, 1e-2))
    w16, d16, _ = run([x], [prev], [F16])
    w32, d32, _ = run([widen(x, F16).copy()], [widen(prev, F16).copy()], [F32])
    assert bits_equal(w16, w32) and bits_equal(d16, d32)


# ------------------------------------------------------------ argument errors


def good_args(bins: int = 8) -> dict:
    """A valid call (copy=True) that BAD_ARGS entries change one thing of."""
    x = np.arange(16, dtype=np.float32)
    return dict(xs=[x], prevs=[x - 1], dtypes=bytes([F32]), bins=bins,
                out_w=np.zeros((1, N_RAW + bins)), out_d=np.zeros((1, N_RAW + bins)), copy=True)


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


BAD_ARGS = {
    "prevs shorter than xs": dict(prevs=[]),
    "dtypes longer than xs": dict(dtypes=bytes([F32, F32])),
    "dtypes empty": dict(dtypes=b""),
    "unknown dtype 4": dict(dtypes=bytes([4])),
    "unknown dtype 255": dict(dtypes=bytes([255])),
    "dtypes not bytes": dict(dtypes="\x00"),
    "bins 0": dict(bins=0),
    "bins 4097": dict(bins=MAX_BINS + 1, out_w=np.zeros(N_RAW + MAX_BINS + 1), out_d=np.zeros(N_RAW + MAX_BINS + 1)),
    "bins -1": dict(bins=-1),
    "out_w too small": dict(out_w=np.zeros(N_RAW + 7)),
    "out_d too small": dict(out_d=np.zeros(N_RAW + 7)),
    "out rows for fewer tensors": dict(xs=[np.ones(4, np.float32)] * 2, prevs=[None, None], dtypes=bytes(2)),
    "out_w read-only": dict(out_w=readonly(np.zeros(N_RAW + 8))),
    "out_d non-contiguous": dict(out_d=np.zeros(2 * (N_RAW + 8))[::2]),
    "prev shorter than x": dict(prevs=[np.zeros(15, np.float32)]),
    "prev longer than x": dict(prevs=[np.zeros(17, np.float32)]),
    "16-bit prev of another size": dict(xs=[np.zeros(16, np.uint16)], prevs=[np.zeros(15, np.uint16)],
                                        dtypes=bytes([F16])),
    "read-only prev with copy": dict(prevs=[readonly(np.zeros(16, np.float32))]),
    "non-contiguous x": dict(xs=[np.arange(32, dtype=np.float32)[::2]]),
    "non-contiguous prev": dict(prevs=[np.zeros(32, np.float32)[::2]]),
    "x bytes not a multiple of 4": dict(xs=[np.zeros(6, np.uint8)], prevs=[None]),
    "x bytes odd for float16": dict(xs=[np.zeros(3, np.uint8)], prevs=[None], dtypes=bytes([F16])),
    "x not a buffer": dict(xs=[[1.0, 2.0]], prevs=[None]),
    "float64 x as float32": dict(xs=[np.arange(8, dtype=np.float64)], prevs=[None]),
    "int32 x as float32": dict(xs=[np.arange(16, dtype=np.int32)], prevs=[None]),
    "float32 prev of a float16 x": dict(xs=[np.zeros(16, np.float16)], prevs=[np.zeros(8, np.float32)],
                                        dtypes=bytes([F16])),
    "xs not a sequence": dict(xs=5),
    "prevs not a sequence": dict(prevs=None),
    "bins not an int": dict(bins=8.0),
}


def call(args: dict):
    return kernel().snapshot(args["xs"], args["prevs"], args["dtypes"], args["bins"], args["out_w"],
                             args["out_d"], args["copy"])


def test_good_arguments_accepted():
    """The baseline of test_bad_arguments_raise is a valid call (so each error there
    comes from the one thing changed)."""
    args = good_args()
    assert call(args) == b"\x00"
    assert np.array_equal(args["prevs"][0], args["xs"][0])


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments_raise(name):
    """Each malformed call raises TypeError/ValueError/BufferError (no crash) and
    writes no previous copy, though copy=True."""
    args = good_args()
    args.update(BAD_ARGS[name])
    prevs = args["prevs"] if isinstance(args["prevs"], list) else []
    before = [None if p is None else p.copy() for p in prevs]
    with pytest.raises((TypeError, ValueError, BufferError)):
        call(args)
    for p, b in zip(prevs, before, strict=True):
        assert p is None or bits_equal(p, b)


@pytest.mark.parametrize("bad", ["dtype", "prev size", "x buffer"])
def test_error_in_a_later_tensor_computes_nothing(bad):
    """Arguments are all checked before any work: an error at the last tensor leaves
    the previous copies of the good tensors before it untouched (copy=True)."""
    xs = [random_values(100, 80), random_values(100, 81), np.arange(16, dtype=np.float32)]
    prevs = [random_values(100, 82), random_values(100, 83), np.zeros(16, np.float32)]
    codes = [F32, F32, F32]
    if bad == "dtype":
        codes[2] = 7
    elif bad == "prev size":
        prevs[2] = np.zeros(8, np.float32)
    else:
        xs[2] = np.arange(32, dtype=np.float32)[::2]
    before = [p.copy() for p in prevs]
    out = np.zeros((3, N_RAW + 64))
    with pytest.raises((TypeError, ValueError)):
        kernel().snapshot(xs, prevs, bytes(codes), 64, out, out.copy(), True)
    assert all(bits_equal(p, b) for p, b in zip(prevs, before, strict=True))


# ------------------------------------------------------------ property test


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def tensors(draw):
    """(x, prev or None, code): float32 arrays of drawn lengths from arbitrary finite values,
    a few repeated values, a normal sample at a drawn scale or a range a few ulps wide;
    prev None, a small step back, values from the same pool, arbitrary values, or x
    minus a constant (deltas narrow next to their magnitude)."""
    n = draw(st.one_of(st.sampled_from(LENGTHS[:-1]), st.integers(1, 700)))
    g = rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(["any", "pool", "normal", "ulps"]))
    if kind == "any":
        pool = np.array(draw(st.lists(finite32, min_size=1, max_size=64)), dtype=np.float32)
    elif kind == "pool":
        pool = np.array(draw(st.lists(finite32, min_size=1, max_size=4)), dtype=np.float32)
    elif kind == "ulps":
        magnitude = draw(st.floats(float(np.float32(1e-45)), float(np.float32(1e38)), width=32))
        base = magnitude * draw(st.sampled_from([1.0, -1.0]))
        pool = ulps_from(base, draw(st.integers(1, 40)) + 1)
    else:
        scale = draw(st.sampled_from([1e-40, 1e-20, 1e-3, 1.0, 1e20, 1e37]))
        loc = draw(st.sampled_from([0.0, 1.0, -1e4, 1e30])) * draw(st.sampled_from([0.0, 1.0]))
        pool = np.clip(loc + scale * g.standard_normal(64), -FLT_MAX, FLT_MAX).astype(np.float32)
    x = g.choice(pool, n).astype(np.float32)
    which = draw(st.sampled_from(["none", "step", "same_pool", "any", "shifted"]))
    prev = None
    if which == "step":
        with np.errstate(over="ignore"):  # a step past FLT_MAX becomes Inf: a case too
            prev = (x.astype(np.float64) * (1 + 1e-3 * g.standard_normal(n))).astype(np.float32)
    elif which == "shifted":
        shift = draw(st.sampled_from([1.0, -3.0, 1e10]))
        prev = np.clip(x.astype(np.float64) - shift, -FLT_MAX, FLT_MAX).astype(np.float32)
    elif which == "same_pool":
        prev = g.choice(pool, n).astype(np.float32)
    elif which == "any":
        prev = np.array(draw(st.lists(finite32, min_size=n, max_size=n)) if n <= 64 else
                        g.choice(np.array(draw(st.lists(finite32, min_size=1, max_size=8)), np.float32), n),
                        dtype=np.float32)
    code = draw(st.sampled_from(CODES))
    if code != F32:  # quantise (may overflow float16 to Inf: then the status must say so)
        with np.errstate(over="ignore"):
            x = as_code(x, code)
            prev = None if prev is None else as_code(prev, code)
    return x, prev, code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(tensors(), min_size=1, max_size=4), bins=st.one_of(st.sampled_from(BINS), st.integers(1, 4096)),
       copy=st.booleans())
def test_property_random_tensors(batch, bins, copy):
    """Any batch of finite float32/float16/bfloat16 tensors, with or without prevs:
    the whole contract (check_snapshot) holds."""
    xs = [x for x, _, _ in batch]
    prevs = [p for _, p, _ in batch]
    codes = [c for _, _, c in batch]
    _, _, status = check_snapshot(xs, prevs, codes, bins=bins, copy=copy)
    for p, code, st_ in zip(prevs, codes, status, strict=True):  # what was covered (--hypothesis-show-statistics)
        event(f"dtype {code}, {'delta' if p is not None else 'weights only'}, status {st_}")


# ------------------------------------------------------------ ISA variants
#
# The hot loops are compiled for AVX-512, AVX2 and the baseline and picked at load time
# (fastats.c HOT). Each variant must give the same bits: these tests build fastats.c once
# per variant this CPU can run, with setup.py's flags, and compare every output with the
# installed build's on inputs where a difference in rounding would show.


def _setup_kernel_flags() -> list[str]:
    """setup.py's KERNEL_FLAGS, read from its source (setup.py runs setup() when imported)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KERNEL_FLAGS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no KERNEL_FLAGS")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


ISA_DEFINES = {"baseline": ["-DWEIGHTTUI_FASTATS_BASELINE"], "avx2": ['-DWEIGHTTUI_FASTATS_TARGET="avx2"'],
               "avx512f": ['-DWEIGHTTUI_FASTATS_TARGET="avx512f"']}


def _load_as(path: pathlib.Path, tag: str):
    loader = importlib.machinery.ExtensionFileLoader(f"{tag}._fastats", str(path))
    spec = importlib.util.spec_from_file_location(f"{tag}._fastats", str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def isa_builds(tmp_path_factory):
    """{variant: module}: fastats.c built for the baseline and for each of AVX2 and AVX-512 the CPU has."""
    kernel()
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        pytest.skip("the ISA variants are built on x86-64 Linux only")
    cc_var = (sysconfig.get_config_var("CC") or "cc").split()
    cc = shutil.which(cc_var[0]) or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the variants with")
    include = sysconfig.get_paths()["include"]
    if not (pathlib.Path(include) / "Python.h").exists():
        pytest.skip(f"no Python.h in {include} to build the variants with")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    out = tmp_path_factory.mktemp("isa")
    cpu = _cpu_flags()
    want = ["baseline"] + [v for v in ("avx2", "avx512f") if v in cpu]
    procs = {}
    for v in want:  # built side by side
        so = out / f"{v}{suffix}"
        cmd = [cc, "-shared", "-fPIC", *_setup_kernel_flags(), f"-I{include}", *ISA_DEFINES[v],
               str(ROOT / "weighttui/record/native/fastats.c"), "-o", str(so)]
        procs[v] = (so, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    mods = {}
    for v, (so, proc) in procs.items():
        log = proc.communicate()[0].decode(errors="replace")
        assert proc.returncode == 0, f"building the {v} variant failed:\n{log}"
        mods[v] = _load_as(so, f"_wtisa_{v}")
    return mods


def _isa_cases():
    """(name, xs, prevs, codes, bins, copy, extras) of inputs where rounding differences would show."""
    g = rng(99)
    cases = []
    for code in CODES:
        for n in (1, 15, 17, 257, 4097, 16383, 16384 + 17, 300_001):
            x32 = random_values(n, n, scale=0.05)
            xs, ps = as_code(x32, code), as_code(step_from(x32, n + 1), code)
            for bins in (7, 64):
                cases.append((f"normal {code} n={n} B={bins}", [xs], [ps.copy()], [code], bins, True, None))
            cases.append((f"values only {code} n={n}", [xs], [None], [code], 64, False, None))
    for lo, hi in EDGE_RANGES:
        for bins in (7, 64, 4096):
            lo32, hi32 = float(np.float32(lo)), float(np.float32(hi))
            vals = edge_values(lo32, hi32, bins)
            x = np.resize(vals, 20_001)
            g.shuffle(x)
            p = np.resize(edge_values(lo32 / 2, hi32 / 2, bins), x.size)
            cases.append((f"edges [{lo}, {hi}] B={bins}", [x, x[::-1].copy()], [p, None], [F32, F32], bins, True,
                          None))
    x = random_values(50_000, 5)
    lr = np.float32(1e-3)
    sign = np.where(g.random(x.size) < 0.5, lr, -lr).astype(np.float32)
    cases.append(("constant shift", [x], [(x - lr).astype(np.float32)], [F32], 64, True, None))
    cases.append(("+-lr", [x], [(x - sign).astype(np.float32)], [F32], 64, True, None))
    cases.append(("+-lr float64", [x.astype(np.float64)], [(x - sign).astype(np.float64)], [F64], 64, True, None))
    den = (g.integers(-1000, 1000, 40_000) * np.float32(1e-45)).astype(np.float32)  # subnormals
    cases.append(("denormals", [den], [np.roll(den, 1)], [F32], 64, True, None))
    z = np.where(g.random(40_000) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    z[::97] = np.float32(1e-3)
    cases.append(("+-0.0", [z, np.zeros(40_000, np.float32)], [-z, np.full(40_000, -0.0, np.float32)],
                  [F32, F32], 64, True, None))
    bad = random_values(40_000, 6)
    bad[12_345] = np.nan
    cases.append(("NaN handed back", [bad, x], [x[:40_000].copy(), None], [F32, F32], 64, True, None))
    narrow = ulps_from(1.0, 40)[g.integers(0, 40, 30_000)]
    cases.append(("narrow", [narrow, narrow.astype(np.float64)], [None, None], [F32, F64], 64, False, None))
    # the instruments that read every element, in the same passes
    for code in (F32, BF16, F64):
        rows, cols = 300, 257
        x32 = random_values(rows * cols, 7, scale=0.05)
        xs, ps = as_code(x32, code), as_code(step_from(x32, 8), code)
        x0 = as_code(random_values(x32.size, 9, scale=0.05), code)
        s0, s1 = as_code(random_values(x32.size, 10, 1e-3), code), as_code(random_values(x32.size, 11, 1e-4), code)
        v, vd = rng(12).standard_normal(cols), rng(13).standard_normal(cols)
        idx = rng(14).integers(0, x32.size, 100).astype(np.int64)
        need = 8 + rows + 2 * (rows + cols) + idx.size
        cases.append((f"extras {code}", [xs], [ps], [code], 64, True,
                      [(x0, rows, True, v, vd, idx, (s0, s1), need)]))
    return cases


def _isa_run(mod, xs, prevs, codes, bins, copy, extras):
    """Every output of one call: status, raw rows (NaN where not written), prevs after, extras' out."""
    t = len(xs)
    raw_w, raw_d = np.full((t, N_RAW + bins), np.nan), np.full((t, N_RAW + bins), np.nan)
    prevs = [None if p is None else p.copy() for p in prevs]
    args = [list(xs), prevs, bytes(codes), bins, raw_w, raw_d, copy, 1]
    outs = []
    if extras is not None:
        ex = []
        for x0, rows, units, v, vd, idx, states, need in extras:
            out = np.full(need, np.nan)
            outs.append(out)
            ex.append((x0, rows, units, v, vd, idx, states, out))
        args.append(ex)
    status = mod.snapshot(*args)
    return [status, raw_w.tobytes(), raw_d.tobytes(), *[b"" if p is None else p.tobytes() for p in prevs],
            *[o.tobytes() for o in outs]]


def test_isa_variant_that_runs():
    """The installed build says which variant of the hot loops runs: on a CPU with AVX-512
    (or AVX2) the clone for it, unless the compiler had no target_clones (then the baseline)."""
    isa = kernel().ISA
    assert isa in ("baseline", "avx2", "avx512f")
    if sys.platform.startswith("linux") and platform.machine() == "x86_64" and isa != "baseline":
        assert isa == ("avx512f" if "avx512f" in _cpu_flags() else "avx2")


def test_isa_variants_give_the_same_bits(isa_builds):
    """Every variant this CPU runs (baseline SSE2, AVX2, AVX-512) against the installed build
    (the clone the loader picked): status, rows, histograms, the previous copies after copy and
    the instruments' outputs equal bit for bit, for every dtype, on bin edges, constant shifts,
    +-lr updates, subnormals, +-0.0, NaN, narrow ranges and the joint/pair table sizes."""
    for v, mod in isa_builds.items():
        assert mod.ISA == v, (v, mod.ISA)
    for name, xs, prevs, codes, bins, copy, extras in _isa_cases():
        want = _isa_run(kernel(), xs, prevs, codes, bins, copy, extras)
        for v, mod in isa_builds.items():
            got = _isa_run(mod, xs, prevs, codes, bins, copy, extras)
            for k, (a, b) in enumerate(zip(want, got, strict=True)):
                assert a == b, f"{name}: the {v} variant differs from the installed build ({kernel().ISA}), output {k}"


# ------------------------------------------------------------ finish (raw rows -> statistics)


def test_finish_equals_raw_rows_bit_for_bit():
    """finish() (the writer thread's finishing of the kernel's raw rows) gives raw_rows.weight_rows,
    delta_rows (against each row's psq) and hist_parts bit for bit: empty rows, rows without a finite
    element, NaN sums, a negative psq, a zero delta norm, shifted and unshifted rows, tiny and huge
    magnitudes, one bin and many."""
    from weighttui.record import raw_rows as rr

    if not hasattr(kernel(), "finish"):
        pytest.fail("the built kernel has no finish(): a stale build (python setup.py build_ext --inplace)")
    r = rng(11)
    for trial in range(300):
        rows, bins = int(r.integers(1, 20)), int(r.choice([1, 2, 7, 64, 200]))
        raw = r.standard_normal((rows, rr.N_RAW + bins)) * r.choice([1e-300, 1e-30, 1.0, 1e30, 1e300])
        raw[:, rr._N] = r.integers(0, 5, rows)
        raw[:, rr._M] = np.minimum(raw[:, rr._N], r.integers(0, 5, rows))
        raw[:, rr._C] = r.choice([0.0, 1.5], rows)
        raw[:, rr._ZEROS] = r.integers(0, 3, rows)
        raw[:, rr.N_RAW:] = r.integers(0, 1 << 20, (rows, bins))
        if trial % 7 == 0:
            raw[0, rr._S1] = np.nan
        if trial % 5 == 0:
            raw[-1, rr._PSQ] = -1.0
        if trial % 3 == 0:
            raw[0, [rr._S1, rr._S2, rr._C]] = 0.0  # a zero delta (norm 0, ratio 0 or inf)
        for kind, ref in ((0, rr.weight_rows(raw)), (1, rr.delta_rows(raw, raw[:, rr._PSQ]))):
            stats_ = np.empty(ref.shape)
            lo, hi, counts = np.empty(rows), np.empty(rows), np.empty((rows, bins), dtype=np.uint32)
            assert kernel().finish(raw, kind, bins, stats_, lo, hi, counts) is None
            rlo, rhi, rcounts = rr.hist_parts(raw, bins)
            assert stats_.tobytes() == ref.tobytes(), (trial, kind)
            assert lo.tobytes() == rlo.tobytes() and hi.tobytes() == rhi.tobytes()
            assert np.array_equal(counts, rcounts) and rcounts.dtype == counts.dtype
    with pytest.raises(ValueError, match="sizes"):
        kernel().finish(np.zeros((2, rr.N_RAW + 4)), 0, 4, np.empty((2, 6)), np.empty(2), np.empty(2),
                        np.empty((2, 4), dtype=np.uint32))
