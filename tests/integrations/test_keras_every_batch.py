"""WeightCallback recording every batch inside a real `fit` (TensorFlow backend): what the lean
per-snapshot path (one TF call reading weights, gradient slots and learning rate; one kernel call;
the scalars in the snapshot's queue entry) writes must equal what the model holds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import weighttui  # noqa: E402
from weighttui.keras import WeightCallback  # noqa: E402
from weighttui.record.stats import delta_row, weight_stats  # noqa: E402

pytestmark = pytest.mark.tf

if keras.backend.backend() != "tensorflow":  # pragma: no cover - misconfigured environment
    pytest.skip("these tests run Keras on the TensorFlow backend", allow_module_level=True)


class Snap(keras.callbacks.Callback):
    """model.get_weights() after every batch (runs after the WeightCallback in the list)."""

    def __init__(self):
        super().__init__()
        self.taken = []

    def on_train_batch_end(self, batch, logs=None):
        self.taken.append([w.copy() for w in self.model.get_weights()])


class LrPerBatch(keras.callbacks.Callback):
    """A learning rate that changes inside the epoch: 0.1 / (1 + batch)."""

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(0.1 / (1 + batch))


def _model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="tanh", name="dense"),
                             keras.layers.Dense(1, name="head")], name="sequential")


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, (x @ rng.normal(size=(5, 1))).astype("float32")


def test_every_batch_snapshot_equals_the_weights_fit_holds(tmp_path):
    keras.utils.set_random_seed(21)
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    path = tmp_path / "run.wtui"
    snap = Snap()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[WeightCallback(path, every_batches=1, instruments=False), snap])
    run = weighttui.open(path)
    assert run.steps.tolist() == list(range(0, 13))  # initial + 12 batches
    names = [v.path for v in model.weights]
    for i, name in enumerate(names):
        steps, means = run.series(name, "mean")
        _s, norms = run.series(name, "norm")
        _s, dnorm = run.series(name, "norm", "delta")
        for step in range(1, 13):
            now = snap.taken[step - 1][i]
            ref = weight_stats(now)
            assert means[step] == pytest.approx(ref[0], rel=1e-12, abs=1e-15)
            assert norms[step] == pytest.approx(ref[5], rel=1e-12)
            if step > 1:
                want = delta_row(now, snap.taken[step - 2][i], 64)[0]
                assert dnorm[step] == pytest.approx(want[0], rel=1e-9)
        _g, gnorm = run.series(name, "norm", "grad")
        assert np.isfinite(gnorm[1:]).all() and (gnorm[1:] > 0).all()  # every batch's gradient


def test_learning_rate_of_every_batch_is_the_one_it_used(tmp_path):
    """Read with the weights (one TF call) at every recorded batch, as it is then."""
    keras.utils.set_random_seed(22)
    x, y = _data(64)
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    path = tmp_path / "lr.wtui"
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[LrPerBatch(), WeightCallback(path, every_batches=1, instruments=False)])
    run = weighttui.open(path)
    steps, lr = run.scalars("learning_rate")
    assert steps.tolist() == list(range(1, 9))
    assert lr.tolist() == pytest.approx([0.1 / (1 + (s - 1) % 4) for s in range(1, 9)], rel=1e-6)
    # and what SGD applied with it: update norm == lr x gradient norm, batch by batch
    name = "sequential/dense/kernel"
    _s, upd = run.series(name, "norm", "delta")
    _s, grad = run.series(name, "norm", "grad")
    np.testing.assert_allclose(upd[1:], lr * grad[1:], rtol=1e-4)


def test_a_schedule_every_batch(tmp_path):
    keras.utils.set_random_seed(23)
    x, y = _data(64)
    model = _model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(schedule), "mse")
    path = tmp_path / "sched.wtui"
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[WeightCallback(path, every_batches=1, instruments=False)])
    steps, lr = weighttui.open(path).scalars("learning_rate")
    assert steps.tolist() == [1, 2, 3, 4]
    assert lr.tolist() == pytest.approx([0.1 * 0.5 ** s for s in steps], rel=1e-6)  # after s steps


def test_one_reader_per_model_across_snapshots_callbacks_and_fits(tmp_path, monkeypatch):
    """Snapshots with and without kept gradients, the initial one and those of a later fit with
    a new callback all read through one reader, planned once."""
    import weighttui.integrations.keras as wk

    made = []
    real = wk._read_plan
    monkeypatch.setattr(wk, "_read_plan", lambda items, tf_: made.append(len(items)) or real(items, tf_))
    keras.utils.set_random_seed(24)
    x, y = _data(96)
    model = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    for i in range(2):
        path = tmp_path / f"fit{i}.wtui"
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[WeightCallback(path, every_batches=4, instruments=False)])
        run = weighttui.open(path)
        assert run.steps.tolist() == [0, 4, 6, 8, 12]  # initial, every 4 batches, the end of epoch 0
        _s, g = run.series("sequential/dense/kernel", "norm", "grad")
        assert np.isfinite(g[-4:]).all()  # gradients at every recorded batch
    # 4 weights + 4 gradient slots + the count of filled batches + the learning rate (the initial
    # snapshot), and the weights and the learning rate at the epoch's end (validation and on_epoch_end
    # may run between the batch and it); a recorded batch's end reads nothing: the train function that
    # stores the gradients returns them, the weights and the learning rate. Each list planned once
    assert made == [10, 5]


def test_a_failing_gradient_capture_costs_no_weights(tmp_path, monkeypatch, capfd):
    """The capture is installed before the initial snapshot; if installing it fails, that is said
    once and every snapshot of the weights (the initial one included) is still taken."""
    import weighttui.integrations.keras as wk

    def broken(*args):
        raise RuntimeError("injected capture failure")

    monkeypatch.setattr(wk, "capture_for", broken)
    keras.utils.set_random_seed(25)
    x, y = _data(64)
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    path = tmp_path / "nocap.wtui"
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                     callbacks=[WeightCallback(path, every_batches=2, instruments=False)])
    assert len(hist.history["loss"]) == 2
    assert capfd.readouterr().err.count("injected capture failure") == 1
    run = weighttui.open(path)
    assert run.steps.tolist() == [0, 2, 4, 6, 8]
    assert np.isnan(run.series("sequential/dense/kernel", "norm", "grad")[1]).all()


def test_only_recorded_batches_run_the_train_function_that_stores_gradients(tmp_path):
    """The gradient capture adds no op to `fit`'s own train function: a batch whose gradients a
    callback wants runs a second one, traced once, that stores them; the others leave the slots as
    they were. Neither is traced again by a later fit, and after a fit `fit`'s own is back."""
    from weighttui.integrations import keras_grads

    calls = []
    real = keras_grads.GradientCapture._tf_wrapper

    def counting(self, original):  # the wrapper runs only while a train function is traced
        inner = real(self, original)
        return lambda *a: calls.append(self._tracing_store) or inner(*a)

    keras_grads.GradientCapture._tf_wrapper = counting
    try:
        keras.utils.set_random_seed(26)
        x, y = _data(96)
        model = _model()
        lr = 0.05
        model.compile(keras.optimizers.SGD(lr), "mse")

        class Probe(keras.callbacks.Callback):
            """Which train function each batch runs, and the kernel's gradient slot after it."""

            def __init__(self):
                super().__init__()
                self.storing, self.slots = [], []

            def on_train_batch_begin(self, batch, logs=None):
                cap = vars(self.model.optimizer)[keras_grads._ATTR]
                self.storing.append(self.model.train_function is cap._storing)

            def on_train_batch_end(self, batch, logs=None):
                cap = vars(self.model.optimizer)[keras_grads._ATTR]
                self.slots.append(cap.slots()[0][0].numpy().copy())

        for fit in range(2):
            probe = Probe()
            path = tmp_path / f"every3_{fit}.wtui"
            model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      callbacks=[WeightCallback(path, every_batches=3, instruments=False), probe])
            # 6 batches an epoch: steps 3, 6 (the epoch's end), 9, 12 want their gradients
            assert probe.storing == [b % 3 == 2 for b in range(12)], fit
            for b in range(1, 12):
                same = np.array_equal(probe.slots[b], probe.slots[b - 1])
                assert same == (not probe.storing[b]), (fit, b)  # stored exactly at those batches
            cap = vars(model.optimizer)[keras_grads._ATTR]
            assert model.train_function is cap._plain and cap._plain is not None
            run = weighttui.open(path)
            _s, g = run.series("sequential/dense/kernel", "norm", "grad")
            assert np.isfinite(g[1:]).all() and (g[1:] > 0).all()
        # one trace of each train function, in the first fit
        assert calls == [False, True]
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # no callback: fit's own, no trace
        assert calls == [False, True]
    finally:
        keras_grads.GradientCapture._tf_wrapper = real


