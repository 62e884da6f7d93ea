"""The optim instrument with Keras 3 (docs/instruments.md): Adam moments and SGD momentum after fit()."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import weighttui  # noqa: E402
from weighttui.keras import WeightCallback  # noqa: E402
from weighttui.record import instruments as inst  # noqa: E402


def _hidden_head(seed: int, n: int, d_in: int, hidden: int, d_out: int, activation: str, **model_kw):
    """(model, x, y): Input -> Dense `hidden` -> Dense `head`, not compiled, and n random samples (seeded)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d_in)).astype("float32"), rng.standard_normal((n, d_out)).astype("float32")
    model = keras.Sequential([keras.Input((d_in,)), keras.layers.Dense(hidden, activation=activation, name="hidden"),
                              keras.layers.Dense(d_out, name="head")], **model_kw)
    return model, x, y


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
def test_optimizer_state_after_fit(tmp_path, name):
    model, x, y = _hidden_head(0, 64, 6, 16, 2, "relu")
    opt = {"adam": keras.optimizers.Adam(1e-2), "sgd": keras.optimizers.SGD(1e-2, momentum=0.9),
           "rmsprop": keras.optimizers.RMSprop(1e-2)}[name]
    model.compile(optimizer=opt, loss="mse")
    path = tmp_path / "run.wtui"
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[WeightCallback(path)])
    run = weighttui.open(path)
    assert run.has_kind("optim")
    for var in model.trainable_variables:
        tensor = next(n for n in run.tensor_names if n.endswith(var.path.split("/")[-1])
                      and var.path.split("/")[-2] in n)
        i = opt._get_variable_index(var)
        _, m = run.series(tensor, "m_norm", kind="optim")
        _, v = run.series(tensor, "v_norm", kind="optim")
        _, eff = run.series(tensor, "eff_lr", kind="optim")
        if name == "adam":
            m_ref = np.linalg.norm(np.asarray(opt._momentums[i], dtype=np.float64))
            v_ref = np.linalg.norm(np.asarray(opt._velocities[i], dtype=np.float64))
            assert m[-1] == pytest.approx(m_ref, rel=1e-6) and v[-1] == pytest.approx(v_ref, rel=1e-6)
            n = int(np.prod(var.shape))
            assert eff[-1] == pytest.approx(inst.adam_eff_lr(float(np.asarray(opt.learning_rate)), v_ref, n,
                                                             float(np.asarray(opt.iterations)), 0.999, 1e-7),
                                            rel=1e-6)
        elif name == "rmsprop":  # lr / (sqrt(rms(v)) + eps): a rho-average of g^2 with no bias correction
            v_ref = np.linalg.norm(np.asarray(opt._velocities[i], dtype=np.float64))
            assert v[-1] == pytest.approx(v_ref, rel=1e-6) and math.isnan(m[-1])
            rms = v_ref / math.sqrt(int(np.prod(var.shape)))
            assert eff[-1] == pytest.approx(1e-2 / (math.sqrt(rms) + 1e-7), rel=1e-6)
        else:
            m_ref = np.linalg.norm(np.asarray(opt.momentums[i], dtype=np.float64))
            assert m[-1] == pytest.approx(m_ref, rel=1e-6) and math.isnan(v[-1])
            assert eff[-1] == pytest.approx(1e-2)


def test_optimizer_state_of_every_batch_is_its_own(tmp_path):
    """Adam's moments, read with the weights in one TF call at every batch: each snapshot logs
    those of its own batch."""

    class Moments(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.taken = []

        def on_train_batch_end(self, batch, logs=None):
            opt = self.model.optimizer
            self.taken.append({v.path: (np.linalg.norm(np.asarray(opt._momentums[opt._get_variable_index(v)],
                                                                  dtype=np.float64)),
                                        np.linalg.norm(np.asarray(opt._velocities[opt._get_variable_index(v)],
                                                                  dtype=np.float64)))
                               for v in self.model.trainable_variables})

    model, x, y = _hidden_head(1, 64, 6, 16, 2, "relu", name="seq")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    path = tmp_path / "bg.wtui"
    moments = Moments()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[WeightCallback(path, every_batches=1), moments])
    run = weighttui.open(path)
    for name in run.tensor_names:
        steps, m = run.series(name, "m_norm", kind="optim")
        _, v = run.series(name, "v_norm", kind="optim")
        assert steps.tolist() == list(range(0, 9))
        for step in range(1, 9):
            m_ref, v_ref = moments.taken[step - 1][name]
            assert m[step] == pytest.approx(m_ref, rel=1e-6) and v[step] == pytest.approx(v_ref, rel=1e-6)


