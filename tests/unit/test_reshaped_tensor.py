"""A tensor that changes shape mid-run (a layer resized, a model rebuilt under the same names):
the log says so in an event, and its statistics and histograms read on across both declarations."""

import subprocess
import sys

import numpy as np

import weighttui
from weighttui.record.recorder import Recorder
from weighttui.record.registry import Registry


def _record(path, steps=6, grow_at=3):
    rng = np.random.default_rng(0)
    arrays = []
    with Recorder(path) as rec:
        for step in range(steps):
            w = rng.standard_normal((4, 3 if step < grow_at else 5)).astype(np.float32)
            arrays.append(w)
            rec.snapshot(step, {"w": w, "b": np.ones(3, np.float32)})
    return arrays


def test_reshaped_tensor_is_an_event_and_reads_on(tmp_path):
    path = tmp_path / "run.wtui"
    arrays = _record(path)
    run = weighttui.open(path, cache=False)
    events = [e for e in run.events if e.kind == "tensor_reshaped"]
    assert len(events) == 1 and events[0].level == "warning"
    assert "w changed shape from 4x3 to 4x5" in events[0].message
    steps, norms = run.series("w", "norm")
    assert steps.tolist() == list(range(6))
    want = [np.linalg.norm(a.astype(np.float64)) for a in arrays]
    np.testing.assert_allclose(norms, want, rtol=1e-6)
    hsteps, lo, hi, counts = run.histograms("w")
    assert hsteps.tolist() == list(range(6))
    assert counts.sum(axis=1).tolist() == [a.size for a in arrays]
    np.testing.assert_allclose(lo, [a.min() for a in arrays], rtol=1e-6)
    # the same with an index (built now, then read again)
    for _ in range(2):
        again = weighttui.open(path)
        np.testing.assert_array_equal(again.series("w", "norm")[1], norms)
        assert again.histograms("w")[0].tolist() == list(range(6))


def test_info_names_the_reshape(tmp_path):
    path = tmp_path / "run.wtui"
    _record(path)
    r = subprocess.run([sys.executable, "-m", "weighttui", "info", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "tensor_reshaped" in ln)
    assert "step None" not in line and "4x3 to 4x5" in line


def test_registry_calls_on_reshape_only_for_another_shape():
    seen = []
    reg = Registry(4, on_reshape=lambda old, new: seen.append((old.shape, new.shape, new.id)))
    a = reg.declare("w", (2, 2), "float32")
    assert reg.declare("w", (2, 2), "float32") is a and seen == []
    reg.declare("w", (3,), "float32")
    assert seen == [((2, 2), (3,), 1)]


def test_import_refused_by_a_busy_log_says_the_import_stops(tmp_path):
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(ck / "step_1.safetensors"))
    out = tmp_path / "run.wtui"
    with Recorder(out) as rec:  # holds the log's writer lock
        rec.snapshot(0, {"w": np.ones(3, np.float32)})
        r = subprocess.run([sys.executable, "-m", "weighttui", "import", str(ck), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "training continues" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
