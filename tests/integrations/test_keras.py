"""WeightCallback with real `model.fit` on the Keras TensorFlow backend.

Other backends and MirroredStrategy need a fresh interpreter: test_keras_backends.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import weighttui  # noqa: E402
from weighttui.keras import WeightCallback  # noqa: E402
from weighttui.record.stats import histogram, weight_stats  # noqa: E402

pytestmark = pytest.mark.tf

if keras.backend.backend() != "tensorflow":  # pragma: no cover - misconfigured environment
    pytest.skip("these tests run Keras on the TensorFlow backend", allow_module_level=True)


class GetWeightsAt(keras.callbacks.Callback):
    """The hand-written recipe: model.get_weights() at chosen epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = set(epochs)
        self.taken = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.epochs:
            self.taken[epoch] = self.model.get_weights()


def regression(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) + 0.1).astype("float32")
    return x, y


def dense_model(d=4):
    # explicit names: Keras numbers automatic ones per process (sequential_3/dense_7/...)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(8, activation="tanh", name="dense"),
                             keras.layers.Dense(1, name="head")], name="sequential")


def test_weights_at_epochs_5_10_15_equal_get_weights_bit_for_bit(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = regression()
    model = dense_model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    path = tmp_path / "run.wtui"
    plain = GetWeightsAt([5, 10, 15])
    cb = WeightCallback(path, epochs=[5, 10, 15], full_epochs=[5, 10, 15])
    model.fit(x, y, batch_size=16, epochs=20, verbose=0, callbacks=[cb, plain])

    run = weighttui.open(path)
    assert run.status == "finished"
    # -1: the initial snapshot; 19: the end of training (always recorded)
    assert sorted(set(run.epochs.tolist())) == [-1, 5, 10, 15, 19]
    names = [v.path for v in model.weights]
    assert run.tensor_names == names
    for epoch in (5, 10, 15):
        stored = run.weights(epoch=epoch)
        assert list(stored) == names
        for name, expected in zip(names, plain.taken[epoch], strict=True):
            got = stored[name]
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert got.tobytes() == expected.tobytes(), (epoch, name)
    # the weights did move between those epochs, so the comparison had teeth
    assert not np.array_equal(plain.taken[5][0], plain.taken[15][0])
    with pytest.raises(KeyError):
        run.weights(epoch=4)


def test_every_layer_trainable_only_or_selected_layers(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = regression()
    model = keras.Sequential(name="sequential", layers=[
        keras.Input((4,)),
        keras.layers.Dense(8, name="hidden"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile("sgd", "mse")
    every = WeightCallback(tmp_path / "all.wtui", trainable_only=False)
    trainable = WeightCallback(tmp_path / "trainable.wtui")
    chosen = WeightCallback(tmp_path / "chosen.wtui", layers=["head", "norm"])
    globbed = WeightCallback(tmp_path / "glob.wtui", layers="h*")
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[every, trainable, chosen, globbed])

    all_paths = [v.path for v in model.weights]
    trainable_paths = [v.path for v in model.trainable_weights]
    assert len(trainable_paths) < len(all_paths)  # BatchNorm's moving statistics

    run = weighttui.open(tmp_path / "all.wtui")
    assert run.tensor_names == all_paths
    flags = {t.name: t.trainable for t in run.tensors}
    assert flags["sequential/norm/moving_mean"] is False
    assert flags["sequential/norm/moving_variance"] is False
    assert flags["sequential/norm/gamma"] is True
    assert {t.name: t.layer for t in run.tensors}["sequential/hidden/kernel"] == "hidden"
    # every epoch end plus the initial snapshot, for every tensor
    assert run.n == 4 and run.present.all()
    # moving statistics really are tracked: they change while training
    steps, var = run.series("sequential/norm/moving_variance", "mean")
    assert var[0] == 1.0 and var[-1] != 1.0

    assert weighttui.open(tmp_path / "trainable.wtui").tensor_names == trainable_paths
    assert weighttui.open(tmp_path / "chosen.wtui").tensor_names == [
        "sequential/norm/gamma", "sequential/norm/beta", "sequential/head/kernel", "sequential/head/bias"]
    assert weighttui.open(tmp_path / "glob.wtui").tensor_names == [
        "sequential/hidden/kernel", "sequential/hidden/bias", "sequential/head/kernel", "sequential/head/bias"]


def test_one_neuron_learns_tanh_of_sum_recorded_every_batch(tmp_path):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(256, 2)).astype("float32")
    y = np.tanh(x[:, :1] + x[:, 1:]).astype("float32")
    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.Dense(1, activation="tanh", kernel_initializer="zeros", name="dense")],
                             name="sequential")
    model.compile(keras.optimizers.SGD(learning_rate=0.5), "mse")
    path = tmp_path / "neuron.wtui"
    model.fit(x, y, batch_size=16, epochs=15, verbose=0, shuffle=True,
              callbacks=[WeightCallback(path, every_batches=1)])

    run = weighttui.open(path)
    batches = 15 * 256 // 16
    assert run.steps.tolist() == list(range(0, batches + 1))  # initial + every batch
    steps, kernel = run.samples("sequential/dense/kernel")
    assert kernel.shape == (batches + 1, 2)
    assert np.all(kernel[0] == 0) and np.all(np.abs(kernel[:3] - 1.0) > 0.5)  # starts far from 1 ...
    assert np.all(np.abs(kernel[-20:] - 1.0) < 0.05)  # ... and converges to it
    _, bias = run.samples("sequential/dense/bias")
    assert abs(bias[-1, 0]) < 0.05
    # per-batch scalars: Keras' running epoch loss, the learning rate
    loss_steps, loss = run.scalars("loss")
    assert loss_steps.size >= batches and loss[-1] < loss[0]
    assert np.allclose(run.scalars("learning_rate")[1], 0.5)
    # the recorded sample is the weight itself, bit for bit
    assert np.array_equal(kernel[-1], model.get_weights()[0].reshape(-1))


def test_weights_changing_stats_deltas_and_final_histograms(tmp_path):
    keras.utils.set_random_seed(4)
    x, y = regression(n=96, d=6)
    model = dense_model(6)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    path = tmp_path / "watch.wtui"
    model.fit(x, y, batch_size=32, epochs=5, verbose=0,
              callbacks=[WeightCallback(path, full_epochs=1, bins=32)])

    run = weighttui.open(path)
    name = "sequential/dense/kernel"
    steps, means = run.series(name, "mean")
    _, stds = run.series(name, "std")
    _, max_change = run.series(name, "max_abs", kind="delta")
    assert steps.tolist() == [0, 3, 6, 9, 12, 15]
    assert np.isnan(max_change[0])  # nothing to compare the first snapshot with
    for i, epoch in enumerate(range(5), start=1):
        now = run.weights(epoch=epoch)[name]
        ref = weight_stats(now)
        assert means[i] == pytest.approx(ref[0], rel=1e-12)
        assert stds[i] == pytest.approx(ref[1], rel=1e-12)
        if epoch:
            before = run.weights(epoch=epoch - 1)[name].astype(np.float64)
            assert max_change[i] == pytest.approx(np.abs(now - before).max(), rel=1e-12)
            assert max_change[i] > 0
    _, lo, hi, counts = run.histograms(name)
    final = model.get_weights()[0]
    ref_lo, ref_hi, ref_counts = histogram(final, 32)
    assert (lo[-1], hi[-1]) == (ref_lo, ref_hi)
    assert counts[-1].tolist() == ref_counts.tolist()
    assert counts[-1].sum() == final.size


def test_scalars_follow_history_and_learning_rate_schedule(tmp_path):
    keras.utils.set_random_seed(5)
    x, y = regression(n=80)
    model = dense_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(schedule), "mse", metrics=["mae"])
    path = tmp_path / "scalars.wtui"
    hist = model.fit(x[:64], y[:64], batch_size=16, epochs=3, verbose=0,
                     validation_data=(x[64:], y[64:]), callbacks=[WeightCallback(path)])
    run = weighttui.open(path)
    assert {"loss", "mae", "val_loss", "val_mae", "learning_rate"} <= set(run.scalar_names)
    for key in ("loss", "mae", "val_loss", "val_mae"):
        steps, values = run.scalars(key)
        assert steps.tolist() == [4, 8, 12]
        assert values.tolist() == [float(np.float32(v)) for v in hist.history[key]]
    _, lr = run.scalars("learning_rate")
    assert lr == pytest.approx([0.1 * 0.5 ** (s / 2) for s in (4, 8, 12)], rel=1e-6)


