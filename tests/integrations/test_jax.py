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
