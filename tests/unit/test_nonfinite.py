"""NaN and Inf shown as such (18.6), rules quiet after a tensor goes non-finite (18.7), non-finite
scalars (18.8) and a jump of orders of magnitude within two snapshots (18.9)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.analysis.diagnose import RULES, DiagnoseConfig, diagnose
from weighttui.analysis.multirun import summarize

NAN_FROM = 4  # snapshot index from which "w" is all NaN


def _diverging(path, *, steps=12, scalars=True, grads=True):
    """`w` all NaN from snapshot NAN_FROM on (gradients too); `ok` keeps learning."""
    rng = np.random.default_rng(1)
    w, ok = rng.normal(size=(8, 8)), rng.normal(size=(6, 6))
    with Recorder(path, every=1, bins=8) as rec:
        for s in range(steps):
            nan = s >= NAN_FROM
            w_now = np.full_like(w, np.nan) if nan else w
            g = {"w": np.full_like(w, np.nan) if nan else rng.normal(size=w.shape) * 1e-2,
                 "ok": rng.normal(size=ok.shape) * 1e-2} if grads else None
            rec.snapshot(s, {"w": w_now, "ok": ok.copy()}, grads=g,
                         scalars={"loss": float("nan") if nan else 1.0 / (s + 1)} if scalars else None)
            w = w + rng.normal(size=w.shape) * 1e-3 * np.linalg.norm(w)
            ok += rng.normal(size=ok.shape) * 1e-3 * np.linalg.norm(ok)
    return weighttui.open(path)


# ------------------------------------------------------- NaN as such


def test_all_nan_tensor_has_nan_norm_not_zero(tmp_path):
    run = _diverging(tmp_path / "d.wtui")
    _steps, norm = run.series("w", "norm")
    assert np.isfinite(norm[:NAN_FROM]).all() and np.isnan(norm[NAN_FROM:]).all()
    _steps, gnorm = run.series("w", "norm", "grad")
    assert np.isnan(gnorm[NAN_FROM:]).all()
    # updates from or to a NaN tensor: no element finite in both, so no ratio (not "0: slow")
    for stat in ("norm", "ratio", "changed_frac"):
        values = run.series("w", stat, "delta")[1]
        assert np.isnan(values[NAN_FROM:]).all(), stat
        assert np.isfinite(values[1:NAN_FROM]).all(), stat
    assert np.isfinite(run.series("ok", "norm")[1]).all()


@pytest.mark.parametrize("cache", [True, False])
def test_all_nan_optimizer_state_has_nan_norms_not_zero(tmp_path, cache):
    """Adam moments gone all NaN: their norms over nothing finite (0) and the step size from them (lr / eps)
    read NaN, as a weight's norm does; an SGD momentum buffer's step size stays its learning rate."""
    path = tmp_path / "o.wtui"
    with Recorder(path) as rec:
        for s in range(3):
            gone = np.full(6, np.nan) if s == 2 else np.ones(6)
            rec.snapshot(s, {"adam": np.ones(6) * s, "sgd": np.ones(6) * s},
                         optim={"adam": {"m": gone, "v": gone, "lr": 0.1, "step": s + 1, "beta2": 0.999, "eps": 1e-8},
                                "sgd": {"m": gone, "lr": 0.1}})
    run = weighttui.open(path, cache=cache)
    for stat in ("m_norm", "v_norm", "eff_lr"):
        values = run.series("adam", stat, kind="optim")[1]
        assert np.isfinite(values[:2]).all() and np.isnan(values[2]), stat
    assert run.series("adam", "nonfinite", kind="optim")[1].tolist() == [0, 0, 12]
    assert np.isnan(run.series("sgd", "m_norm", kind="optim")[1][2])
    assert run.series("sgd", "eff_lr", kind="optim")[1].tolist() == [0.1, 0.1, 0.1]
    # `info` shows the state's NaN/Inf count where some tensor has any (not a column of zeros otherwise)
    import io

    from weighttui.cli.info import print_info

    out = io.StringIO()
    print_info(run, [], out)
    block = out.getvalue().split("instruments (latest)")[1]
    line = next(x for x in block.splitlines() if x.strip().startswith("adam "))
    assert "state NaN" in block and line.split()[-1] == "12"


def test_zero_size_tensor_keeps_its_zero_norm(tmp_path):
    path = tmp_path / "z.wtui"
    with Recorder(path, every=1) as rec:
        for s in range(3):
            rec.snapshot(s, {"empty": np.zeros((0, 4), np.float32), "x": np.ones(3, np.float32) * s})
    run = weighttui.open(path)
    assert run.series("empty", "norm")[1].tolist() == [0.0, 0.0, 0.0]
    assert run.series("empty", "norm", "delta")[1][1:].tolist() == [0.0, 0.0]


def test_torch_all_nan_parameter_has_nan_norm(tmp_path):
    torch = pytest.importorskip("torch")
    import weighttui.torch

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "t.wtui"
    handle = weighttui.torch.watch(model, path, optimizer=opt, every=1)
    for step in range(4):
        opt.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        if step == 2:
            with torch.no_grad():
                model.weight.fill_(float("nan"))
        opt.step()
    handle.close()
    run = weighttui.open(path)
    norm = run.series("weight", "norm")[1]
    assert np.isnan(norm[-1]) and np.isfinite(norm[0]), norm


def test_info_shows_nan_not_the_last_finite_value(tmp_path):
    path = tmp_path / "d.wtui"
    _diverging(path)
    out = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", str(path)], capture_output=True,
                         text=True, timeout=120).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("w "))
    assert line.split()[2:4] == ["nan", "nan"], line  # norm, std
    assert "64 non-finite" in line
    assert "loss=nan" in out
    doc = json.loads(subprocess.run([sys.executable, "-m", "weighttui.cli", "info", str(path), "--json"],
                                    capture_output=True, text=True, timeout=120).stdout)
    w = next(t for t in doc["tensor_list"] if t["name"] == "w")
    assert w["norm"] is None and w["nan"] == 64 and w["grad_norm"] is None
    assert doc["scalars"]["loss"] is None


def test_csv_export_writes_nan_of_a_covered_row(tmp_path):
    path = tmp_path / "d.wtui"
    _diverging(path)
    out = tmp_path / "s.csv"
    subprocess.run([sys.executable, "-m", "weighttui.cli", "export", str(path), "--format", "csv",
                    "--out", str(out)], check=True, timeout=120)
    rows = [r for r in csv.DictReader(open(out)) if r["tensor"] == "w" and r["kind"] == "weights"
            and r["stat"] == "norm"]
    assert len(rows) == 12 and [r["value"] for r in rows[NAN_FROM:]] == ["nan"] * 8


def test_run_list_marks_a_diverged_run(tmp_path):
    run = _diverging(tmp_path / "d.wtui")
    row = summarize("d", run, run.status)
    assert row.status == "diverged" and row.diverged and np.isnan(row.loss)
    healthy = _diverging(tmp_path / "h.wtui", steps=NAN_FROM)
    row = summarize("h", healthy, healthy.status)
    assert row.status == "finished" and not row.diverged
    # weights alone (no loss logged) are enough
    quiet = _diverging(tmp_path / "q.wtui", scalars=False)
    assert summarize("q", quiet, "live").status == "diverged"


# ------------------------------------------------------------ alerts


def test_rules_stay_quiet_for_a_nan_tensor_and_the_alert_says_so(tmp_path):
    run = _diverging(tmp_path / "d.wtui", steps=40)
    alerts = diagnose(run)
    about_w = [a for a in alerts if a.tensor == "w" and a.rule != "nan_origin"]  # (where it began: kept)
    assert sorted(a.rule for a in about_w) == ["nonfinite", "nonfinite_grad"], about_w
    nf = next(a for a in about_w if a.rule == "nonfinite")
    assert nf.step == NAN_FROM and "held back" in nf.message
    assert not [a for a in alerts if a.tensor == "ok"]


def test_nonfinite_scalar_names_the_scalar_and_its_first_step(tmp_path):
    path = tmp_path / "loss.wtui"
    with Recorder(path, every=1) as rec:
        for s in range(10):
            rec.snapshot(s, {"x": np.ones(4) * (1 + 1e-3 * s)},
                         scalars={"loss": float("inf") if s >= 6 else 1.0, "lr": 0.1})
    run = weighttui.open(path)
    got = [a for a in diagnose(run) if a.rule == "nonfinite_scalar"]
    assert len(got) == 1
    a = got[0]
    assert (a.tensor, a.step, a.severity) == (None, 6, "error") and "'loss'" in a.message and "inf" in a.message
    assert not [a for a in diagnose(run, upto_row=5) if a.rule == "nonfinite_scalar"]
    assert not [a for a in diagnose(run, DiagnoseConfig(disable="nonfinite_scalar"))
                if a.rule == "nonfinite_scalar"]
    assert "nonfinite_scalar" in RULES


def test_orders_of_magnitude_within_two_snapshots_dated_where_it_showed(tmp_path):
    """The issue's run: weight norm 4.7 -> 89.6 -> 5.0e6 over two snapshots."""
    path = tmp_path / "jump.wtui"
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 10))
    base *= 4.7 / np.linalg.norm(base)
    norms = [4.7, 4.7, 4.7, 89.6, 5.0e6, 5.0e6]
    with Recorder(path, every=5) as rec:
        for i, n in enumerate(norms):
            rec.snapshot(5 * i, {"w": base * (n / 4.7), "b": np.ones(3) * (1 + i * 1e-3)})
    run = weighttui.open(path)
    jumps = [a for a in diagnose(run) if a.rule == "norm_jump"]
    assert [(a.tensor, a.step, a.severity) for a in jumps] == [("w", 15, "error")]
    assert "4.7 at step 10" in jumps[0].message and "5e+06 at step 20" in jumps[0].message
    assert not [a for a in diagnose(run, upto_row=3) if a.rule == "norm_jump"]  # 19x in one: not yet


