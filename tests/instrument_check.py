"""The instrument columns of a log (docs/instruments.md) against float64 references computed
from the complete values the same log stores (record with full_every=every): one check
for every path that records instruments (JAX device, Keras TF ops, FSDP2 shards)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import weighttui
from weighttui.data.units import unit_norms
from weighttui.record import instruments as inst


def check_log(path, grads: dict, *, warm_after: int, cos_sample: int = inst.DEFAULT_COS_SAMPLE,
              rtol: float = 1e-5, sigma: bool = True, units_last=inst.never_units_last) -> dict:
    """Check every instrument column of the log at `path`; grads: step -> {name: gradient (float64)}
    of the snapshot steps that had one. Returns counts of what was checked, per instrument.
    sigma=False: a path that cannot record the spectral columns (NaN expected); units_last: which
    tensors keep their units on the last axis (inst.units_last_by_name for Keras and Flax)."""
    run = weighttui.open(path)
    steps_all = run.steps.tolist()
    full = {s: {k: v.astype(np.float64) for k, v in run.weights(step=s).items()} for s in run.full_steps}
    assert sorted(full) == steps_all, "record with full values at every snapshot"
    first = steps_all[0]
    n: dict[str, int] = {}

    def seen(what):
        n[what] = n.get(what, 0) + 1

    for name in run.tensor_names:
        steps, sig = run.series(name, "sigma_max")
        steps = steps.tolist()
        _, srank = run.series(name, "stable_rank")
        _, norm = run.series(name, "norm")
        _, dist = run.series(name, "dist_init")
        _, cos_prev = run.series(name, "cos_prev", kind="delta")
        _, cos_grad = run.series(name, "cos_grad", kind="delta")
        _, sratio = run.series(name, "sigma_ratio", kind="delta")
        _, wunits = unit_norms(path, name, "weights")
        _, gunits = unit_norms(path, name, "grad")
        _, exploding = run.series(name, "exploding_units")
        for i, s in enumerate(steps):
            w = full[s][name]
            if not np.all(np.isfinite(w)):  # NaN weights: NaN columns (the nan_origin event says where)
                assert np.isnan(dist[i]) and np.isnan(sig[i])
                continue
            assert dist[i] == pytest.approx(inst.dist_init_ref(w, full[first][name]), rel=rtol, abs=1e-7), (name, s)
            seen("dist_init")
            if w.ndim >= 2 and not sigma:
                assert np.isnan(sig[i]) and np.isnan(srank[i]) and np.isnan(sratio[i])
            if w.ndim >= 2:
                ref = inst.sigma_max_ref(w) if sigma else math.nan
                if sigma:
                    assert sig[i] <= ref * (1 + 1e-5), (name, s)  # a Ritz value: from below
                    if s == first or s >= warm_after:
                        assert sig[i] == pytest.approx(ref, rel=1e-3), (name, s)
                        seen("sigma_max")
                    assert srank[i] == pytest.approx(norm[i] ** 2 / sig[i] ** 2, rel=1e-6)
                u = inst.unit_norms_ref(w, units_last(name))
                np.testing.assert_allclose(wunits[i], u, rtol=1 / 128)  # bfloat16: 8 significant bits
                ref_hot = int(np.sum(u > inst.EXPLODING_FACTOR * np.median(u)))
                assert exploding[i] == ref_hot
                seen("units")
                if s in grads and name in grads[s]:
                    g_ref = inst.unit_norms_ref(grads[s][name], units_last(name))
                    np.testing.assert_allclose(gunits[i], g_ref, rtol=1 / 128)
                    seen("grad_units")
            else:
                assert math.isnan(sig[i])
            k = steps_all.index(s)
            if sigma and k >= 1 and w.ndim >= 2 and s >= warm_after:  # a ratio to sigma_max: once that is warm
                d = w - full[steps_all[k - 1]][name]
                if np.any(d):
                    ratio_ref = inst.sigma_max_ref(d) / inst.sigma_max_ref(w)
                    assert sratio[i] == pytest.approx(ratio_ref, rel=5e-2), (name, s)
                    seen("sigma_ratio")
            if k >= 2:
                d = (w - full[steps_all[k - 1]][name]).reshape(-1)
                dp = (full[steps_all[k - 1]][name] - full[steps_all[k - 2]][name]).reshape(-1)
                idx = inst.sample_index(name, d.size, cos_sample)
                at = slice(None) if idx is None else idx
                assert cos_prev[i] == pytest.approx(inst.cosine(d[at], dp[at]), abs=1e-6), (name, s)
                seen("cos_prev")
                if s in grads and name in grads[s]:
                    g = grads[s][name].reshape(-1)
                    assert cos_grad[i] == pytest.approx(inst.cosine(d[at], g[at]), abs=1e-6), (name, s)
                    seen("cos_grad")
    return n


def check_optim(path, state: dict, *, lr: float, beta2: float, eps: float, rtol: float = 1e-5,
                at: int = -1) -> int:
    """The optim block of the log's snapshot `at` (index; the last) against the state then:
    name -> (m, v, step)."""
    run = weighttui.open(path)
    for name, (m, v, step) in state.items():
        _, mn = run.series(name, "m_norm", kind="optim")
        _, vn = run.series(name, "v_norm", kind="optim")
        _, eff = run.series(name, "eff_lr", kind="optim")
        _, bad = run.series(name, "nonfinite", kind="optim")
        v_ref = float(np.linalg.norm(np.asarray(v, dtype=np.float64)))
        assert mn[at] == pytest.approx(float(np.linalg.norm(np.asarray(m, dtype=np.float64))), rel=rtol), name
        assert vn[at] == pytest.approx(v_ref, rel=rtol), name
        assert eff[at] == pytest.approx(inst.adam_eff_lr(lr, v_ref, np.size(v), step, beta2, eps), rel=rtol), name
        assert bad[at] == 0
    return len(state)
