"""`info`'s latest values read from the last rows only (series.latest_of) and the diagnosis's NaN median
(diagnose.nanmedian) give exactly what the whole-matrix rules give."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.analysis.diagnose import median, nanmedian, per_step_ratio
from weighttui.analysis.series import covered, latest, latest_of


def _write(path, steps: int) -> None:
    """A run whose tensors are not all covered at its end: one gone early, one declared late, one frozen
    (no delta), NaN in a stretch, a delta-less snapshot now and then."""
    rng = np.random.default_rng(3)
    w = {"a.weight": rng.normal(size=(6, 4)), "a.bias": rng.normal(size=6), "b.weight": rng.normal(size=(4, 6))}
    with Recorder(path, bins=8, sample=4, queue_size=100000) as rec:
        rec.declare("f.weight", (3, 3), "float64", trainable=False)
        for s in range(steps):
            for v in w.values():
                v += rng.normal(size=v.shape) * 1e-2
            params = {n: v.copy() for n, v in w.items()}
            params["f.weight"] = np.ones((3, 3))
            if s < steps // 5:
                params["gone.weight"] = rng.normal(size=(2, 2))
            if s >= steps - 3:
                params["late.weight"] = rng.normal(size=(2, 2))
            if steps // 2 <= s < steps // 2 + 4:
                params["b.weight"][0, 0] = np.nan
            if s == steps - 1:
                params["a.weight"][:] = np.inf
            rec.snapshot(s * 3 + (s % 2), params, grads={n: rng.normal(size=v.shape) for n, v in params.items()})


def _whole(run, kind: str, stat: str, sparse: bool = False) -> list:
    """The rule as info applied it before: covered over the whole row view, the stat's matrix, latest."""
    cover = covered(run, kind)
    matrix = per_step_ratio(run) if stat == "ratio/step" else run.stat_matrix(kind, stat)
    if sparse:
        cover = cover & ~np.isnan(matrix)
    return latest(matrix, cover)


@pytest.mark.parametrize("max_rows", [None, 4096, 40, 7])
def test_latest_of_is_the_whole_matrix_rule(tmp_path, max_rows):
    path = tmp_path / "run.wtui"
    _write(path, 300)
    run = weighttui.open(path, max_rows=max_rows)
    assert run.n < 300 or max_rows is None or max_rows >= 300
    for kind, stats in (("weights", ["norm", "std", "nan", "inf", "mean"]), ("delta", ["ratio", "ratio/step"]),
                        ("grad", ["norm"])):
        for window in (1, 2, 64):
            got = latest_of(run, kind, stats, sparse={"mean"}, window=window)
            for stat in stats:
                want = _whole(run, kind, stat, sparse=stat == "mean")
                assert [None if v is None else np.float64(v).tobytes() for v in got[stat]] == \
                       [None if v is None else np.float64(v).tobytes() for v in want], (kind, stat, window)
    # the tensor gone early still has its latest values (read back past the last window), the late one too
    names = run.tensor_names
    got = latest_of(run, "weights", ["norm"])["norm"]
    assert got[run.column("gone.weight")] is not None and got[run.column("late.weight")] is not None
    assert len(got) == len(names)


def test_latest_of_without_rows_or_kind(tmp_path):
    path = tmp_path / "run.wtui"
    _write(path, 5)
    run = weighttui.open(path)
    assert latest_of(run, "optim", ["m_norm"]) == {"m_norm": [None] * len(run.tensors)}
    assert latest_of(run, "weights", []) == {}