def test_functional_and_subclassed_models_use_variable_paths_and_layer_names(tmp_path):
    keras.utils.set_random_seed(6)
    x, y = regression()

    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="enc")(inp)
    block = keras.Sequential([keras.layers.Dense(3, name="inner")], name="block")
    out = keras.layers.Dense(1, name="out")(block(h))
    functional = keras.Model(inp, out, name="func")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.a = keras.layers.Dense(6, activation="relu", name="a")
            self.b = keras.layers.Dense(1, name="b")

        def call(self, t):
            return self.b(self.a(t))

    sub = Sub()  # not built until fit runs
    for model, tag in ((functional, "func"), (sub, "sub")):
        model.compile("adam", "mse")
        path = tmp_path / f"{tag}.wtui"
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[WeightCallback(path, full_epochs=[1], layers=None)])
        run = weighttui.open(path)
        assert run.tensor_names == [v.path for v in model.weights]
        stored = run.weights(epoch=1)
        for v, expected in zip(model.weights, model.get_weights(), strict=True):
            assert np.array_equal(stored[v.path], expected)
        layers = {t.name: t.layer for t in run.tensors}
        if tag == "func":
            assert layers["enc/kernel"] == "enc"
            assert layers["block/inner/kernel"] == "inner"
            assert layers["out/bias"] == "out"
            # an enclosing model name selects what it contains
            sel = tmp_path / "block.wtui"
            model.fit(x, y, epochs=1, verbose=0, callbacks=[WeightCallback(sel, layers="block")])
            assert weighttui.open(sel).tensor_names == ["block/inner/kernel", "block/inner/bias"]
        else:
            assert layers == {"sub/a/kernel": "a", "sub/a/bias": "a", "sub/b/kernel": "b", "sub/b/bias": "b"}
            # weights that fit creates inside its first step exist only after it: no initial snapshot
            assert run.n == 2 and run.epochs.tolist() == [0, 1]


