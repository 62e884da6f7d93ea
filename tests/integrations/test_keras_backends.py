"""WeightCallback where Keras must be configured before it is imported:
the torch backend (KERAS_BACKEND=torch) and MirroredStrategy over two logical
CPU devices. Each case runs this file as a script in a fresh interpreter that
trains for real and saves `model.get_weights()`; the test checks the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _run_case(case: str, out_dir, backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, case, str(out_dir)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out_dir, "expected.json")) as fh:
        return json.load(fh)


def _check_full_weights(path, expected_npz, epoch, names):
    import weighttui

    run = weighttui.open(path)
    stored = run.weights(epoch=epoch)
    ref = np.load(expected_npz)
    assert list(stored) == names
    for i, name in enumerate(names):
        assert stored[name].tobytes() == ref[f"w{i}"].tobytes(), name
    return run


def test_torch_backend_sequential_functional_subclassed(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    import weighttui

    info = _run_case("torch", tmp_path, "torch")
    assert info["backend"] == "torch"
    for kind in ("sequential", "functional", "subclassed"):
        names = info[kind]["names"]
        run = _check_full_weights(tmp_path / f"{kind}.wtui", tmp_path / f"{kind}.npz", 2, names)
        assert run.status == "finished"
        assert run.run.framework.endswith("(torch)")
        assert run.tensor_names == names
        assert {t.name: t.layer for t in run.tensors} == info[kind]["layers"]
        # epochs 0..2, plus the initial snapshot where the model was built before fit
        assert run.epochs.tolist()[-3:] == [0, 1, 2]
        _, dmax = run.series(names[0], "max_abs", kind="delta")
        assert np.all(dmax[1:] > 0)
        steps, loss = run.scalars("loss")
        assert loss.size == 3 and steps.tolist() == info[kind]["epoch_end_steps"]
    # gradients inside fit on the torch backend, clipped
    sgd = weighttui.open(tmp_path / "sgd.wtui")
    _assert_sgd_gradients(sgd, 0.1, 8)
    for name in sgd.tensor_names:
        _, g = sgd.series(name, "norm", kind="grad")
        assert np.nanmax(g) <= 0.05 * (1 + 1e-6)
    sgd_b = weighttui.open(tmp_path / "sgd_b.wtui")  # the second every-batch callback (one layer)
    assert sgd_b.tensor_names == ["seq/out/kernel", "seq/out/bias"]
    _assert_sgd_gradients(sgd_b, 0.1, 8)
    sgd_3 = weighttui.open(tmp_path / "sgd_3.wtui")
    for name in sgd_3.tensor_names:  # every 3 batches and the epoch ends: the same gradients as sgd.wtui
        steps, g = sgd_3.series(name, "norm", kind="grad")
        ref = dict(zip(*(a.tolist() for a in sgd.series(name, "norm", kind="grad")), strict=True))
        assert steps[~np.isnan(g)].tolist() == [3, 4, 6, 8], name
        for step, gnorm in zip(steps[~np.isnan(g)].tolist(), g[~np.isnan(g)].tolist(), strict=True):
            assert gnorm == pytest.approx(ref[step], rel=1e-6), (name, step)
    _assert_device_path_matches_the_host_path(tmp_path)
    # custom loop on the torch backend: gradients are torch tensors
    run = weighttui.open(tmp_path / "loop.wtui")
    assert run.has_kind("grad")
    ref = np.load(tmp_path / "loop.npz")
    _, gnorm = run.series(info["loop"]["names"][0], "norm", kind="grad")
    assert gnorm[-1] == pytest.approx(np.linalg.norm(ref["g0"].astype(np.float64)), rel=1e-12)


def _assert_device_path_matches_the_host_path(tmp_path):
    """stats="device" on the torch backend (torch ops, device copies of the previous values, one host
    copy per snapshot) logs what the host path (fused kernel) does: statistics within float32
    tolerance, the same histogram counts, the same complete values."""
    import weighttui
    from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

    host, dev = weighttui.open(tmp_path / "numpy.wtui"), weighttui.open(tmp_path / "device.wtui")
    assert dev.steps.tolist() == host.steps.tolist() == list(range(0, 9))
    assert dev.tensor_names == host.tensor_names
    ref = np.load(tmp_path / "device.npz")
    stored = dev.weights(epoch=1)
    for i, name in enumerate(dev.tensor_names):
        assert stored[name].tobytes() == ref[f"w{i}"].tobytes(), name
        for kind, stats in (("weights", WEIGHT_STATS), ("delta", DELTA_STATS), ("grad", WEIGHT_STATS)):
            for stat in stats:
                s_h, v_h = host.series(name, stat, kind)
                s_d, v_d = dev.series(name, stat, kind)
                assert s_d.tolist() == s_h.tolist(), (name, kind, stat)
                np.testing.assert_allclose(v_d, v_h, rtol=2e-5, atol=1e-7, equal_nan=True,
                                           err_msg=f"{name} {kind} {stat}")
            if kind != "weights":
                assert np.isfinite(dev.series(name, "norm", kind)[1][1:]).all(), (name, kind)  # every batch
            h_steps, h_lo, h_hi, h_counts = host.histograms(name, kind)
            d_steps, d_lo, d_hi, d_counts = dev.histograms(name, kind)
            assert d_steps.tolist() == h_steps.tolist(), (name, kind)
            np.testing.assert_allclose(d_lo, h_lo, rtol=1e-12)
            np.testing.assert_allclose(d_hi, h_hi, rtol=1e-12)
            assert (d_counts == h_counts).all(), (name, kind)
        _s, samples_h = host.samples(name)
        _s, samples_d = dev.samples(name)
        np.testing.assert_array_equal(samples_d, samples_h)


def test_mirrored_strategy_on_two_cpu_devices_writes_one_log(tmp_path):
    pytest.importorskip("tensorflow")
    import weighttui

    info = _run_case("mirrored", tmp_path, "tensorflow")
    assert info["replicas"] == 2
    names = info["names"]
    run = _check_full_weights(tmp_path / "mirrored.wtui", tmp_path / "mirrored.npz", 3, names)
    assert len(run.runs) == 1 and run.status == "finished"
    # one writer: a single run record and end record, steps strictly increasing
    assert run.record_counts["run"] == 1 and run.record_counts["end"] == 1
    steps = run.steps.tolist()
    assert steps == sorted(set(steps))
    assert steps[-1] == info["batches"]
    _assert_sgd_gradients(run, 0.1, info["batches"])
    # a second callback on one layer: the shared capture grows its slots under the strategy
    other = weighttui.open(tmp_path / "mirrored_o.wtui")
    assert other.tensor_names == ["mirrored/o/kernel", "mirrored/o/bias"]
    _assert_sgd_gradients(other, 0.1, info["batches"])


def _assert_sgd_gradients(run, lr, batches):
    """Gradients recorded inside fit at every batch: the SGD update is lr x the gradient applied."""
    assert run.has_kind("grad")
    for name in run.tensor_names:
        gsteps, g = run.series(name, "norm", kind="grad")
        dsteps, d = run.series(name, "norm", kind="delta")
        by_step = dict(zip(dsteps.tolist(), d.tolist(), strict=True))
        covered = ~np.isnan(g)
        assert gsteps[covered].tolist() == list(range(1, batches + 1)), name
        for step, gnorm in zip(gsteps[covered].tolist(), g[covered].tolist(), strict=True):
            assert by_step[step] == pytest.approx(lr * gnorm, rel=1e-4), (name, step)


# ------------------------------------------------------------------ scripts


def _torch_case(out: str) -> None:
    import keras
    import torch

    from weighttui.keras import WeightCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) * 0.5).astype("float32")

    def sequential():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="hid"),
                                 keras.layers.Dense(1, name="out")], name="seq")

    def functional():
        inp = keras.Input((4,))
        h = keras.layers.Dense(6, activation="relu", name="enc")(inp)
        return keras.Model(inp, keras.layers.Dense(1, name="dec")(h), name="fn")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.a = keras.layers.Dense(6, activation="relu", name="a")
            self.b = keras.layers.Dense(1, name="b")

        def call(self, t):
            return self.b(self.a(t))

    info = {"backend": keras.backend.backend()}
    for kind, build in (("sequential", sequential), ("functional", functional), ("subclassed", Sub)):
        model = build()
        model.compile(keras.optimizers.SGD(0.05), "mse")
        model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                  callbacks=[WeightCallback(os.path.join(out, f"{kind}.wtui"), full_epochs=[2])])
        np.savez(os.path.join(out, f"{kind}.npz"), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        layers = {}
        for layer in model._flatten_layers(include_self=False):
            for v in layer.weights:
                layers[v.path] = layer.name
        info[kind] = {"names": [v.path for v in model.weights], "layers": layers,
                      "epoch_end_steps": [4, 8, 12]}

    model = sequential()
    model.compile(keras.optimizers.SGD(0.1, clipnorm=0.05), "mse")
    # three callbacks share the optimizer's capture: a less frequent one between two every-batch
    # ones switches neither off, and the second every-batch one gets the epochs' last batches too
    model.fit(x[:32], y[:32], batch_size=8, epochs=2, verbose=0,
              callbacks=[WeightCallback(os.path.join(out, "sgd.wtui"), every_batches=1),
                         WeightCallback(os.path.join(out, "sgd_3.wtui"), every_batches=3),
                         WeightCallback(os.path.join(out, "sgd_b.wtui"), every_batches=1, layers=["out"])])

    # the device path (statistics with torch's ops where the variables live; what CUDA variables
    # take), forced on these CPU variables, beside the host path in the same fit
    model = sequential()
    model.compile(keras.optimizers.Adam(0.02), "mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[WeightCallback(os.path.join(out, f"{stats}.wtui"), every_batches=1, stats=stats,
                                        full_epochs=[1], instruments=False) for stats in ("numpy", "device")])
    np.savez(os.path.join(out, "device.npz"), **{f"w{i}": w for i, w in enumerate(model.get_weights())})

    model = sequential()
    model.build((None, 4))
    cb = WeightCallback(os.path.join(out, "loop.wtui"))
    cb.set_model(model)
    opt = keras.optimizers.SGD(0.1)
    for step in range(2):
        model.zero_grad()
        loss = torch.mean((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2)
        loss.backward()
        variables = model.trainable_variables
        grads = [v.value.grad for v in variables]
        cb.record(step, grads=zip(grads, variables, strict=True), logs={"loss": loss})
        np.savez(os.path.join(out, "loop.npz"), g0=grads[0].numpy())
        opt.apply(grads, variables)
    cb.close()
    info["loop"] = {"names": [v.path for v in model.trainable_variables]}
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump(info, fh)


def _mirrored_case(out: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from weighttui.keras import WeightCallback

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (x[:, :1] - x[:, 1:2]).astype("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh", name="h"),
                                  keras.layers.Dense(1, name="o")], name="mirrored")
        model.compile(keras.optimizers.SGD(0.1), "mse")
    cb = WeightCallback(os.path.join(out, "mirrored.wtui"), every_batches=1, full_epochs=[3])
    other = WeightCallback(os.path.join(out, "mirrored_o.wtui"), every_batches=1, layers=["o"])
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[cb, other])
    np.savez(os.path.join(out, "mirrored.npz"), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    with open(os.path.join(out, "expected.json"), "w") as fh:
        json.dump({"replicas": strategy.num_replicas_in_sync, "names": [v.path for v in model.weights],
                   "batches": 4 * 96 // 16}, fh)


if __name__ == "__main__":
    {"torch": _torch_case, "mirrored": _mirrored_case}[sys.argv[1]](sys.argv[2])