def test_the_storing_train_function_returns_the_gradients_and_fit_never_sees_them(tmp_path, monkeypatch):
    """At a recorded batch the train function that stores the gradients also returns its reads of the
    gradient slots and of their fill count (no eager read of them), taken out of the logs before fit and
    the other callbacks see them; the gradients logged are the slots' values after that batch."""
    import weighttui.integrations.keras as wk
    from weighttui.integrations import keras_grads

    planned = []
    real = wk._read_plan
    monkeypatch.setattr(wk, "_read_plan", lambda items, tf_: planned.append(list(items)) or real(items, tf_))
    keras.utils.set_random_seed(27)
    x, y = _data(96)
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), "mse")

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.keys, self.returned, self.norms = [], [], []

        def on_train_batch_end(self, batch, logs=None):
            cap = vars(self.model.optimizer)[keras_grads._ATTR]
            self.keys.append(sorted(logs))
            self.returned.append(cap.outputs() is not None)
            slot = [s for s, v in cap.slots() if v.path == "sequential/dense/kernel"][0]
            self.norms.append(float(np.sqrt(np.sum(slot.numpy().astype(np.float64) ** 2))))

    probe = Probe()
    path = tmp_path / "returned.wtui"
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[WeightCallback(path, every_batches=2, instruments=False), probe])
    assert probe.keys == [["loss"]] * 12  # fit's logs as they always were
    assert probe.returned == [b % 2 == 1 for b in range(12)]  # the recorded batches
    cap = vars(model.optimizer)[keras_grads._ATTR]
    slot_ids = {id(s) for s, _v in cap.slots()} | {id(cap.fills)}
    # the slots are read eagerly by the initial snapshot only (before any batch)
    assert [any(id(x) in slot_ids for x in items) for items in planned] == [True, False]
    run = weighttui.open(path)
    steps, g = run.series("sequential/dense/kernel", "norm", "grad")
    assert steps.tolist() == [0, 2, 4, 6, 8, 10, 12]
    np.testing.assert_allclose(g[1:], probe.norms[1::2], rtol=1e-6)


