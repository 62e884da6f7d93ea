"""A numpy snapshot's fixed cost (issue 15): one kernel call for weights, deltas and gradients,
declarations looked up once per tensor set, raw rows finished on the writer thread. The log
must hold what the reference computes, whatever path a snapshot took."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.record import kernel, numpy_path, stats
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

pytestmark = pytest.mark.skipif(not kernel.available() and os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") != "1",
                                reason=str(kernel.UNAVAILABLE))

BINS = 16


def _model(rng, step):
    """float32 and float64 tensors that move a little every step (all on the kernel's fast path)."""
    base = np.random.default_rng(1)
    return {
        "w1": (base.standard_normal((30, 20)) * 0.1 + 1e-3 * step * rng.standard_normal((30, 20))).astype(np.float32),
        "b1": (base.standard_normal(20) * 0.01 + 1e-3 * step).astype(np.float32),
        "w2": base.standard_normal((20, 5)) * 0.2 + 1e-4 * step * rng.standard_normal((20, 5)),
    }


def _check_block(run, name, kind, row, x):
    """Snapshot `row` of `kind` for tensor `name` equals the reference statistics and histogram
    of x (for deltas: x is stats.delta_row's (row, lo, hi, counts))."""
    names = WEIGHT_STATS if kind in ("weights", "grad") else DELTA_STATS
    steps, _v = run.series(name, names[0], kind)
    got = np.array([run.series(name, s, kind)[1][row] for s in names])
    if kind == "delta":
        want, lo, hi, counts = x
    else:
        want = stats.weight_stats(x)
        lo, hi, counts = stats.histogram(x, BINS)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, err_msg=f"{name} {kind} row {row}")
    hsteps, hlo, hhi, hcounts = run.histograms(name, kind)
    at = hsteps.tolist().index(steps[row])  # histograms list the snapshots that have one
    assert hcounts[at].tolist() == counts.tolist(), (name, kind, row)
    assert (hlo[at], hhi[at]) == (lo, hi)


@pytest.mark.parametrize("which", ["all", "some", "none"])
def test_weights_deltas_and_gradients_in_one_kernel_call_equal_the_reference(tmp_path, monkeypatch, which):
    calls = []
    real = kernel.run
    monkeypatch.setattr(kernel, "run", lambda xs, prevs, *a, **k: calls.append(len(xs)) or real(xs, prevs, *a, **k))
    rng = np.random.default_rng(0)
    path = tmp_path / "run.wtui"
    history, grads_seen = [], []
    with Recorder(path, bins=BINS, instruments=False) as rec:
        for step in range(5):
            t = _model(rng, step)
            names = list(t) if which == "all" else ["w1", "w2"] if which == "some" else []
            g = {n: rng.standard_normal(t[n].shape).astype(np.float32) for n in names}
            assert rec.snapshot(step, t, grads=g or None)
            history.append({k: v.copy() for k, v in t.items()})
            grads_seen.append(g)
    per_snapshot = 3 + len(grads_seen[0])
    assert calls == [per_snapshot] * 5  # weights, exact deltas and gradients together, one call each

    run = weighttui.open(path)
    for name in history[0]:
        for row, values in enumerate(history):
            _check_block(run, name, "weights", row, values[name])
            if row:
                prev = history[row - 1][name]
                _check_block(run, name, "delta", row, stats.delta_row(values[name], prev, BINS))
        gsteps, gnorm = run.series(name, "norm", "grad")
        if name in grads_seen[0]:
            for row, g in enumerate(grads_seen):
                _check_block(run, name, "grad", row, g[name])
        else:  # a row without a gradient is not covered
            assert np.isnan(gnorm).all()