def test_steps_count_batches_across_fits_and_steps_per_execution(tmp_path):
    keras.utils.set_random_seed(7)
    x, y = regression(n=96)
    model = dense_model()
    model.compile("sgd", "mse", steps_per_execution=2)
    path = tmp_path / "steps.wtui"
    cb = WeightCallback(path, every_batches=4)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])  # 12 batches an epoch
    first = weighttui.open(path)
    assert first.steps.tolist() == [0, 4, 8, 12, 16, 20, 24]
    assert first.epochs.tolist() == [-1, 0, 0, 0, 1, 1, 1]
    # a second fit with the same callback: a new run in the same log, steps go on, from the weights the
    # first fit left (so its first snapshot has an update to show)
    model.fit(x, y, batch_size=8, epochs=1, initial_epoch=0, verbose=0, callbacks=[cb])
    second = weighttui.open(path)
    assert len(second.runs) == 2
    assert second.steps.tolist() == [24, 28, 32, 36]
    assert second.status == "finished"
    name = second.tensor_names[0]
    assert np.isfinite(second.series(name, "ratio", kind="delta")[1][1:]).all()
    np.testing.assert_array_equal(second.series(name, "norm")[1][0], first.series(name, "norm")[1][-1])


def test_custom_training_loop_records_gradients(tmp_path):
    keras.utils.set_random_seed(8)
    x, y = regression()
    model = dense_model()
    model.build((None, 4))
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.MeanSquaredError()
    path = tmp_path / "loop.wtui"
    cb = WeightCallback(path, bins=16)
    cb.set_model(model)
    taken = {}
    for step in range(1, 4):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        cb.record(step, grads=zip(grads, model.trainable_variables, strict=True), logs={"loss": loss})
        taken[step] = [g.numpy() for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    cb.close()

    run = weighttui.open(path)
    assert run.steps.tolist() == [1, 2, 3]
    assert run.has_kind("grad")
    names = [v.path for v in model.trainable_variables]
    for i, name in enumerate(names):
        _, gnorm = run.series(name, "norm", kind="grad")
        _, gmean = run.series(name, "mean", kind="grad")
        for row, step in enumerate((1, 2, 3)):
            ref = weight_stats(taken[step][i])
            assert gnorm[row] == pytest.approx(ref[5], rel=1e-12)
            assert gmean[row] == pytest.approx(ref[0], rel=1e-12, abs=1e-15)
    _, loss = run.scalars("loss")
    assert loss.size == 3 and loss[-1] < loss[0]


def _sgd_fit(path, optimizer, *, epochs=2, every_batches=1, **options):
    keras.utils.set_random_seed(3)
    x, y = regression(n=64)
    model = dense_model()
    model.compile(optimizer, "mse")
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
              callbacks=[WeightCallback(path, every_batches=every_batches, **options)])
    return model, weighttui.open(path)