def test_weights_come_from_the_train_function_only_when_no_callback_before_can_change_them(tmp_path):
    """A snapshot shows the weights as they are when the WeightCallback runs: read by the train function
    that stores the gradients when every callback before it leaves the batch-end hooks alone (or is one of
    Keras' own that only read), eagerly after a callback that may change them (it resets a layer here)."""
    import weighttui.integrations.keras as wk

    class Reset(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            kernel = self.model.get_layer("dense").kernel
            kernel.assign(np.full(tuple(kernel.shape), 0.25, dtype="float32"))

    lam = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    me = WeightCallback(tmp_path / "unused.wtui", every_batches=1)
    before = wk._nothing_before_changes_weights
    assert before([keras.callbacks.ProgbarLogger(), keras.callbacks.History(), me], me)
    assert before([keras.callbacks.TerminateOnNaN(), WeightCallback(tmp_path / "b.wtui"), me], me)
    assert not before([Reset(), me], me) and not before([lam, me], me) and not before([], me)
    assert before([me, Reset()], me)
    me.close()
    for order in ("reset first", "weighttui first"):
        keras.utils.set_random_seed(28)
        x, y = _data(64)
        model = _model()
        model.compile(keras.optimizers.SGD(0.05), "mse")
        path = tmp_path / f"{order.split()[0]}.wtui"
        cb = WeightCallback(path, every_batches=1, instruments=False)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[Reset(), cb] if order == "reset first" else [cb, Reset()])
        assert cb._nothing_changes_weights == (order == "weighttui first")
        _s, lo = weighttui.open(path).series("sequential/dense/kernel", "min")
        _s, hi = weighttui.open(path).series("sequential/dense/kernel", "max")
        reset = ((lo[1:] == 0.25) & (hi[1:] == 0.25)).tolist()
        # reset first: every batch's snapshot sees the reset kernel; weighttui first: the step's update of it,
        # but at the epoch's last batch, whose snapshot is taken at the epoch's end, after every batch-end hook
        assert reset == ([True] * 4 if order == "reset first" else [False] * 3 + [True]), order


def test_the_storing_train_function_trains_as_fits_own(tmp_path, monkeypatch):
    """The train function of recorded batches is the capture's own (no tf.experimental.Optional around its
    logs, unlike Keras'): a fit recorded at every batch gives the losses and weights of a fit without the
    callback, and a dataset of unknown length ends each epoch as fit's own function does (out of data)."""
    import warnings

    from weighttui.integrations import keras_grads

    made = []
    real = keras_grads.GradientCapture._direct_function
    monkeypatch.setattr(keras_grads.GradientCapture, "_direct_function",
                        lambda self, step: made.append(real(self, step)) or made[-1])
    x, y = _data(96)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)  # length unknown
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    runs = {}
    for name, data in (("arrays", {"x": x, "y": y, "batch_size": 16}), ("dataset", {"x": ds})):
        for recorded in (False, True):
            keras.utils.set_random_seed(31)
            model = _model()
            model.compile(keras.optimizers.Adam(0.01), "mse")
            cbs = [WeightCallback(tmp_path / f"{name}.wtui", every_batches=1, instruments=False)] if recorded else []
            seen: list[float] = []
            cbs.append(keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda b, logs, seen=seen: seen.append(float(logs["loss"]))))
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                model.fit(**data, epochs=2, verbose=0, callbacks=cbs)
            runs[name, recorded] = (seen, model.get_weights(), sorted({str(w.message)[:40] for w in said}))
            if recorded:
                cap = vars(model.optimizer)[keras_grads._ATTR]
                assert cap._storing is not None and cap._plain is model.train_function
        (loss0, w0, said0), (loss1, w1, said1) = runs[name, False], runs[name, True]
        assert len(loss1) == len(loss0) == 12 and said1 == said0  # (the dataset's end: the same warning)
        np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
        for a, b in zip(w1, w0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        run = weighttui.open(tmp_path / f"{name}.wtui")
        assert run.steps.tolist()[:13] == list(range(13))
    assert len(made) == 2 and all(m is not None for m in made)  # one per model, used for tf.data iterators