def test_a_tensor_that_changes_shape_or_dtype_is_declared_again(tmp_path):
    """The declarations of a tensor set are looked up once, and looked up again when a shape or
    dtype changes (a new id), or when the set of names changes."""
    path = tmp_path / "run.wtui"
    a = np.linspace(-1, 1, 12, dtype=np.float32)
    with Recorder(path, bins=BINS, instruments=False) as rec:
        rec.snapshot(0, {"a": a})
        rec.snapshot(1, {"a": a * 2})
        rec.snapshot(2, {"a": (a * 3).reshape(3, 4)})
        rec.snapshot(3, {"a": (a * 4).astype(np.float64).reshape(3, 4)})
        rec.snapshot(4, {"a": a * 5, "b": a[:5]})
    run = weighttui.open(path)
    assert run.n == 5
    # ids never reused; a new dtype is a new declaration too (it says what the values are)
    assert [(t.shape, t.dtype) for t in run.tensors if t.name == "a"] == [
        ((12,), "float32"), ((3, 4), "float32"), ((3, 4), "float64"), ((12,), "float32")]
    assert [t.shape for t in run.tensors if t.name == "b"] == [(5,)]
    steps, hi = run.series("a", "max")  # across every declaration of "a" (docs/core.md)
    assert steps.tolist() == [0, 1, 2, 3, 4] and hi.tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert run.tensor("a").shape == (12,)  # the latest declaration
    assert [e.kind for e in run.events].count("tensor_reshaped") == 3
    assert run.series("b", "max")[1].tolist() == pytest.approx([float(a[4])])


def test_raw_rows_are_finished_on_the_writer_thread(tmp_path, monkeypatch):
    """The training thread hands the kernel's raw rows to the writer, which finishes them."""
    threads = []
    if kernel.can_finish():  # the C finishing (kernel.finish), weights rows (delta=False)
        real = kernel.finish

        def finish(raw, delta, bins):
            if not delta:
                threads.append(threading.current_thread().name)
            return real(raw, delta, bins)

        monkeypatch.setattr(kernel, "finish", finish)
    else:
        real_rows = numpy_path.weight_rows
        monkeypatch.setattr(numpy_path, "weight_rows",
                            lambda raw: threads.append(threading.current_thread().name) or real_rows(raw))
    rng = np.random.default_rng(2)
    with Recorder(tmp_path / "run.wtui", bins=BINS, instruments=False) as rec:
        for step in range(3):
            t = _model(rng, step)
            rec.snapshot(step, t, grads={k: v * 0.5 for k, v in t.items()})
    assert threads == ["weighttui-writer"] * 3  # weights and gradients finished together, once a snapshot
    run = weighttui.open(tmp_path / "run.wtui")
    assert run.n == 3


def test_nonfinite_values_still_take_the_reference_path_and_are_reported(tmp_path):
    path = tmp_path / "run.wtui"
    a = np.linspace(-1, 1, 50, dtype=np.float32)
    with Recorder(path, bins=BINS, instruments=False) as rec:
        rec.snapshot(0, {"a": a, "b": a + 1})
        bad = a.copy()
        bad[7] = np.nan
        rec.snapshot(1, {"a": bad, "b": a + 2})
    run = weighttui.open(path)
    assert run.series("a", "nan")[1].tolist() == [0, 1]
    assert any(e.kind == "nonfinite" for e in run.events)
    assert run.series("b", "norm", "delta")[1][1] == pytest.approx(np.linalg.norm(np.ones(50)), rel=1e-6)


def test_scalars_given_with_a_snapshot_are_kept_when_the_snapshot_is_not(tmp_path, monkeypatch):
    """scalars= is recorded at every call: with a snapshot refused (its step went back) or one that
    failed, they are written on their own (Keras hands a batch's logs to snapshot() this way)."""
    path = tmp_path / "run.wtui"
    a = np.linspace(-1, 1, 20, dtype=np.float32)
    with Recorder(path, bins=BINS, instruments=False) as rec:
        assert rec.snapshot(5, {"a": a}, scalars={"loss": 1.0})
        assert not rec.snapshot(3, {"a": a}, scalars={"loss": 2.0})  # refused: step 5 is recorded
        monkeypatch.setattr(rec._numpy, "snapshot", lambda *args, **kw: 1 / 0)
        assert not rec.snapshot(7, {"a": a}, scalars={"loss": 3.0})  # failed inside
    run = weighttui.open(path)
    steps, loss = run.scalars("loss")
    assert sorted(zip(steps.tolist(), loss.tolist(), strict=True)) == [(3, 2.0), (5, 1.0), (7, 3.0)]
    assert run.steps.tolist() == [5]
