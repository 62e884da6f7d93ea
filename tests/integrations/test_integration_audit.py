"""PyTorch and Keras loops off the common path, checked against the model itself: an eleventh-session audit
of issues 3 and 4 (each test is a case the audit found)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import weighttui
import weighttui.torch as wtorch


def test_gradients_of_a_closure_step_are_those_the_step_used(tmp_path):
    """optimizer.step(closure) computes the gradients inside the step: the log held the previous step's."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    path = tmp_path / "closure.wtui"
    used = {}
    with wtorch.watch(lin, path, optimizer=opt):
        for step in range(1, 5):
            x, y = torch.randn(8, 4), torch.randn(8, 1)

            def closure(step=step, x=x, y=y):
                opt.zero_grad()
                loss = (lin(x) - y).pow(2).mean()
                loss.backward()
                used[step] = lin.weight.grad.double().norm().item()
                return loss

            opt.step(closure)
    steps, norms = weighttui.open(path, cache=False).series("weight", "norm", kind="grad")
    got = {int(s): float(v) for s, v in zip(steps, norms, strict=True) if s > 0}
    assert got == pytest.approx(used, rel=1e-6)


def test_a_sparse_embedding_gradient_costs_no_other_tensor_its_statistics(tmp_path, capsys):
    """nn.Embedding(sparse=True): `reshape is not implemented for sparse tensors` dropped the gradient
    statistics of every tensor at every step. The sparse gradient is read as the dense one it stands for."""
    torch.manual_seed(0)
    emb, out = torch.nn.Embedding(50, 8, sparse=True), torch.nn.Linear(8, 3)
    model = torch.nn.Sequential(emb, out)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "sparse.wtui"
    with wtorch.watch(model, path, optimizer=opt):
        for _ in range(3):
            i = torch.randint(0, 50, (16,))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(i), i % 3).backward()
            want = {"0.weight": emb.weight.grad.to_dense().double().norm().item(),
                    "1.weight": out.weight.grad.double().norm().item()}
            opt.step()
    assert "skipped" not in capsys.readouterr().err
    run = weighttui.open(path, cache=False)
    for name, norm in want.items():
        assert run.series(name, "norm", kind="grad")[1][-1] == pytest.approx(norm, rel=1e-6)


def test_a_model_cast_to_float64_after_watch_is_declared_so_and_its_updates_exact(tmp_path):
    """model.to(torch.float64) after watch(): the previous copy stayed float32 (each new value rounded into
    it), so an unchanged tensor reported changed_frac 1.0, and the log still said float32."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    path = tmp_path / "cast.wtui"
    before = {}
    with wtorch.watch(lin, path, optimizer=opt) as handle:
        for step in range(1, 5):
            if step == 2:
                lin.to(torch.float64)
            before[step] = lin.weight.detach().double().clone()
            opt.zero_grad()
            if step != 4:  # step 4: no gradient, so the weights do not move
                lin(torch.randn(4, 6, dtype=lin.weight.dtype)).sum().backward()
            opt.step()
        handle.close()
    run = weighttui.open(path, cache=False)
    assert [(t.name, t.dtype) for t in run._r.by_id.values() if t.name == "weight"] == [("weight", "float32"),
                                                                                  ("weight", "float64")]
    assert any(e.kind == "tensor_reshaped" and "dtype from float32 to float64" in e.message for e in run.events)
    steps, changed = run.series("weight", "changed_frac", kind="delta")
    _s, max_abs = run.series("weight", "max_abs", kind="delta")
    at = dict(zip(steps.tolist(), range(len(steps)), strict=True))
    assert changed[at[4]] == 0.0 and max_abs[at[4]] == 0.0
    want = float(np.abs((before[4] - before[3]).numpy()).max())  # step 3's update, in float64
    assert max_abs[at[3]] == want


KERAS_UNFREEZE = """
    import sys
    import numpy as np, keras, weighttui
    from weighttui.keras import WeightCallback
    path = sys.argv[1]
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="base")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(hidden))
    x = np.random.RandomState(0).randn(32, 6).astype("float32")
    y = np.random.RandomState(1).randn(32, 2).astype("float32")
    rec = weighttui.Recorder(path)
    cb = WeightCallback(rec, every_batches=2)
    model.get_layer("base").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    model.get_layer("base").trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    rec.close()
"""


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_keras_layers_unfrozen_between_fits_are_recorded_with_an_owned_recorder(tmp_path, backend):
    """The fine-tuning recipe with a Recorder the caller owns: the unfrozen base was never recorded in the
    second fit (the selection was cached by the number of weights alone)."""
    path = tmp_path / f"unfreeze_{backend}.wtui"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KERAS_UNFREEZE), str(path)], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr
    run = weighttui.open(path, cache=False)
    assert set(run.tensor_names) == {"base/kernel", "base/bias", "head/kernel", "head/bias"}
    steps, norms = run.series("base/kernel", "norm", kind="grad")
    assert steps.tolist() == [6, 8] and np.isfinite(norms).all() and (norms > 0).all()


KERAS_PARTLY_BUILT = """
    import sys
    import numpy as np, keras, weighttui
    from weighttui.keras import WeightCallback
    path = sys.argv[1]
    keras.utils.set_random_seed(0)

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.emb = keras.layers.Dense(8, name="emb")
            self.head = keras.layers.Dense(2, name="head")

        def call(self, x):
            return self.head(keras.ops.tanh(self.emb(x)))

    model = Net()
    model.emb.build((None, 6))  # built before fit (pretrained weights loaded into it, say); head is built by fit
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.RandomState(0).randn(32, 6).astype("float32")
    y = np.random.RandomState(1).randn(32, 2).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[WeightCallback(path, every_batches=1)])