def _grad_and_update_norms(run, name):
    gsteps, g = run.series(name, "norm", kind="grad")
    dsteps, d = run.series(name, "norm", kind="delta")
    covered = ~np.isnan(g)
    return gsteps[covered], g[covered], dict(zip(dsteps.tolist(), d.tolist(), strict=True))


@pytest.mark.parametrize("opt", ["sgd", "clipnorm", "clipvalue", "loss_scale"])
def test_sgd_update_norm_is_lr_times_the_gradient_norm_inside_fit(tmp_path, opt):
    """Gradients inside plain model.fit (no custom train_step): for SGD the update
    between two consecutive batches is -lr * the gradient applied, so the logged
    update norm equals lr x the logged gradient norm at every batch; with clipping
    the logged gradient is the clipped one, under a LossScaleOptimizer the unscaled one."""
    lr = 0.1
    make = {
        "sgd": lambda: keras.optimizers.SGD(lr),
        "clipnorm": lambda: keras.optimizers.SGD(lr, clipnorm=0.05),
        "clipvalue": lambda: keras.optimizers.SGD(lr, clipvalue=0.01),
        "loss_scale": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr), initial_scale=1024.0),
    }[opt]
    model, run = _sgd_fit(tmp_path / "run.wtui", make())
    assert run.has_kind("grad")
    for name in run.tensor_names:
        steps, g, d = _grad_and_update_norms(run, name)
        assert steps.tolist() == list(range(1, 9)), name  # every batch of 2 epochs x 4 batches
        for step, gnorm in zip(steps.tolist(), g.tolist(), strict=True):
            assert d[step] == pytest.approx(lr * gnorm, rel=1e-4), (name, step)
        if opt == "clipnorm":
            assert g.max() <= 0.05 * (1 + 1e-6), name
        if opt == "clipvalue":
            _, gmax = run.series(name, "max", kind="grad")
            _, gmin = run.series(name, "min", kind="grad")
            assert np.nanmax(gmax) <= 0.01 + 1e-9 and np.nanmin(gmin) >= -0.01 - 1e-9, name


def test_gradients_at_epoch_ends_and_after_an_earlier_fit(tmp_path):
    """With the default schedule (epoch ends) the gradient of each epoch's last batch
    is recorded with the epoch's snapshot, also when the model was fit before without
    the callback (its traced train function is rebuilt); grads=False records none."""
    keras.utils.set_random_seed(4)
    x, y = regression(n=64)
    model = dense_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # traced without weighttui
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[WeightCallback(tmp_path / "a.wtui")])
    run = weighttui.open(tmp_path / "a.wtui")
    steps, g = run.series("sequential/dense/kernel", "norm", kind="grad")
    assert steps[~np.isnan(g)].tolist() == [4, 8, 12]
    assert np.all(g[~np.isnan(g)] > 0)
    # a later fit with a new callback reuses the wrapper: no new trace, gradients again
    traced = model.train_function
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[WeightCallback(tmp_path / "c.wtui")])
    assert model.train_function is traced
    steps, g = weighttui.open(tmp_path / "c.wtui").series("sequential/dense/kernel", "norm", kind="grad")
    assert steps[~np.isnan(g)].tolist() == [4, 8]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[WeightCallback(tmp_path / "b.wtui", grads=False)])
    assert not weighttui.open(tmp_path / "b.wtui").has_kind("grad")


def test_recorder_snapshot_accepts_tf_variables_and_tensors(tmp_path):
    v = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    g = tf.constant(np.full((2, 3), 0.5, dtype=np.float32))
    with weighttui.Recorder(tmp_path / "r.wtui", full_every=1) as rec:
        assert rec.snapshot(1, {"w": v}, grads={"w": g})
    run = weighttui.open(tmp_path / "r.wtui")
    assert np.array_equal(run.weights(step=1)["w"], v.numpy())
    assert run.series("w", "mean", kind="grad")[1][0] == 0.5