@pytest.mark.parametrize("stats", ["numpy", "device"])
def test_units_and_spectra_of_keras_kernels_are_their_output_units(tmp_path, stats):
    # Keras keeps a Dense kernel as (in, out) and a Conv2D kernel as (kh, kw, in, out): a unit is a column
    from weighttui.data.units import unit_norms

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 6, 2)).astype("float32")
    y = rng.standard_normal((64, 3)).astype("float32")
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="fc1"),
                              keras.layers.Dense(3, name="fc2")])
    # a bias far below zero: ReLU never lets the unit through, its gradient is exactly zero
    model.get_layer("fc1").bias.assign(np.where(np.arange(16) == 5, -1e3, 0).astype("float32"))
    model.get_layer("conv").bias.assign(np.where(np.arange(4) == 2, -1e3, 0).astype("float32"))
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    path = tmp_path / "run.wtui"
    model.fit(x, y, batch_size=64, epochs=6, verbose=0,
              callbacks=[WeightCallback(path, every_batches=1, stats=stats, instruments=True)])
    run = weighttui.open(path)
    dead = {run.tensors[e.tensor].name.split("/")[-2]: e.message.rsplit(": ", 1)[-1]
            for e in run.events if e.kind == "dead_units"}
    assert dead == {"conv": "2", "fc1": "5"}  # "...: 1 of 16 units dead (...): 5"
    for layer, units in (("conv", 4), ("fc1", 16), ("fc2", 3)):
        name = next(n for n in run.tensor_names if n.endswith(f"{layer}/kernel"))
        w = np.asarray(model.get_layer(layer).kernel, dtype=np.float64)
        _, norms = unit_norms(path, name)
        assert norms.shape[1] == units
        ref = np.linalg.norm(w.reshape(-1, units), axis=0)
        np.testing.assert_allclose(norms[-1], ref, rtol=8e-3)  # (stored as bfloat16)
        out_first = np.moveaxis(w, -1, 0).reshape(units, -1)  # the documented out x (everything else)
        _, sigma = run.series(name, "sigma_max")
        assert sigma[-1] == pytest.approx(np.linalg.svd(out_first, compute_uv=False)[0], rel=1e-3)


@pytest.mark.parametrize("stats", ["numpy", "device"])
def test_a_schedule_gives_the_learning_rate_of_the_step_taken(tmp_path, stats):
    # eff_lr is the step size of the update just taken; after it Keras' `learning_rate` is the next step's
    model, x, y = _hidden_head(0, 32, 8, 6, 2, "tanh")
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)
    model.compile(keras.optimizers.Adam(schedule), "mse")
    path = tmp_path / "run.wtui"
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[WeightCallback(path, every_batches=1, stats=stats)])
    run = weighttui.open(path)
    name = next(n for n in run.tensor_names if n.endswith("hidden/kernel"))
    steps, eff = run.series(name, "eff_lr", kind="optim")
    lr_steps, lr = run.scalars("learning_rate")
    for s, e in zip(steps.tolist(), eff, strict=True):
        if s >= 1:
            used = 1e-2 * 0.5 ** (s - 1)  # the step from s - 1 to s
            # the learning_rate scalar is the optimizer's current rate (docs/keras.md): the next step's
            assert lr[lr_steps.tolist().index(s)] == pytest.approx(used / 2, rel=1e-6)
            _, v = run.series(name, "v_norm", kind="optim")
            rms = v[steps.tolist().index(s)] / math.sqrt(8 * 6)
            assert e == pytest.approx(used / (math.sqrt(rms / (1 - 0.999 ** s)) + 1e-7), rel=1e-5)
