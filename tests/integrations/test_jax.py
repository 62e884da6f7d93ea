"""weighttui.jax: a parameter pytree recorded from a real (tiny) JAX SGD loop."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import weighttui  # noqa: E402
import weighttui.jax as wj  # noqa: E402

LR = 0.1


def mlp_loss(params, x, y):
    h = x
    for layer in params["layers"]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    pred = h @ params["head"]["w"]
    return jnp.mean((pred - y) ** 2)


def test_sgd_loop_with_names_from_tree_paths(tmp_path):
    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"layers": [{"w": jax.random.normal(k1, (4, 8)) * 0.5, "b": jnp.zeros(8)},
                         {"w": jax.random.normal(k2, (8, 8)) * 0.5, "b": jnp.zeros(8)}],
              "head": {"w": jax.random.normal(k3, (8, 1)) * 0.5}}
    x = jax.random.normal(k4, (32, 4))
    y = jnp.sin(x.sum(axis=1, keepdims=True))
    grad_fn = jax.jit(jax.value_and_grad(mlp_loss))
    rec = wj.recorder(tmp_path / "run.wtui", every=2, full_every=6, bins=16)
    taken, reference = [], {}
    wj.snapshot(rec, 0, params)
    for step in range(1, 7):
        loss, grads = grad_fn(params, x, y)
        params = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
        if wj.snapshot(rec, step, params, grads=grads, scalars={"loss": loss}):
            taken.append(step)
            reference[step] = {k: np.asarray(v) for k, v in wj.named_leaves(grads).items()}
    rec.close()

    run = weighttui.open(tmp_path / "run.wtui")
    assert taken == [2, 4, 6] and run.steps.tolist() == [0, 2, 4, 6]
    assert run.run.framework.startswith("jax ")
    assert run.tensor_names == ["head/w", "layers/0/b", "layers/0/w", "layers/1/b", "layers/1/w"]
    assert run.tensor("layers/1/w").layer == "layers/1" and run.tensor("layers/1/w").shape == (8, 8)
    for name in run.tensor_names:
        steps, norms = run.series(name, "norm", "grad")
        steps, norms = steps[~np.isnan(norms)], norms[~np.isnan(norms)]  # step 0 had no gradient
        assert steps.tolist() == [2, 4, 6]
        np.testing.assert_allclose(norms, [np.linalg.norm(reference[s][name]) for s in steps], rtol=1e-5)
    final = run.weights(step=6)
    for name, leaf in wj.named_leaves(params).items():
        np.testing.assert_array_equal(final[name], np.asarray(leaf))
    assert run.scalars("loss")[0].tolist() == [1, 2, 3, 4, 5, 6]


def test_bfloat16_leaves_keep_their_dtype_name(tmp_path):
    params = {"emb": jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4)}
    rec = wj.recorder(tmp_path / "bf16.wtui")
    assert wj.snapshot(rec, 0, params)
    rec.close()
    run = weighttui.open(tmp_path / "bf16.wtui")
    assert run.tensor("emb").dtype == "bfloat16"
    assert run.series("emb", "max")[1].tolist() == [11.0]


def test_bad_input_is_reported_not_raised(tmp_path, capsys):
    class Broken:
        shape = (2,)
        dtype = "float32"

        def __array__(self, *a, **k):
            raise RuntimeError("device lost")

    rec = wj.recorder(tmp_path / "bad.wtui")
    # gradients for other names than the parameters: recorded without gradients
    assert wj.snapshot(rec, 0, {"w": jnp.ones(3)}, grads={"other": jnp.ones(3)})
    assert wj.snapshot(rec, 1, {"w": Broken()}) is False
    assert wj.snapshot(rec, 2, {"w": Broken()}) is False
    assert wj.snapshot(rec, 3, {"w": jnp.full(3, 2.0)})
    rec.close()
    err = capsys.readouterr().err
    assert "device lost" in err
    run = weighttui.open(tmp_path / "bad.wtui")
    assert run.steps.tolist() == [0, 3] and np.isnan(run.stat_matrix("grad", "norm")).all()


def test_flax_linen_parameter_names(tmp_path):
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(4)(x)))

    variables = Net().init(jax.random.PRNGKey(0), jnp.ones((1, 3)))
    rec = wj.recorder(tmp_path / "flax.wtui")
    wj.snapshot(rec, 0, variables)
    rec.close()
    run = weighttui.open(tmp_path / "flax.wtui")
    assert sorted(run.tensor_names) == ["params/Dense_0/bias", "params/Dense_0/kernel",
                                        "params/Dense_1/bias", "params/Dense_1/kernel"]
    assert "flax" in run.run.framework


def _sgd_run(path, stats, steps=4, nan_at=None):
    """A small SGD loop recorded every step with the chosen statistics engine."""
    key = jax.random.PRNGKey(1)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"layers": [{"w": jax.random.normal(k1, (6, 300)) * 0.5, "b": jnp.ones(300)}],
              "head": {"w": jax.random.normal(k2, (300, 1)) * 0.5},
              "emb": jnp.linspace(-1, 1, 64, dtype=jnp.bfloat16),
              "count": jnp.arange(5, dtype=jnp.int32)}
    x = jax.random.normal(k3, (16, 6))

    def loss_fn(p):
        h = jnp.tanh(x @ p["layers"][0]["w"] + p["layers"][0]["b"])
        return jnp.mean((h @ p["head"]["w"]) ** 2) + jnp.sum(p["emb"].astype(jnp.float32) ** 2)

    grad_fn = jax.jit(jax.grad(loss_fn, allow_int=True))
    rec = wj.recorder(path, bins=32)
    for step in range(steps):
        grads = grad_fn(params)
        grads = {k: v for k, v in grads.items() if k != "count"}
        params = {"layers": [{"w": params["layers"][0]["w"] - LR * grads["layers"][0]["w"],
                              "b": params["layers"][0]["b"] - LR * grads["layers"][0]["b"]}],
                  "head": {"w": params["head"]["w"] - LR * grads["head"]["w"]},
                  "emb": (params["emb"] - LR * grads["emb"]).astype(jnp.bfloat16),
                  "count": params["count"] + 1}
        if step == nan_at:
            params["head"]["w"] = params["head"]["w"].at[3, 0].set(jnp.nan)
        assert wj.snapshot(rec, step, params, grads=grads, stats=stats, full=step == steps - 1)
    from weighttui.integrations import jax as integration

    assert (rec in integration._engines) == (stats == "device")  # the jnp engine ran (or did not)
    rec.close()
    return weighttui.open(path)


@pytest.mark.parametrize("nan_at", [None, 2])
def test_device_statistics_equal_the_host_kernel_path(tmp_path, nan_at):
    """stats="device" (jnp on the leaves' device, forced here on the CPU, one transfer per
    snapshot) logs what the host path (the fused kernel, the numpy reference for what
    it hands back) logs: histograms and counts exactly, statistics within 1e-9, for
    float32, bfloat16 and int32 leaves, exact deltas and gradients, a NaN included."""
    host = _sgd_run(tmp_path / "host.wtui", "host", nan_at=nan_at)
    dev = _sgd_run(tmp_path / "dev.wtui", "device", nan_at=nan_at)
    assert dev.tensor_names == host.tensor_names
    assert dev.tensor("emb").dtype == "bfloat16"
    for kind in ("weights", "delta", "grad"):
        assert dev.has_kind(kind) and host.has_kind(kind)
        for stat in dev.columns(kind):
            np.testing.assert_allclose(dev.stat_matrix(kind, stat), host.stat_matrix(kind, stat),
                                       rtol=1e-9, atol=1e-15, err_msg=f"{kind} {stat}")
        for name in dev.tensor_names:
            got, want = dev.histograms(name, kind), host.histograms(name, kind)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"{kind} {name}")
    for name in dev.tensor_names:
        np.testing.assert_array_equal(dev.samples(name)[1], host.samples(name)[1])
    last = dev.steps.tolist()[-1]
    for name, value in host.weights(step=last).items():
        np.testing.assert_array_equal(dev.weights(step=last)[name], value)
    if nan_at is not None:
        steps, nan = dev.series("head/w", "nan")
        assert nan[:3].tolist() == [0, 0, 1] and nan[3] > 1  # then it spreads through training


def test_host_path_reads_cpu_leaves_without_device_get(tmp_path, monkeypatch):
    """CPU leaves are numpy views into the kernel: no jax.device_get (a copy) at all."""
    monkeypatch.setattr(jax, "device_get", lambda *a, **k: (_ for _ in ()).throw(AssertionError("copied")))
    rec = wj.recorder(tmp_path / "v.wtui")
    assert wj.snapshot(rec, 0, {"w": jnp.ones((50, 50))}, grads={"w": jnp.full((50, 50), 0.5)})
    rec.close()
    assert weighttui.open(tmp_path / "v.wtui").series("w", "norm", "grad")[1].tolist() == [25.0]


def test_an_empty_leaf_has_the_same_update_ratio_on_both_paths(tmp_path):
    got = {}
    for mode in ("host", "device"):
        path = tmp_path / f"{mode}.wtui"
        rec = wj.recorder(path)
        for step in range(2):
            wj.snapshot(rec, step, {"empty": jnp.zeros((0, 3)), "w": jnp.ones(3) * (step + 1)}, stats=mode)
        rec.close()
        run = weighttui.open(path)
        got[mode] = (run.series("empty", "ratio", kind="delta")[1].tolist(),
                     run.series("w", "ratio", kind="delta")[1].tolist())
    assert np.isnan(got["host"][0]).all() and np.isnan(got["device"][0]).all()  # no ratio of nothing
    assert got["host"][1][1] == got["device"][1][1] == pytest.approx(1.0)


@pytest.mark.parametrize("stats", ["host", "device"])
def test_full_epochs_and_every_on_both_paths(tmp_path, stats):
    """full_epochs stores each chosen epoch's last call (values as they were then), and a chosen epoch's
    calls are snapshots only where `every` says, on the device path as on the host one."""
    path = tmp_path / "run.wtui"
    rec = wj.recorder(path, every=2, full_epochs=[0, 1], instruments=False)
    p = {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)}
    for step in range(1, 8):  # epochs of 3 calls: steps 1-3, 4-6, 7
        p = {"w": p["w"] + 1.0}
        wj.snapshot(rec, step, p, epoch=(step - 1) // 3, stats=stats)
    rec.close()
    run = weighttui.open(path)
    assert run.steps.tolist() == [2, 4, 6]
    assert run.full_steps == [3, 6]
    np.testing.assert_array_equal(run.weights(epoch=0)["w"], np.arange(6.0).reshape(2, 3) + 3)
    np.testing.assert_array_equal(run.weights(epoch=1)["w"], np.arange(6.0).reshape(2, 3) + 6)
