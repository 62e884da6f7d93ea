"""`weighttui export --format tensorboard`: read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import weighttui
from weighttui.integrations.tensorboard import histogram_proto, write_tensorboard
from weighttui.log.schema import export_name
from weighttui.record.recorder import Recorder


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A small numpy SGD run: weights, grads, exact deltas, scalars; one frozen constant tensor."""
    path = tmp_path_factory.mktemp("tb") / "run.wtui"
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 5))
    y = x @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(64, 1))
    w = {"lin.weight": rng.normal(size=(5, 1)), "lin.bias": np.zeros(1), "frozen.scale": np.full(3, 2.0)}
    with Recorder(path, bins=12, every=2) as rec:
        for step in range(12):
            err = x @ w["lin.weight"] + w["lin.bias"] - y
            grads = {"lin.weight": x.T @ err / len(x), "lin.bias": err.mean(0)}
            w["lin.weight"] = w["lin.weight"] - 0.1 * grads["lin.weight"]
            w["lin.bias"] = w["lin.bias"] - 0.1 * grads["lin.bias"]
            rec.snapshot(step, w, grads=grads, scalars={"loss": float((err ** 2).mean()), "lr": 0.1})
    return path


@pytest.fixture(scope="module")
def exported(log, tmp_path_factory):
    out = tmp_path_factory.mktemp("tbout")
    run = weighttui.open(log)
    write_tensorboard(run, str(out))
    acc = EventAccumulator(str(out), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    return run, acc


def test_histograms_carry_the_logs_own_bins(exported):
    run, acc = exported
    for kind in ("weights", "grad", "delta"):
        for name in ("lin.weight", "lin.bias"):
            steps, lo, hi, counts = run.histograms(name, kind)
            events = acc.Histograms(f"{kind}/{name}")
            assert [e.step for e in events] == steps.tolist() and len(events) > 0
            for e, a, b, c in zip(events, lo, hi, counts, strict=True):
                h = e.histogram_value
                assert (h.min, h.max, h.num) == (a, b, c.sum())
                if b > a:
                    np.testing.assert_allclose(h.bucket_limit, np.linspace(a, b, c.size + 1)[1:])
                    np.testing.assert_array_equal(h.bucket, c)
    # the tensor that never changes: one bucket at its value, with all its elements
    h = acc.Histograms("weights/frozen.scale")[-1].histogram_value
    assert list(h.bucket_limit) == [2.0] and list(h.bucket) == [3.0] and h.sum == 6.0
    assert h.sum_squares == pytest.approx(12.0)


def test_statistics_and_scalars_read_back(exported):
    run, acc = exported
    tags = set(acc.Tags()["scalars"])
    for kind in ("weights", "grad", "delta"):
        for stat in run.columns(kind):
            for name in ("lin.weight", "lin.bias"):
                steps, values = run.series(name, stat, kind)
                # covered: any column of the row known (no delta at the first snapshot); a covered
                # row's NaN (cos_prev at the first delta) is exported as NaN
                keep = ~np.all([np.isnan(run.series(name, s, kind)[1]) for s in run.columns(kind)], axis=0)
                got = acc.Scalars(f"{kind}.{export_name(stat)}/{name}") if keep.any() else []
                assert [e.step for e in got] == steps[keep].tolist()
                np.testing.assert_allclose([e.value for e in got], values[keep].astype(np.float32), rtol=1e-6)
    assert "grad.norm/frozen.scale" not in tags  # no gradient was ever given for it
    steps, loss = run.scalars("loss")
    got = acc.Scalars("loss")
    assert [e.step for e in got] == steps.tolist() and len(got) == 12
    np.testing.assert_allclose([e.value for e in got], loss, rtol=1e-6)
    walls = [e.wall_time for e in got]
    assert walls == sorted(walls) and run.times[0] <= walls[2] <= run.times[-1]


def test_histogram_sum_falls_back_to_bin_centres():
    h = histogram_proto(0.0, 4.0, [1, 0, 0, 3])
    assert h.sum == 0.5 + 3 * 3.5 and h.num == 4 and list(h.bucket_limit) == [1.0, 2.0, 3.0, 4.0]


def test_cli_export_writes_event_files_without_tensorflow(log, tmp_path):
    out = tmp_path / "tb dir"
    code = ("import sys; from weighttui.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, "export", str(log), "--format", "tensorboard",
                          "--out", str(out), "--kind", "weights"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    acc = EventAccumulator(str(out))
    acc.Reload()
    assert "weights/lin.weight" in acc.Tags()["histograms"]
    assert not any(t.startswith("grad") for t in acc.Tags()["histograms"] + acc.Tags()["scalars"])


def test_every_export_says_where_the_first_nan_was(tmp_path):
    import csv
    import json

    from weighttui.cli.export import export

    path = tmp_path / "run.wtui"
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    with Recorder(path) as rec:  # the default instruments include nan_origin
        for step in range(4):
            g = rng.standard_normal(w.shape).astype(np.float32)
            if step == 2:
                g[1, 3] = np.nan
            w = w - 0.1 * g
            rec.snapshot(step, {"w": w}, grads={"w": g})
    run = weighttui.open(path)
    assert run.nan_origin is not None and run.nan_origin["step"] == 2
    want = {"step": 2, "tensor": "w", "kind": "grad", "index": 8}
    assert {k: run.nan_origin[k] for k in want} == want
    export(run, fmt="json", out=str(tmp_path / "s.json"))
    got = json.loads((tmp_path / "s.json").read_text())["nan_origin"]
    assert {k: got[k] for k in want} == want
    export(run, fmt="csv", out=str(tmp_path / "s.csv"))
    rows = [r for r in csv.reader(open(tmp_path / "s.csv")) if r[3] == "nan_origin"]
    assert rows == [["2", "", "w", "nan_origin", "grad", "8"]]
    export(run, fmt="npz", out=str(tmp_path / "s.npz"))
    with np.load(tmp_path / "s.npz") as z:
        assert (int(z["nan_origin.step"]), str(z["nan_origin.tensor"]), str(z["nan_origin.kind"]),
                int(z["nan_origin.index"])) == (2, "w", "grad", 8)
    pq = pytest.importorskip("pyarrow.parquet")
    export(run, fmt="parquet", out=str(tmp_path / "s.parquet"))
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    origin = [r for r in table if r["kind"] == "nan_origin"]
    assert [(r["step"], r["tensor"], r["stat"], r["value"]) for r in origin] == [(2, "w", "grad", 8.0)]
    out = tmp_path / "tb"
    write_tensorboard(run, str(out))
    acc = EventAccumulator(str(out), size_guidance={"tensors": 0})
    acc.Reload()
    texts = acc.Tensors("nan_origin")
    assert [t.step for t in texts] == [2]
    assert b"flat index 8" in texts[0].tensor_proto.string_val[0]
