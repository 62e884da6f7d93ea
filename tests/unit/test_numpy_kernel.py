"""The numpy Recorder's statistics through the fused kernel (record/numpy_path.py, record/kernel.py).

Every snapshot goes through one kernel call for weights and exact deltas;
arrays the kernel hands back (NaN/Inf, integers, bool) or cannot read go
through the numpy reference. Either way the log holds the reference's numbers:
histogram counts equal, statistics within 1e-9 relative (float64 sums in
another order), delta statistics against the previous snapshot's values.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.record import kernel, stats
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

ml_dtypes = pytest.importorskip("ml_dtypes")

pytestmark = pytest.mark.skipif(not kernel.available() and os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") != "1",
                                reason=str(kernel.UNAVAILABLE))

BINS = 32


def _tensors(rng, step):
    """Weights of every kind next to each other; they move by a small update each step."""
    base = rng.standard_normal(3000)
    t = {
        "f32": (base * 0.1).astype(np.float32).reshape(30, 100),
        "f64": base * 1e-3 + 1.0,  # LayerNorm-like: |mean| >> std
        "f16": (base * 0.5).astype(np.float16),
        "bf16": (base * 0.5).astype(ml_dtypes.bfloat16),
        "strided": (base * 0.2).astype(np.float32).reshape(60, 50).T,  # not C-contiguous
        "ints": (base * 10).astype(np.int32),
        "flags": base > 0,
        "scalar": np.float32(0.5 + step),
        "lion": (base * 0.1).astype(np.float32) - np.float32(1e-3) * step * np.sign(base).astype(np.float32),
        "shift": (base * 0.1).astype(np.float32) - np.float32(1e-3) * step,
    }
    if step == 2:  # a NaN at one step: the reference path for that tensor and its deltas
        t["f32"] = t["f32"].copy()
        t["f32"][3, 4] = np.nan
    return t


def _ref(x):
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype.name == "bfloat16" else x


def _check(run, history):
    for name in history[0]:
        _s, lo, hi, counts = run.histograms(name)
        dsteps, dlo, dhi, dcounts = run.histograms(name, "delta")
        assert dsteps.tolist() == list(range(1, len(history)))  # no delta at the first snapshot
        for row, values in enumerate(history):
            x = _ref(values[name])
            want = stats.weight_stats(x)
            got = np.array([run.series(name, s)[1][row] for s in WEIGHT_STATS])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, err_msg=f"{name} step {row}")
            wlo, whi, wcounts = stats.histogram(x, BINS)
            assert counts[row].tolist() == wcounts.tolist(), (name, row)
            np.testing.assert_array_equal([lo[row], hi[row]], [wlo, whi])
            if row == 0:
                continue
            p = _ref(history[row - 1][name])
            want, wlo, whi, wcounts = stats.delta_row(x, p, BINS)
            got = np.array([run.series(name, s, "delta")[1][row] for s in DELTA_STATS])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, err_msg=f"{name} delta step {row}")
            assert dcounts[row - 1].tolist() == wcounts.tolist(), (name, row)
            np.testing.assert_array_equal([dlo[row - 1], dhi[row - 1]], [wlo, whi])


def _record(path, steps=4, grads=False):
    rng = np.random.default_rng(0)
    history = []
    with Recorder(path, bins=BINS) as rec:
        for step in range(steps):
            t = _tensors(np.random.default_rng(0), step)
            g = {k: rng.standard_normal(np.shape(v)).astype(np.float32) for k, v in t.items()} if grads else None
            assert rec.snapshot(step, t, grads=g)
            history.append({k: np.array(v, copy=True) for k, v in t.items()})
    return history


def test_every_dtype_through_the_kernel_equals_the_reference(tmp_path, monkeypatch):
    """float32/float64/float16/bfloat16 (ml_dtypes), strided, integer, bool and scalar
    arrays, a NaN at one step, Lion-like and constant-shift updates: one kernel call
    per snapshot, and the log equals the reference."""
    calls = []
    real = kernel.rows
    monkeypatch.setattr(kernel, "rows", lambda xs, prevs, *a, **k: calls.append(
        ([x.dtype.name for x in xs], [p is not None for p in prevs])) or real(xs, prevs, *a, **k))
    history = _record(tmp_path / "run.wtui")
    assert len(calls) == 4  # weights and deltas together
    dtypes, has_prev = calls[1]
    assert sorted(dtypes) == sorted(["float32", "float64", "float16", "bfloat16", "float32", "float32",
                                     "float32", "float32"])  # ints/bool: the reference
    assert all(has_prev)
    run = weighttui.open(tmp_path / "run.wtui")
    assert run.tensor("bf16").dtype == "bfloat16"
    _check(run, history)


def test_without_the_kernel_the_reference_gives_the_same_log(tmp_path, monkeypatch):
    """As where no C compiler built the extension: same numbers through the reference."""
    monkeypatch.setattr(kernel, "_fastats", None)
    history = _record(tmp_path / "run.wtui")
    _check(weighttui.open(tmp_path / "run.wtui"), history)


def test_gradients_through_the_kernel(tmp_path):
    """Gradient blocks use the kernel too (no deltas)."""
    rng = np.random.default_rng(5)
    g = {"w": rng.standard_normal((40, 40)).astype(np.float32), "b": rng.standard_normal(40)}
    with Recorder(tmp_path / "run.wtui", bins=BINS) as rec:
        rec.snapshot(0, {"w": np.zeros((40, 40), np.float32), "b": np.zeros(40)}, grads=g)
    run = weighttui.open(tmp_path / "run.wtui")
    for name, x in g.items():
        got = np.array([run.series(name, s, "grad")[1][0] for s in WEIGHT_STATS])
        np.testing.assert_allclose(got, stats.weight_stats(x), rtol=1e-9, atol=1e-15)


def test_bfloat16_full_values_are_kept_bit_exact(tmp_path):
    """full=True stores bfloat16 arrays as their bits (FORMAT.md's bf16 values)."""
    x = np.linspace(-2, 2, 300).astype(ml_dtypes.bfloat16)
    with Recorder(tmp_path / "run.wtui") as rec:
        rec.snapshot(0, {"x": x}, full=True)
    got = weighttui.open(tmp_path / "run.wtui").weights(step=0)["x"]
    np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), x.astype(np.float32))
