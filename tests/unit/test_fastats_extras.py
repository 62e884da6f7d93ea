"""The fused kernel's instruments (kernel.Extras, snapshot()'s extras) against float64 numpy references.

What the kernel computes beside the raw rows, in the same two passes: the distance
from an initial copy, norms of up to two state buffers, per-row norms, one power
iteration step of W and of the update W - prev (u = W v / |W v|, b = W^T u) and values
at given coordinates; for float32, float64, float16 and bfloat16, NaN/Inf (handed back
through the status), zero-size and one-element tensors, chunk and row boundaries, and
argument errors. The raw rows must not change when extras are asked for.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from weighttui.record import kernel

REQUIRE_KERNEL = os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") == "1"
if not kernel.has_extras():
    if REQUIRE_KERNEL:
        pytest.fail(kernel.UNAVAILABLE or "the built weighttui._fastats computes no extras (stale build)",
                    pytrace=False)
    pytest.skip("weighttui._fastats with extras is not built", allow_module_level=True)

ml_dtypes = pytest.importorskip("ml_dtypes")
DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# float64 inputs: float64 everywhere (a few ulps); 16/32-bit ones: the products in float32
# (sums of 32 float32 lanes: ~1e-6 relative), the norms in float64
PRODUCT_RTOL = {"float64": 1e-12, "float32": 2e-5, "float16": 2e-5, "bfloat16": 2e-5}
NORM_RTOL = 1e-12
BINS = 64
# the kernel's chunk of a float32/float64 tensor with extras (a build from before it said none: 16384)
XCHUNK = getattr(kernel._fastats, "XCHUNK", 16384)


def rng(seed):
    return np.random.default_rng(seed)


def values(shape, dtype, seed, scale=1.0):
    return (scale * rng(seed).standard_normal(shape)).astype(DTYPES[dtype])


def f64(a):
    return np.asarray(a, dtype=np.float64)


def power_step(w, v):
    """(|W v|, b = W^T (W v / |W v|)) in float64."""
    y = w @ v
    ny = float(np.linalg.norm(y))
    u = y / ny if ny > 0 else np.zeros_like(y)
    return ny, w.T @ u


def full_extras(x, prev, seed):
    m = x.shape[0]
    cols = x.size // m
    g = rng(seed)
    idx = np.sort(g.choice(x.size, size=min(x.size, 37), replace=False)).astype(np.int64)
    return kernel.Extras(x0=values(x.shape, x.dtype.name, seed + 1), rows=m, units=True,
                         v=g.standard_normal(cols), vd=None if prev is None else g.standard_normal(cols), idx=idx,
                         states=(values(x.shape, x.dtype.name, seed + 2), np.abs(values(x.shape, x.dtype.name,
                                                                                          seed + 3))))


def check(ex, x, prev, dtype):
    """Every output of ex against float64 numpy."""
    m = x.shape[0]
    w = f64(x).reshape(m, -1)
    rt = PRODUCT_RTOL[dtype]
    assert ex.w_done
    assert ex.dist == pytest.approx(np.linalg.norm(w - f64(ex_x0[id(ex)]).reshape(m, -1)), rel=NORM_RTOL)
    s0, s1 = ex.state_norms
    assert s0 == pytest.approx(np.linalg.norm(f64(ex_states[id(ex)][0])), rel=NORM_RTOL)
    assert s1 == pytest.approx(np.linalg.norm(f64(ex_states[id(ex)][1])), rel=NORM_RTOL)
    np.testing.assert_allclose(ex.unit_norms, np.linalg.norm(w, axis=1), rtol=NORM_RTOL)
    ny, b = power_step(w, ex.v)
    assert ex.y_norm == pytest.approx(ny, rel=rt)
    np.testing.assert_allclose(ex.b, b, rtol=rt, atol=rt * np.abs(b).max())
    if prev is not None:
        assert ex.d_done
        d = w - f64(prev).reshape(m, -1)
        nyd, bd = power_step(d, ex.vd)
        assert ex.yd_norm == pytest.approx(nyd, rel=rt)
        np.testing.assert_allclose(ex.bd, bd, rtol=rt, atol=rt * np.abs(bd).max())
    np.testing.assert_array_equal(ex.gathered, f64(x).reshape(-1)[ex.idx])


ex_x0: dict = {}
ex_states: dict = {}


def run(xs, prevs, extras, copy=True, threads=1):
    for e in extras:
        if e is not None:
            ex_x0[id(e)] = e.x0
            ex_states[id(e)] = e.states
    return kernel.rows(xs, prevs, BINS, copy, threads, extras)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(3, 5), (64, 3, 7, 7), (300, 1001), (1, 40000), (40000, 1), (1, 140_000)])
def test_every_output_against_float64(dtype, shape):
    """Small, conv-shaped, several chunks with rows across chunk boundaries (300 x 1001 >
    XCHUNK-element chunks, 4096-element blocks for 16-bit), one row, one column, one row over
    two chunk boundaries."""
    assert 300 * 1001 > 2 * XCHUNK and 140_000 > 2 * XCHUNK
    x = values(shape, dtype, 1)
    prev = (f64(x) + values(shape, "float64", 2, 1e-2)).astype(x.dtype)
    p = prev.copy()
    ex = full_extras(x, prev, 3)
    _, _, wd, dd = run([x], [p], [ex])
    assert wd[0] and dd[0]
    check(ex, x, prev, dtype)
    assert np.array_equal(p.view(np.uint8), x.view(np.uint8))  # the copy for the next delta still happens


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("threads", [1, 3])
def test_rows_are_the_same_with_and_without_extras(dtype, threads):
    """Asking for extras changes nothing in the raw rows (the same order of additions, bit for bit)."""
    xs = [values(s, dtype, 10 + k) for k, s in enumerate([(300, 1001), (7, 3), (5,), (129, 257)])]
    prevs = [(f64(x) + values(x.shape, "float64", 20 + k, 1e-3)).astype(x.dtype) for k, x in enumerate(xs)]
    plain = kernel.rows(xs, [p.copy() for p in prevs], BINS, True, threads)
    extras = [full_extras(x, p, 30 + k) if x.ndim == 2 else kernel.Extras(x0=x.copy(), idx=np.array([0, 4]))
              for k, (x, p) in enumerate(zip(xs, prevs, strict=True))]
    with_extras = run(xs, [p.copy() for p in prevs], extras, threads=threads)
    for a, b in zip(plain, with_extras, strict=True):
        assert np.array_equal(a, b)
    for x, p, ex in zip(xs, prevs, extras, strict=True):
        if x.ndim == 2:
            check(ex, x, p, dtype)
        else:
            assert ex.dist == 0.0 and ex.gathered.tolist() == f64(x)[[0, 4]].tolist()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_nonfinite_values_are_handed_back(dtype):
    """NaN/Inf in x: nothing is done (w_done, d_done False; the previous copy untouched);
    NaN/Inf only in prev: the values' extras are valid, the update's are not;
    NaN in x0 or a state: that norm is NaN, the rest valid."""
    x = values((6, 10), dtype, 4)
    prev = (f64(x) + 0.01).astype(x.dtype)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[2, 3] = bad
        p = prev.copy()
        ex = full_extras(xb, prev, 5)
        run([xb], [p], [ex])
        assert not ex.w_done and not ex.d_done
        assert np.array_equal(p.view(np.uint8), prev.view(np.uint8))
        pb = prev.copy()
        pb[0, 0] = bad
        p = pb.copy()
        ex = full_extras(x, pb, 6)
        run([x], [p], [ex])
        assert ex.w_done and not ex.d_done
        assert np.array_equal(p.view(np.uint8), pb.view(np.uint8))
        np.testing.assert_allclose(ex.unit_norms, np.linalg.norm(f64(x), axis=1), rtol=NORM_RTOL)
        assert ex.dist == pytest.approx(np.linalg.norm(f64(x) - f64(ex_x0[id(ex)])), rel=NORM_RTOL)
    ex = full_extras(x, prev, 7)
    ex.x0 = ex.x0.copy()
    ex.x0[1, 1] = np.nan
    ex.states = (ex.states[0].copy(), ex.states[1])
    ex.states[0][0, 0] = np.inf
    run([x], [prev.copy()], [ex])
    assert ex.w_done and math.isnan(ex.dist) and math.isinf(ex.state_norms[0])
    assert ex.state_norms[1] == pytest.approx(np.linalg.norm(f64(ex_states[id(ex)][1])), rel=NORM_RTOL)


def test_zero_size_scalars_and_zero_matrices():
    """A zero-size tensor is not done (and rows=0 is the only matrix it can be); a one-element
    tensor is a 1 x 1 matrix; a zero matrix gives |W v| = 0 and b = 0 (no division by zero)."""
    empty = np.zeros(0, np.float32)
    ex = kernel.Extras(x0=empty.copy())
    _, _, wd, _ = run([empty], [None], [ex])
    assert not wd[0] and not ex.w_done
    one = np.array([[-2.5]], np.float32)
    ex = kernel.Extras(x0=np.zeros((1, 1), np.float32), rows=1, units=True, v=np.array([2.0]),
                       idx=np.array([0]), states=(one.copy(), None))
    run([one], [None], [ex])
    assert ex.w_done and ex.dist == 2.5 and ex.unit_norms.tolist() == [2.5] and ex.gathered.tolist() == [-2.5]
    assert ex.y_norm == 5.0 and ex.b.tolist() == [2.5] and ex.state_norms[0] == 2.5  # u = -1
    zero = np.zeros((4, 6), np.float32)
    ex = kernel.Extras(rows=4, units=True, v=np.ones(6), vd=np.ones(6))
    run([zero], [zero.copy()], [ex])
    assert ex.w_done and ex.d_done and ex.y_norm == 0 and ex.yd_norm == 0
    assert not ex.b.any() and not ex.bd.any() and not ex.unit_norms.any()


def test_mixed_call_extras_for_some_tensors():
    """Extras for some tensors of a call and None for others; without extras at all the call is
    the one from before (the argument is optional)."""
    xs = [values((8, 9), "float32", k) for k in range(3)]
    extras = [None, kernel.Extras(rows=8, units=True), None]
    run(xs, [None] * 3, extras)
    np.testing.assert_allclose(extras[1].unit_norms, np.linalg.norm(f64(xs[1]), axis=1), rtol=NORM_RTOL)
    out = np.zeros((3, 12 + BINS))
    assert kernel._fastats.snapshot(xs, [None] * 3, bytes(3), BINS, out, out.copy(), False) == b"\0\0\0"


def _args(**change):
    x = values((4, 6), "float32", 9)
    p = x.copy()
    item = dict(x0=None, rows=4, units=True, v=np.ones(6), vd=np.ones(6), idx=np.array([0, 23]), states=None,
                out=np.zeros(8 + 4 + 10 + 10 + 2))
    item.update(change)
    return x, p, tuple(item.values())


BAD = {
    "rows not dividing": dict(rows=5),
    "negative rows": dict(rows=-1),
    "units without rows": dict(rows=0, v=None, vd=None),
    "v too short": dict(v=np.ones(5)),
    "v not float64": dict(v=np.ones(6, np.float32)),
    "idx out of range": dict(idx=np.array([24])),
    "idx negative": dict(idx=np.array([-1])),
    "idx not int64": dict(idx=np.array([0], np.int32)),
    "out too small": dict(out=np.zeros(8)),
    "out read-only": dict(),  # made read-only in the test
    "out None": dict(out=None),
    "x0 wrong size": dict(x0=np.zeros(5, np.float32)),
    "x0 wrong dtype": dict(x0=np.zeros(24, np.float64)),
    "three states": dict(states=(np.zeros(24, np.float32),) * 3),
    "state wrong size": dict(states=(np.zeros(23, np.float32),)),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_extras_raise_and_write_nothing(name):
    x, p, item = _args(**BAD[name])
    if name == "out read-only":
        out = np.zeros(40)
        out.setflags(write=False)
        item = item[:7] + (out,)
    before = p.copy()
    p[:] = 0  # copy=True would overwrite it
    out = np.zeros((1, 12 + BINS))
    with pytest.raises((TypeError, ValueError, IndexError, BufferError)):
        kernel._fastats.snapshot([x.reshape(-1)], [p.reshape(-1)], bytes([0]), BINS, out, out.copy(), True, 1,
                                 [item])
    assert not p.any() and before.any()


def test_vd_needs_a_prev_and_extras_their_length():
    x, _, item = _args()
    out = np.zeros((1, 12 + BINS))
    with pytest.raises(ValueError, match="vd"):
        kernel._fastats.snapshot([x.reshape(-1)], [None], bytes([0]), BINS, out, out.copy(), True, 1, [item])
    with pytest.raises(ValueError, match="length"):
        kernel._fastats.snapshot([x.reshape(-1)], [None], bytes([0]), BINS, out, out.copy(), True, 1, [])
    with pytest.raises(TypeError):
        kernel._fastats.snapshot([x.reshape(-1)], [None], bytes([0]), BINS, out, out.copy(), True, 1, [(1, 2)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_gathered_values_for_any_order_of_coordinates(dtype):
    """Sorted coordinates are gathered while each chunk is in the cache, any others after the passes:
    sorted, repeated, unsorted after a sorted prefix, across chunk and block boundaries."""
    n = 2 * XCHUNK + 17_000
    x = values((n,), dtype, 11)
    g = rng(12)
    c, b = XCHUNK, getattr(kernel._fastats, "BLOCK", 4096)
    for idx in (np.sort(g.choice(x.size, 500, replace=False)),
                np.array([0, 0, b - 1, b, c - 1, c, c, 2 * c - 1, 2 * c, n - 1, n - 1]),
                np.r_[np.arange(10, 2 * c, 997), [3, 2 * c + 5, 1, c]], g.integers(0, x.size, 300)):
        ex = kernel.Extras(idx=idx.astype(np.int64))
        run([x], [None], [ex])
        assert ex.w_done
        np.testing.assert_array_equal(ex.gathered, f64(x)[idx])


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(64, 3, 7, 7), (300, 1001)])
def test_row_parts_alone_or_together_give_the_same_bits(dtype, shape):
    """Pass A sums the per-unit squares, W v and dW vd in one loop over a row when all three are asked,
    two of them when two are (pass B: W^T u and dW^T ud together): every subset gives the bits the
    parts give alone."""
    import itertools

    x = values(shape, dtype, 11)
    prev = (f64(x) + values(shape, "float64", 12, 1e-2)).astype(x.dtype)
    m = shape[0]
    cols = x.size // m
    g = rng(13)
    v, vd = g.standard_normal(cols), g.standard_normal(cols)
    got = {}
    for units, with_v, with_vd in itertools.product((False, True), repeat=3):
        if not (units or with_v or with_vd):
            continue
        ex = kernel.Extras(rows=m, units=units, v=v if with_v else None, vd=vd if with_vd else None)
        run([x], [prev.copy()], [ex])
        assert ex.w_done and ex.d_done
        got[(units, with_v, with_vd)] = ex
    for key, ex in got.items():
        units, with_v, with_vd = key
        if units:
            assert np.array_equal(ex.unit_norms, got[(True, False, False)].unit_norms), key
        if with_v:
            alone = got[(False, True, False)]
            assert np.array_equal(ex.b, alone.b) and ex.y_norm == alone.y_norm, key
        if with_vd:
            alone = got[(False, False, True)]
            assert np.array_equal(ex.bd, alone.bd) and ex.yd_norm == alone.yd_norm, key