@pytest.mark.parametrize("stats", ["numpy", "device"])
def test_a_failure_inside_weighttui_never_reaches_fit(tmp_path, monkeypatch, capfd, stats):
    import weighttui.integrations.keras as wk

    keras.utils.set_random_seed(9)
    x, y = regression()
    model = dense_model()
    model.compile("sgd", "mse")
    path = tmp_path / "broken.wtui"
    cb = WeightCallback(path, every_batches=1, stats=stats)

    def broken(*args):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(wk, "_host_array", broken)  # the numpy path (one variable)
    monkeypatch.setattr(wk, "_read_host", broken)  # the numpy path (all variables in one TF call)
    monkeypatch.setattr(wk, "_tf_value", broken)  # the TF-ops path
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 3  # training ran to the end
    err = capfd.readouterr().err
    # once per hook kind (begin, batch, epoch, final snapshot), not per call
    assert err.count("injected failure") == 4
    run = weighttui.open(path)
    assert run.n == 0 and run.status == "finished"
    assert any(e.kind == "recorder_error" and "injected failure" in e.message for e in run.events)
    assert run.scalar_names  # what could be recorded still was


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_never_reaches_fit(capfd):
    keras.utils.set_random_seed(10)
    x, y = regression()
    model = dense_model()
    model.compile("sgd", "mse")
    cb = WeightCallback("/dev/full", every_batches=1, full_epochs=1)
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 2
    assert not cb.recorder.active
    assert "No space left" in capfd.readouterr().err


def test_bad_options_fail_at_construction(tmp_path):
    with pytest.raises(ValueError):
        WeightCallback(tmp_path / "a.wtui", every_batches=0)
    with pytest.raises(TypeError):
        WeightCallback(tmp_path / "b.wtui", every=5)
    with pytest.raises(ValueError):
        WeightCallback(tmp_path / "c.wtui", epochs=0)
    with pytest.raises(ValueError):
        WeightCallback(tmp_path / "d.wtui", bins=0)


def test_device_statistics_match_the_numpy_reference_on_the_same_fit(tmp_path):
    keras.utils.set_random_seed(11)
    x, y = regression(n=64, d=5)
    model = keras.Sequential(name="sequential", layers=[
        keras.Input((5,)), keras.layers.Dense(16, activation="relu", name="a"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1, name="b")])
    model.compile(keras.optimizers.Adam(0.02), "mse")
    kw = dict(every_batches=1, trainable_only=False, full_epochs=[1], bins=16)
    device = WeightCallback(tmp_path / "device.wtui", stats="device", **kw)
    reference = WeightCallback(tmp_path / "numpy.wtui", stats="numpy", **kw)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[device, reference])
    a, b = weighttui.open(tmp_path / "device.wtui"), weighttui.open(tmp_path / "numpy.wtui")
    assert a.tensor_names == b.tensor_names and a.steps.tolist() == b.steps.tolist()
    assert a.n == 9
    for kind in ("weights", "delta"):
        for stat in a.columns(kind):
            ma, mb = a.stat_matrix(kind, stat), b.stat_matrix(kind, stat)
            np.testing.assert_allclose(ma, mb, rtol=1e-12, atol=1e-15, equal_nan=True, err_msg=f"{kind} {stat}")
        for name in a.tensor_names:
            ha, hb = a.histograms(name, kind), b.histograms(name, kind)
            for pa, pb in zip(ha, hb, strict=True):
                np.testing.assert_array_equal(pa, pb, err_msg=f"{kind} histogram {name}")
    for name in a.tensor_names:
        np.testing.assert_array_equal(a.samples(name)[1], b.samples(name)[1])
        assert a.weights(epoch=1)[name].tobytes() == b.weights(epoch=1)[name].tobytes()
    assert np.nanmax(a.stat_matrix("delta", "max_abs")) > 0


