"""Instruments of weighttui.jax with stats="device" (jnp on the leaves' device, one host transfer per
snapshot; forced on the CPU as the other device-path tests do), against float64 references from the
complete values the same log stores, and against the host path on the same training."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from instrument_check import check_log, check_optim  # noqa: E402

import weighttui  # noqa: E402
import weighttui.jax as wj  # noqa: E402
from weighttui.record import instruments as inst  # noqa: E402

LR, B2, EPS = 3e-3, 0.999, 1e-8


def _loss(params, x, y):
    h = jnp.tanh(x @ params["l0"]["w"].T + params["l0"]["b"])
    h = jnp.tanh(h @ params["l1"]["w"].T)
    return jnp.mean((h @ params["head"]["w"].T - y) ** 2)


def _train(path, *, stats, steps=22, nan_at=None, **options):
    options.setdefault("instruments", True)
    options.setdefault("full_every", 1)
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    # l1: 96 x 96 = 9216 elements: sampled cosines (cos_sample 4096)
    params = {"l0": {"w": jax.random.normal(k[0], (96, 12)) * 0.3, "b": jnp.zeros(96)},
              "l1": {"w": jax.random.normal(k[1], (96, 96)) * 0.1},
              "head": {"w": jax.random.normal(k[2], (3, 96)) * 0.1}}
    x = jax.random.normal(k[3], (64, 12))
    y = jax.random.normal(k[4], (64, 3))
    opt = optax.adamw(LR, b2=B2, eps=EPS, weight_decay=0.01)
    state = opt.init(params)
    grad_fn = jax.jit(jax.value_and_grad(_loss))
    rec = wj.recorder(path, every=1, **options)
    wj.snapshot(rec, 0, params, stats=stats)
    grads_at = {}
    for step in range(1, steps + 1):
        _loss_v, grads = grad_fn(params, x, y)
        if nan_at == step:
            grads["l1"]["w"] = grads["l1"]["w"].at[2, 5].set(jnp.nan)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        grads_at[step] = {n: np.asarray(g, dtype=np.float64) for n, g in wj.named_leaves(grads).items()}
        assert wj.snapshot(rec, step, params, grads=grads, stats=stats,
                           optim=wj.adam_state(params, state, lr=LR, beta2=B2, eps=EPS))
    rec.close()
    return params, state, grads_at


def test_device_path_instruments_against_float64_references(tmp_path):
    path = tmp_path / "dev.wtui"
    params, state, grads = _train(path, stats="device")
    counts = check_log(path, grads, warm_after=12)
    assert counts["sigma_max"] >= 2 * 12 and counts["cos_grad"] >= 4 * 20 and counts["grad_units"] >= 3 * 20
    assert counts["sigma_ratio"] >= 3 * 10
    from weighttui.integrations.jax import _find_adam
    adam = _find_adam(state)
    mu, nu = wj.named_leaves(adam.mu), wj.named_leaves(adam.nu)
    check_optim(path, {n: (mu[n], nu[n], float(adam.count)) for n in mu}, lr=LR, beta2=B2, eps=EPS)
    run = weighttui.open(path)
    # alpha every 10 snapshots of matrices with >= 10 rows and columns, as the numpy path fits it
    steps, alpha = run.series("l1/w", "alpha")
    assert steps[np.isfinite(alpha)].tolist() == [0, 10, 20]
    w20 = run.weights(step=20)["l1/w"].astype(np.float64)
    assert alpha[20] == pytest.approx(inst.powerlaw_alpha(np.linalg.svd(w20, compute_uv=False) ** 2), rel=1e-3)
    assert not [e for e in run.events if e.kind == "nan_origin"]


def test_device_and_host_paths_write_the_same_columns(tmp_path):
    _train(tmp_path / "dev.wtui", stats="device", steps=6)
    _train(tmp_path / "host.wtui", stats="host", steps=6)
    dev, host = weighttui.open(tmp_path / "dev.wtui"), weighttui.open(tmp_path / "host.wtui")
    for kind in ("weights", "delta", "grad", "optim"):
        assert dev.columns(kind) == host.columns(kind), kind
    for name in dev.tensor_names:
        for stat, kind in (("dist_init", "weights"), ("sigma_max", "weights"), ("cos_prev", "delta"),
                           ("cos_grad", "delta"), ("m_norm", "optim"), ("eff_lr", "optim"),
                           ("exploding_units", "weights"), ("dead_units", "grad")):
            a, b = dev.series(name, stat, kind=kind)[1], host.series(name, stat, kind=kind)[1]
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, equal_nan=True, err_msg=f"{name} {stat}")


def test_nan_origin_on_the_device_path(tmp_path):
    path = tmp_path / "nan.wtui"
    _train(path, stats="device", steps=5, nan_at=3, instruments="default")
    run = weighttui.open(path)
    origins = [e for e in run.events if e.kind == "nan_origin"]
    assert len(origins) == 1
    ev = origins[0]
    assert ev.step == 3 and run.tensors[ev.tensor].name == "l1/w"
    assert "gradient of l1/w at flat index 197" in ev.message  # [2, 5] of 96 x 96
    # the default set: no spectral/distance/cosine columns, optimizer state and units are there
    assert "sigma_max" not in run.columns("weights") and "exploding_units" in run.columns("weights")
    assert run.has_kind("optim") and math.isfinite(run.series("l0/w", "m_norm", kind="optim")[1][1])


def test_device_path_takes_one_host_transfer_per_snapshot(tmp_path, monkeypatch):
    calls = []
    real = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: calls.append(1) or real(x))
    _train(tmp_path / "one.wtui", stats="device", steps=3, full_every=None)
    assert len(calls) == 4  # steps 0..3, every instrument on: statistics, gradients and instruments together


def test_bfloat16_leaves_on_the_device_path(tmp_path):
    # bfloat16 parameters: the instruments computed in float32 from the bfloat16 values the log stores
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    params = {"a": (jax.random.normal(k[0], (8, 6)) * 0.3).astype(jnp.bfloat16),
              "b": (jax.random.normal(k[1], (3, 8)) * 0.3).astype(jnp.bfloat16)}
    x = jax.random.normal(k[2], (16, 6)).astype(jnp.bfloat16)

    def loss(p):
        return jnp.mean(jnp.tanh(x @ p["a"].T) @ p["b"].T).astype(jnp.float32)

    path = tmp_path / "bf16.wtui"
    rec = wj.recorder(path, every=1, full_every=1, instruments=True)
    grads_at = {}
    wj.snapshot(rec, 0, params, stats="device")
    for step in range(1, 8):
        g = jax.grad(loss)(params)
        params = jax.tree_util.tree_map(lambda p, gg: (p - 0.5 * gg).astype(jnp.bfloat16), params, g)
        grads_at[step] = {n: np.asarray(v.astype(jnp.float32), dtype=np.float64)
                          for n, v in wj.named_leaves(g).items()}
        assert wj.snapshot(rec, step, params, grads=g, stats="device")
    rec.close()
    run = weighttui.open(path)
    assert run.tensor("a").dtype == "bfloat16"
    counts = check_log(path, grads_at, warm_after=0)  # 6 and 8 columns: the block holds them all (exact)
    assert counts["sigma_max"] == 2 * 8 and counts["cos_grad"] == 2 * 6


def test_donated_parameter_buffers(tmp_path, capsys):
    # a jitted step that donates the parameters deletes the buffers the previous snapshot saw:
    # the initial values are a copy, the exact updates switch to copies (said once)
    step_fn = jax.jit(lambda p, g: jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), donate_argnums=(0,))
    params = {"w": jax.random.normal(jax.random.PRNGKey(2), (12, 10)), "b": jnp.zeros(12)}
    grads = {"w": jnp.full((12, 10), 0.5), "b": jnp.ones(12)}
    path = tmp_path / "donated.wtui"
    rec = wj.recorder(path, every=1, full_every=1, instruments=True)
    for step in range(6):
        assert wj.snapshot(rec, step, params, grads=grads, stats="device")
        params = step_fn(params, grads)
    rec.close()
    run = weighttui.open(path)
    assert run.steps.tolist() == list(range(6))
    full = {s: run.weights(step=s) for s in run.full_steps}
    _, dist = run.series("w", "dist_init")
    for s in range(6):
        assert dist[s] == pytest.approx(inst.dist_init_ref(full[s]["w"], full[0]["w"]), rel=1e-5, abs=1e-7)
    _, ratio = run.series("w", "ratio", kind="delta")
    assert np.isnan(ratio[1]) and np.isfinite(ratio[3:]).all()  # the deltas start again from copies
    err = capsys.readouterr().err
    assert err.count("donated") == 1
