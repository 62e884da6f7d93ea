"""Alert rules on the instrument columns (docs/alerts.md: oscillation, ascent, nan_origin), on real runs."""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui.analysis.diagnose import DiagnoseConfig, diagnose
from weighttui.record.recorder import Recorder


def _quadratic(path, lr, steps=30, *, sign=1.0, nan_at=None):
    """Gradient descent on f(w) = 0.5 * sum(a * w^2) (a real optimisation): lr * a > 2 oscillates."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.9, 1.1, (8, 8))
    w = rng.standard_normal((8, 8))
    with Recorder(path, instruments=True) as rec:
        for step in range(steps + 1):
            g = a * w
            if nan_at == step:
                g[1, 2] = np.nan
            rec.snapshot(step, {"w": w.astype(np.float32)}, grads={"w": g.astype(np.float32)})
            w = w - sign * lr * g
    return weighttui.open(path)


def test_oscillating_updates_alert_and_converging_ones_do_not(tmp_path):
    run = _quadratic(tmp_path / "osc.wtui", lr=1.95)  # w flips sign each step, shrinking slowly
    _, cos_prev = run.series("w", "cos_prev", kind="delta")
    assert np.nanmax(cos_prev) < -0.99
    alerts = [a for a in diagnose(run) if a.rule == "oscillation"]
    assert len(alerts) == 1 and alerts[0].tensor == "w" and alerts[0].step == 2  # the first cos_prev
    assert "cos_prev at or below -0.5" in alerts[0].message
    calm = _quadratic(tmp_path / "calm.wtui", lr=0.3)
    assert not [a for a in diagnose(calm) if a.rule in ("oscillation", "ascent")]
    # thresholds and disabling
    assert not [a for a in diagnose(run, DiagnoseConfig(osc_window=40)) if a.rule == "oscillation"]
    assert not [a for a in diagnose(run, DiagnoseConfig(disable="oscillation")) if a.rule == "oscillation"]


def test_updates_along_the_gradient_alert(tmp_path):
    run = _quadratic(tmp_path / "up.wtui", lr=0.01, sign=-1.0)  # gradient ascent
    _, cos_grad = run.series("w", "cos_grad", kind="delta")
    assert np.allclose(cos_grad[1:], 1.0, atol=1e-5)
    (alert,) = [a for a in diagnose(run) if a.rule == "ascent"]
    assert alert.tensor == "w" and alert.step == 1


def test_nan_origin_is_an_alert_that_outlives_the_nonfinite_silence(tmp_path):
    run = _quadratic(tmp_path / "nan.wtui", lr=0.3, steps=10, nan_at=6)
    alerts = diagnose(run)
    (origin,) = [a for a in alerts if a.rule == "nan_origin"]
    assert origin.severity == "error" and origin.tensor == "w" and origin.step == 6
    assert "gradient of w at flat index 10" in origin.message
    # rows before the NaN: no alert yet
    assert not [a for a in diagnose(run, upto_row=5) if a.rule == "nan_origin"]


def test_nan_origin_in_the_weights_goes_into_their_nonfinite_alert(tmp_path):
    path = tmp_path / "w.wtui"
    w = np.ones((3, 4), dtype=np.float32)
    with Recorder(path, instruments=True) as rec:
        rec.snapshot(0, {"w": w, "b": w})
        w = w.copy()
        w[2, 3] = np.inf
        rec.snapshot(1, {"w": w, "b": np.ones((3, 4), dtype=np.float32)})
    run = weighttui.open(path)
    (ev,) = [e for e in run.events if e.kind == "nan_origin"]
    assert (ev.where, ev.index) == ("weights", 11)
    alerts = diagnose(run)
    assert not [a for a in alerts if a.rule == "nan_origin"]
    (nf,) = [a for a in alerts if a.rule == "nonfinite"]
    assert nf.tensor == "w" and nf.message.endswith("the first non-finite value of the run at flat index 11")


def test_dead_and_exploding_units_are_alerts_naming_which(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "units.wtui"
    w = rng.standard_normal((12, 5)).astype(np.float32)
    w[9] *= 40
    with Recorder(path, instruments=True) as rec:
        for step in range(8):
            g = rng.standard_normal((12, 5)).astype(np.float32)
            if step >= 3:
                g[[1, 6, 11]] = 0.0
            rec.snapshot(step, {"w": w}, grads={"w": g})
    alerts = {a.rule: a for a in diagnose(weighttui.open(path))}
    dead = alerts["units_dead"]
    assert dead.tensor == "w" and dead.step == 5  # zero at steps 3, 4, 5
    assert "3 of 12 units dead" in dead.message and "1, 6, 11" in dead.message
    hot = alerts["units_exploding"]
    assert hot.step == 0 and "1 of 12 units exploding" in hot.message and ": 9 (since step 0)" in hot.message


def test_alpha_band(tmp_path):
    rng = np.random.default_rng(4)
    n = 200
    x = (1 - rng.random(n)) ** (-1 / (1.6 - 1))  # alpha 1.6: very heavy-tailed
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    heavy = ((u * np.sqrt(x)) @ v.T).astype(np.float32)
    bulk = rng.standard_normal((n, n)).astype(np.float32)  # random: alpha far above 6
    path = tmp_path / "a.wtui"
    with Recorder(path, instruments={"alpha_every": 1}) as rec:
        for step in range(6):
            rec.snapshot(step, {"heavy": heavy, "bulk": bulk})
    run = weighttui.open(path)
    alerts = {a.tensor: a for a in diagnose(run) if a.rule == "alpha_band"}
    # dated where it began: every fit of this run was below 2
    assert "below 2" in alerts["heavy"].message and alerts["heavy"].step == 0
    assert "above 6 in the last 5 fits" in alerts["bulk"].message and alerts["bulk"].step == 1
    assert not [a for a in diagnose(run, upto_row=3) if a.rule == "alpha_band" and a.tensor == "bulk"]


def test_alpha_band_leaves_small_matrices_out(tmp_path):
    """A freshly initialised 16 x 16 Linear fits alpha below 2 (too few eigenvalues for a power law):
    its fit is recorded, but it raises no alert; a 64 x 64 one would."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    small = torch.nn.Linear(16, 16).weight.detach().numpy()
    path = tmp_path / "small.wtui"
    with Recorder(path, instruments={"alpha_every": 1}) as rec:
        for step in range(3):
            rec.snapshot(step, {"small": small})
    run = weighttui.open(path)
    steps, alpha = run.series("small", "alpha")
    assert np.all(alpha < 2)  # what would have raised the alert
    assert not [a for a in diagnose(run) if a.rule == "alpha_band"]
    assert [a for a in diagnose(run, DiagnoseConfig(alpha_min_evals=16)) if a.rule == "alpha_band"]