def test_a_steady_tenfold_growth_is_not_a_jump(tmp_path):
    path = tmp_path / "grow.wtui"
    with Recorder(path, every=1) as rec:
        for s in range(12):
            rec.snapshot(s, {"w": np.ones((4, 4)) * 1.5 ** s})  # 2.25x per two snapshots
    assert not [a for a in diagnose(weighttui.open(path)) if a.rule == "norm_jump"]


def _frozen_after(path, *, nan_weight: bool, steps=30, bad_from=10, bad_to=None, frozen_from=None):
    """`w` learns, then from `bad_from` its update statistics stop: a NaN element (the rest unchanged)
    or Inf gradients (a loss scaler skipping steps) until `bad_to`; frozen_from: no updates from then
    on, with finite gradients (a truly stagnant tensor)."""
    rng = np.random.default_rng(2)
    w, other = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    with Recorder(path, every=1, bins=8) as rec:
        for s in range(steps):
            bad = bad_from <= s < (bad_to or steps)
            shown = w.copy()
            if nan_weight and s >= bad_from:
                shown[0, 0] = np.nan
            g = rng.normal(size=w.shape) * 1e-2
            if bad and not nan_weight:
                g[0, 0] = np.inf
            rec.snapshot(s, {"w": shown, "other": other.copy()},
                         grads={"w": g, "other": rng.normal(size=w.shape) * 1e-2})
            if not bad and (frozen_from is None or s < frozen_from):
                w = w + rng.normal(size=w.shape) * 1e-3 * np.linalg.norm(w)
            other = other + rng.normal(size=w.shape) * 1e-3 * np.linalg.norm(other)
    return weighttui.open(path)


