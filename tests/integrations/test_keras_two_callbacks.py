"""Several WeightCallbacks in one `model.fit` share the optimizer's gradient capture
(keras_grads.py): each one gets the gradients applied at every batch it records,
whatever the others want, record or close (TensorFlow backend; the torch backend's
case is in test_keras_backends.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import weighttui  # noqa: E402
from weighttui.keras import WeightCallback  # noqa: E402

pytestmark = pytest.mark.tf

if keras.backend.backend() != "tensorflow":  # pragma: no cover - misconfigured environment
    pytest.skip("these tests run Keras on the TensorFlow backend", allow_module_level=True)

LR = 0.1


def _fit(callbacks, *, epochs=2, run_eagerly=False, model=None):
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    if model is None:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="dense"),
                                  keras.layers.Dense(1, name="head")], name="sequential")
        model.compile(keras.optimizers.SGD(LR), "mse", run_eagerly=run_eagerly)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)
    return model


def _assert_grads(path, steps, names=None):
    """A grad block at exactly these steps, and SGD's update = lr x the gradient applied there."""
    run = weighttui.open(path)
    assert run.has_kind("grad"), path
    for name in names or run.tensor_names:
        gsteps, g = run.series(name, "norm", kind="grad")
        dsteps, d = run.series(name, "norm", kind="delta")
        covered = ~np.isnan(g)
        assert gsteps[covered].tolist() == steps, (path, name)
        by_step = dict(zip(dsteps.tolist(), d.tolist(), strict=True))
        for step, gnorm in zip(gsteps[covered].tolist(), g[covered].tolist(), strict=True):
            assert gnorm > 0
            if step - 1 in by_step or step == 1:  # the update since the snapshot one batch before
                assert by_step[step] == pytest.approx(LR * gnorm, rel=1e-4), (path, name, step)
    return run


def _same_grads(path, reference):
    """Where `path` has a gradient, it is the one `reference` logged at that step (one fit, one gradient)."""
    run, ref = weighttui.open(path), weighttui.open(reference)
    for name in run.tensor_names:
        gsteps, g = run.series(name, "norm", kind="grad")
        rsteps, r = ref.series(name, "norm", kind="grad")
        want = dict(zip(rsteps.tolist(), r.tolist(), strict=True))
        for step, gnorm in zip(gsteps.tolist(), g.tolist(), strict=True):
            if not np.isnan(gnorm):
                assert gnorm == pytest.approx(want[step], rel=1e-6), (path, name, step)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_two_callbacks_every_batch_both_get_every_gradient(tmp_path, run_eagerly):
    """Two logs (one numpy path, one device statistics) every batch for 2 epochs x 4 batches:
    a grad block at every snapshot of both, the epochs' last batches included."""
    a = WeightCallback(tmp_path / "a.wtui", every_batches=1, stats="numpy")
    b = WeightCallback(tmp_path / "b.wtui", every_batches=1, stats="device")
    _fit([a, b], run_eagerly=run_eagerly)
    for path in ("a.wtui", "b.wtui"):
        _assert_grads(tmp_path / path, list(range(1, 9)))
    _same_grads(tmp_path / "b.wtui", tmp_path / "a.wtui")


def test_a_less_frequent_callback_does_not_switch_the_other_off(tmp_path):
    """The second callback does not want most batches: the first still gets each one's gradients."""
    a = WeightCallback(tmp_path / "a.wtui", every_batches=1)
    b = WeightCallback(tmp_path / "b.wtui", every_batches=3)
    c = WeightCallback(tmp_path / "c.wtui")  # epoch ends only
    _fit([a, b, c])
    _assert_grads(tmp_path / "a.wtui", list(range(1, 9)))
    _assert_grads(tmp_path / "b.wtui", [3, 4, 6, 8])  # every 3 batches, and the epoch ends
    _assert_grads(tmp_path / "c.wtui", [4, 8])
    _same_grads(tmp_path / "b.wtui", tmp_path / "a.wtui")
    _same_grads(tmp_path / "c.wtui", tmp_path / "a.wtui")


def test_callbacks_on_different_layers(tmp_path):
    """Different variables wanted by each: one capture covers both, neither loses its gradients."""
    a = WeightCallback(tmp_path / "a.wtui", every_batches=1, layers=["dense"])
    b = WeightCallback(tmp_path / "b.wtui", every_batches=1, layers=["head"])
    _fit([a, b])
    ra = _assert_grads(tmp_path / "a.wtui", list(range(1, 9)))
    rb = _assert_grads(tmp_path / "b.wtui", list(range(1, 9)))
    assert ra.tensor_names == ["sequential/dense/kernel", "sequential/dense/bias"]
    assert rb.tensor_names == ["sequential/head/kernel", "sequential/head/bias"]


def test_closing_or_detaching_one_callback_leaves_the_other_capturing(tmp_path):
    """One log closed by the user after the first epoch: the other keeps every gradient;
    a later fit with only the other one attached records them too."""
    a = WeightCallback(tmp_path / "a.wtui", every_batches=1)
    b = WeightCallback(tmp_path / "b.wtui", every_batches=1)
    closer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 0 and a.close())
    model = _fit([a, closer, b])
    _assert_grads(tmp_path / "b.wtui", list(range(1, 9)))
    assert weighttui.open(tmp_path / "a.wtui").steps.tolist()[-1] == 4  # nothing after its close
    c = WeightCallback(tmp_path / "c.wtui", every_batches=1)
    _fit([c], model=model)  # the first fit's other callbacks are gone
    _assert_grads(tmp_path / "c.wtui", list(range(1, 9)))