def test_nanmedian_is_numpys_bit_for_bit():
    """numpy takes a short axis through masked arrays; the same median without them, signed zeros,
    infinities, overflow and all-NaN slices included."""
    rng = np.random.default_rng(0)
    for trial in range(3000):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        x = rng.normal(size=shape) * 10.0 ** rng.integers(-5, 5)
        for v, p in ((np.nan, rng.random()), (np.inf, 0.05), (-np.inf, 0.05), (1.7e308, 0.05), (0.0, 0.2),
                     (-0.0, 0.2), (1.0, 0.2)):
            x[rng.random(shape) < p * rng.random()] = v
        if trial % 7 == 0:
            x[:, 0] = np.nan
        if trial % 5 == 0:
            x = x[:, ::2]
        if trial % 3 == 0 and x.shape[1]:
            x = np.lib.stride_tricks.sliding_window_view(x[:, 0], min(3, x.shape[0]))
        for axis in (0, 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = np.nanmedian(x, axis=axis)
            got = nanmedian(x, axis=axis)
            assert got.shape == want.shape and got.dtype == want.dtype
            assert np.array_equal(np.isnan(got), np.isnan(want))
            assert np.where(np.isnan(got), 0, got).tobytes() == np.where(np.isnan(want), 0, want).tobytes(), (x, axis)


def test_median_is_numpys_bit_for_bit():
    """np.median's NaN check imports numpy.ma; the same median of values without NaN, without it."""
    rng = np.random.default_rng(2)
    for trial in range(3000):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        x = rng.normal(size=shape) * 10.0 ** rng.integers(-5, 5)
        for v, p in ((np.inf, 0.05), (-np.inf, 0.05), (1.7e308, 0.1), (0.0, 0.3), (-0.0, 0.3), (1.0, 0.2)):
            x[rng.random(shape) < p * rng.random()] = v
        if trial % 3 == 0 and x.shape[1]:
            x = np.lib.stride_tricks.sliding_window_view(x[:, 0], min(3, x.shape[0]))
        for axis in (0, 1, None):
            with np.errstate(all="ignore"):
                want = np.median(x, axis=axis)
            got = median(x, axis=axis)
            assert type(got) is type(want) and np.shape(got) == np.shape(want)
            assert np.where(np.isnan(got), 0, got).tobytes() == np.where(np.isnan(want), 0, want).tobytes(), (x, axis)


def test_jump_rules_leave_out_only_columns_that_cannot_jump(tmp_path, monkeypatch):
    """The jump rules (norm_growth, norm_jump, dead_units, grad_explode) skip the columns of a block whose
    largest value is not far enough above its smallest (diagnose._may_jump): the alerts are those of the
    rules applied to every column."""
    import weighttui.analysis.diagnose as diagnose_mod

    rng = np.random.default_rng(11)
    seen, left_out = set(), []
    real = diagnose_mod._may_jump

    def counted(*a, **k):
        may = real(*a, **k)
        left_out.append(may is not None and not may.all())
        return may

    monkeypatch.setattr(diagnose_mod, "_may_jump", counted)
    for trial in range(10):
        path = tmp_path / f"r{trial}.wtui"
        w = {n: rng.normal(0, 0.5, s) for n, s in (("a.weight", (8, 4)), ("b.weight", (4, 8)), ("c.bias", (8,)))}
        steps = int(rng.integers(60, 300))
        events = {n: (int(rng.integers(0, steps)), float(10.0 ** rng.uniform(0.2, 3)), int(rng.integers(1, 6)))
                  for i, n in enumerate(w) if i == trial % 3 or rng.random() < 0.3}  # (the others cannot jump)
        with Recorder(path, bins=8, sample=2, queue_size=100000, instruments=False) as rec:
            for s in range(steps):
                for v in w.values():
                    v += rng.normal(size=v.shape) * 1e-2
                params = {n: v.copy() for n, v in w.items()}
                for n, (at, factor, length) in events.items():
                    if at <= s < at + length:
                        params[n] *= factor
                        params[n][:2] = 0
                grads = {n: rng.normal(0, 1e-2, v.shape) * (1e4 if n in events and s >= events[n][0] else 1)
                         for n, v in params.items()}
                rec.snapshot(s, params, grads=grads)
        for config in (diagnose_mod.DiagnoseConfig(), diagnose_mod.DiagnoseConfig(norm_growth=2.0, norm_jump=3.0)):
            fast = diagnose_mod.diagnose(weighttui.open(path), config)
            with monkeypatch.context() as m:
                m.setattr(diagnose_mod, "_may_jump", lambda *a, **k: None)
                every = diagnose_mod.diagnose(weighttui.open(path), config)
            assert fast == every
            seen |= {a.rule for a in fast}
    assert {"norm_jump", "dead_units", "grad_explode"} <= seen and any(left_out)