def test_device_statistics_edge_cases_match_the_reference():
    from weighttui.integrations.keras_tf_stats import TFStats
    from weighttui.record.stats import delta_stats, weights_block

    rng = np.random.default_rng(12)
    now = [
        rng.normal(size=(40, 30)).astype(np.float32),
        np.zeros(5, np.float32),  # lo == hi: every value in the middle bin
        np.array([np.nan, 1, np.inf, -2, 0, -np.inf], np.float32),  # counted, not used
        np.array([np.nan, np.nan], np.float32),  # nothing finite
        rng.uniform(-1, 1, size=300).astype(np.float16),
        np.linspace(-1, 1, 33).astype(np.float32),  # values exactly on bin edges
    ]
    prev = [a + rng.normal(scale=1e-3, size=a.shape).astype(a.dtype) for a in now]
    prev[1] = now[1].copy()  # unchanged: zero delta
    idx = [np.arange(min(8, a.size)) for a in now]
    stats = TFStats(32, idx, delta=True)
    has_prev = [True] * (len(now) - 1) + [False]
    weights, delta, sample = stats([tf.constant(a) for a in now], [tf.constant(p) for p in prev], has_prev)

    ref = weights_block(now, 32)
    np.testing.assert_allclose(weights.stats, ref.stats, rtol=1e-12, atol=0, equal_nan=True)
    for got, want in zip(weights.hist, ref.hist, strict=True):
        np.testing.assert_array_equal(got, want)
    for i, (a, p) in enumerate(zip(now, prev, strict=True)):
        if has_prev[i]:
            with np.errstate(invalid="ignore"):  # NaN - NaN is the point of the case
                d = a.astype(np.float64) - p.astype(np.float64)
                ref_delta = delta_stats(a, p)
            np.testing.assert_allclose(delta.stats[i], ref_delta, rtol=1e-12, atol=0, equal_nan=True)
            both = np.isfinite(a) & np.isfinite(p)
            lo, hi, counts = histogram(d[both], 32)
            assert delta.hist[2][i].tolist() == counts.tolist()
            if both.any():
                assert (delta.hist[0][i], delta.hist[1][i]) == (lo, hi)
        else:
            assert np.isnan(delta.stats[i]).all() and delta.hist[2][i].sum() == 0
    want = np.concatenate([a.reshape(-1)[j] for a, j in zip(now, idx, strict=True)]).astype(np.float32)
    np.testing.assert_array_equal(sample, want)


@pytest.mark.parametrize("data", ["filtered tf.data", "generator"])
def test_epoch_end_gradients_of_data_of_unknown_length(tmp_path, data):
    """fit asks one batch more than data of unknown length holds (the call that runs out of it never ends):
    the epoch-end snapshot still has the last batch's gradients. SGD: the gradient is the weights' change / lr."""
    lr = 0.05
    keras.utils.set_random_seed(3)
    x, y = regression(n=64)
    model = dense_model()
    model.compile(keras.optimizers.SGD(lr), "mse")
    ends: dict[int, list] = {}

    class Ends(keras.callbacks.Callback):
        step = 0

        def on_train_batch_end(self, batch, logs=None):
            Ends.step += 1
            ends[Ends.step] = [np.array(w, dtype=np.float64) for w in model.trainable_weights]

    if data == "generator":
        source, epochs = ((x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)), 1
    else:
        import tensorflow as tf

        source = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)  # length unknown
        epochs = 2
    path = tmp_path / "run.wtui"
    model.fit(source, epochs=epochs, verbose=0, callbacks=[Ends(), WeightCallback(path)])
    run = weighttui.open(path)
    assert run.steps.tolist() == [0, 4, 8][:epochs + 1]
    for k, name in enumerate(n for n in run.tensor_names):
        steps, g = run.series(name, "norm", kind="grad")
        for s, gnorm in zip(steps.tolist()[1:], g.tolist()[1:], strict=True):
            assert gnorm == pytest.approx(np.linalg.norm(ends[s - 1][k] - ends[s][k]) / lr, rel=1e-4), (name, s)


def test_gradients_of_a_model_that_fit_builds(tmp_path):
    """No keras.Input: the weights are made by fit's first batch, after on_train_begin; the gradients are
    recorded from the next batch on (the update is lr x the gradient, SGD)."""
    lr = 0.05
    keras.utils.set_random_seed(3)
    x, y = regression(n=64)
    model = keras.Sequential([keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(lr), "mse")
    path = tmp_path / "run.wtui"
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[WeightCallback(path, every_batches=1)])
    run = weighttui.open(path)
    assert run.has_kind("grad")
    for name in run.tensor_names:
        steps, g, d = _grad_and_update_norms(run, name)
        assert steps.tolist() == list(range(2, 9)), name  # the first batch built the weights
        for step, gnorm in zip(steps.tolist(), g.tolist(), strict=True):
            assert d[step] == pytest.approx(lr * gnorm, rel=1e-4), (name, step)