"""


def test_keras_weights_fit_builds_beside_built_ones_are_recorded_with_their_gradients(tmp_path):
    """On TensorFlow, weights that fit's first step creates while others exist got no gradient for the whole fit
    and were missing from every batch snapshot (docs/keras.md: gradients from the second batch on)."""
    path = tmp_path / "partly.wtui"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KERAS_PARTLY_BUILT), str(path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr
    run = weighttui.open(path, cache=False)
    steps, _ = run.series("net/head/kernel", "norm")
    assert steps.tolist() == [1, 2, 3, 4]
    g_steps, g_norm = run.series("net/head/kernel", "norm", kind="grad")
    d_steps, d_norm = run.series("net/head/kernel", "norm", kind="delta")
    grads = dict(zip(g_steps.tolist(), g_norm.tolist(), strict=True))
    deltas = dict(zip(d_steps.tolist(), d_norm.tolist(), strict=True))
    assert all(np.isfinite(grads[s]) for s in (2, 3, 4))
    for s in (2, 3, 4):  # plain SGD: the update is lr times the gradient the optimizer applied
        assert deltas[s] == pytest.approx(0.1 * grads[s], rel=1e-5)


@pytest.mark.parametrize("every", [1, 2])
def test_weights_at_an_epoch_marked_by_step_epoch_with_a_hooked_optimizer(tmp_path, every):
    """With the optimizer hooked, the first step of epoch N+1 is recorded before step(epoch=N+1) names it, so
    one snapshot after epoch N's values is tagged N: weights(epoch=N) must still give them (docs/core.md)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(40, 4), torch.randn(40, 1)
    path = tmp_path / "step_epoch.wtui"
    ends = {}
    handle = wtorch.watch(model, path, optimizer=opt, every=every, full_epochs=[0, 1])
    for epoch in range(2):
        for i in range(5):
            opt.zero_grad()
            ((model(x[i * 8:i * 8 + 8]) - y[i * 8:i * 8 + 8]) ** 2).mean().backward()
            opt.step()
            handle.step(epoch=epoch)
        ends[epoch] = model.weight.detach().clone().numpy()
    handle.close()
    run = weighttui.open(path, cache=False)
    for epoch in (0, 1):
        assert np.array_equal(run.weights(epoch=epoch)["weight"], ends[epoch])


TINY_W = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)


def _tiny_grads(tiny: float) -> np.ndarray:
    g = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    g[3] = tiny  # unit 3: a tiny gradient, not zero (float32's normal range)
    g[5] = 0.0  # unit 5: dead
    return g


@pytest.mark.parametrize("path_kind", ["numpy", "jax-host", "jax-device", "torch-fused", "torch-ops"])
def test_a_tiny_gradient_is_not_a_dead_unit_on_any_path(tmp_path, path_kind):
    """The float32 norm of a row of 1e-25 underflowed to 0 on every path but the fused kernel: that unit
    counted as dead (docs/FORMAT.md: a gradient row *exactly* zero) and its stored norm read 0."""
    from weighttui.data.units import unit_norms

    tiny = 1e-25
    path = tmp_path / f"{path_kind}.wtui"
    name = "w"
    if path_kind == "numpy":
        rec = weighttui.Recorder(path, instruments=True)
        for s in range(5):
            rec.snapshot(s, {"w": TINY_W + s * 1e-3}, grads={"w": _tiny_grads(tiny)})
        rec.close()
    elif path_kind.startswith("jax"):
        pytest.importorskip("jax")
        import jax.numpy as jnp

        import weighttui.jax as wjax

        rec = wjax.recorder(path, instruments=True)
        for s in range(5):
            wjax.snapshot(rec, s, {"w": jnp.asarray(TINY_W + s * 1e-3)}, grads={"w": jnp.asarray(_tiny_grads(tiny))},
                          stats=path_kind.split("-")[1])
        rec.close()
    else:
        lin = torch.nn.Linear(64, 8, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(TINY_W))
        opt = torch.optim.SGD(lin.parameters(), lr=1e-3)
        handle = wtorch.watch(lin, path, optimizer=opt, instruments=True,
                              cpu_kernel="fused" if path_kind == "torch-fused" else "torch")
        for _ in range(5):
            lin.weight.grad = torch.from_numpy(_tiny_grads(tiny))
            opt.step()
        handle.close()
        name = "weight"
    run = weighttui.open(path, cache=False)
    _steps, dead = run.series(name, "dead_units", kind="grad")
    assert dead[-1] == 1  # unit 5 only
    _s, norms = unit_norms(path, name, "grad")
    assert norms[-1][3] == pytest.approx(tiny * 8, rel=1e-2) and norms[-1][5] == 0


def test_a_tiny_second_moment_is_not_zero_on_the_device_path(tmp_path):
    """JAX's stats="device" recorded v_norm 0 for an Adam second moment of 1e-26 per element (float32
    squares underflow); the host path had it right."""
    pytest.importorskip("jax")
    import jax.numpy as jnp

    import weighttui.jax as wjax

    w = jnp.ones((16, 16))
    v = jnp.full((16, 16), 1e-26)
    got = {}
    for stats in ("host", "device"):
        path = tmp_path / f"{stats}.wtui"
        rec = wjax.recorder(path, instruments=True)
        optim = {"w": {"m": w * 1e-3, "v": v, "lr": 1e-3, "step": 1.0, "beta2": 0.999, "eps": 1e-8}}
        wjax.snapshot(rec, 0, {"w": w}, stats=stats, optim=optim)
        rec.close()
        got[stats] = weighttui.open(path, cache=False).series("w", "v_norm", kind="optim")[1][-1]
    assert got["device"] == pytest.approx(got["host"], rel=1e-5) and got["host"] == pytest.approx(16e-26, rel=1e-5)