def test_a_nan_element_does_not_make_the_tensor_stagnant(tmp_path):
    run = _frozen_after(tmp_path / "n.wtui", nan_weight=True)
    about_w = sorted(a.rule for a in diagnose(run) if a.tensor == "w" and a.rule != "nan_origin")
    assert about_w == ["nonfinite"], about_w


def test_skipped_steps_with_inf_gradients_are_not_stagnant_and_rules_come_back(tmp_path):
    run = _frozen_after(tmp_path / "g.wtui", nan_weight=False)
    about_w = sorted(a.rule for a in diagnose(run) if a.tensor == "w" and a.rule != "nan_origin")
    assert about_w == ["nonfinite_grad"], about_w
    # a few skipped steps, then finite gradients and a tensor that really stopped: stagnant is said
    run = _frozen_after(tmp_path / "g2.wtui", nan_weight=False, steps=40, bad_from=10, bad_to=12,
                        frozen_from=25)
    assert sorted(a.rule for a in diagnose(run) if a.tensor == "w" and a.rule != "nan_origin") == [
        "nonfinite_grad", "stagnant"]


def test_run_list_tells_no_loss_from_a_nan_loss(tmp_path):
    quiet = _diverging(tmp_path / "q.wtui", scalars=False)
    assert summarize("q", quiet, "finished").loss is None  # shown as "-", not "nan"