def test_weight_decay_outweighing_the_gradient_is_not_ascent(tmp_path):
    """Near convergence AdamW's decoupled decay outweighs the loss gradient: the update points along the
    gradient (cos_grad > 0) but shrinks the weights (cos(update, W) < 0): no ascent alert. Real gradient
    ascent, which grows them, still gets one (test above)."""
    rng = np.random.default_rng(2)
    target = rng.standard_normal((8, 8))
    w = target * 0.98  # the loss 0.5 |w - target|^2 pulls w out, the decay pulls it in
    path = tmp_path / "decay.wtui"
    with Recorder(path, instruments=True) as rec:
        for step in range(30):
            g = w - target
            rec.snapshot(step, {"w": w.astype(np.float32)}, grads={"w": g.astype(np.float32)})
            w = w - 1e-3 * (0.01 * g + 1.0 * w)  # decay dominates, the gradient term is small
    run = weighttui.open(path)
    _, cos_grad = run.series("w", "cos_grad", kind="delta")
    assert np.all(cos_grad[1:] > 0.1)  # along the gradient, as the rule's bound reads it
    assert not [a for a in diagnose(run) if a.rule == "ascent"]
    assert [a for a in diagnose(run, DiagnoseConfig(ascent_decay_cos=-1.5)) if a.rule == "ascent"]  # gate off
