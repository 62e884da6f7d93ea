"""sigma_max against numpy.linalg.svd at every snapshot of real training (issue 16, item 3: within
1e-3 relative after warm-up), on matrices above BLOCK_MAX (65,536 elements: one kept vector, the
fused kernel's products) as well as small ones, under AdamW and SGD with momentum, snapshots every
10 steps. One power step per snapshot (sigma_steps=0, the estimate before the Lanczos steps) is off by
1e-2 to 3e-1 mid-run on the same runs: the last test shows that the runs are hard enough."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import weighttui
import weighttui.torch as wt
from weighttui.integrations import torch_native
from weighttui.record import instruments as inst

KERNELS = ["torch"] + (["fused"] if torch_native.available() else [])
DIMS = (256, 512, 384, 10)  # 512 x 256 (131,072 elements), 384 x 512 (196,608), 10 x 384 (a block of 8)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(len(DIMS) - 1):
        layers.append(torch.nn.Linear(DIMS[i], DIMS[i + 1]))
        if i < len(DIMS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _optimizer(model, opt: str):
    if opt == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _batches(steps: int):
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(DIMS[0], DIMS[-1], generator=gen)
    for _ in range(steps):
        x = torch.randn(128, DIMS[0], generator=gen)
        yield x, (x @ teacher).argmax(1)


def _train_torch(path, opt: str, steps: int, cpu_kernel: str, **options):
    model = _model()
    optimizer = _optimizer(model, opt)
    handle = wt.watch(model, path, optimizer=optimizer, every=10, full_every=10, cpu_kernel=cpu_kernel,
                      instruments={"sigma": True, "dist_init": False, "cos": False, "optim": False,
                                   "nan_origin": False, "units": False, "alpha": False, **options})
    for x, y in _batches(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    handle.close()


def _errors(path) -> dict[str, np.ndarray]:
    """name -> relative error of sigma_max at every snapshot against the SVD of the values stored."""
    run = weighttui.open(path)
    out = {}
    for name in run.tensor_names:
        if not name.endswith("weight"):
            continue
        steps, sig = run.series(name, "sigma_max")
        assert steps.tolist() == sorted(run.full_steps)
        ref = np.array([inst.sigma_max_ref(run.weights(step=s)[name]) for s in steps.tolist()])
        assert np.all(sig <= ref * (1 + 1e-5)), name  # Ritz values: from below
        out[name] = (ref - sig) / ref
    return out


@pytest.mark.parametrize(("opt", "steps", "cpu_kernel"), [("adamw", 60, k) for k in KERNELS] +
                         [("momentum", 100, KERNELS[-1])])
def test_torch_sigma_max_within_1e3_of_the_svd_at_every_snapshot(tmp_path, opt, steps, cpu_kernel):
    _train_torch(tmp_path / "run.wtui", opt, steps, cpu_kernel)
    errors = _errors(tmp_path / "run.wtui")
    assert {"0.weight", "2.weight", "4.weight"} <= set(errors)
    for name, err in errors.items():
        assert len(err) == steps // 10 + 1
        assert np.max(np.abs(err)) < 1e-3, (name, err)


def test_numpy_recorder_sigma_max_within_1e3_of_the_svd_at_every_snapshot(tmp_path):
    """The numpy Recorder given the float32 weights of the same AdamW training every 10 steps."""
    model = _model()
    optimizer = _optimizer(model, "adamw")
    refs: dict[str, list[float]] = {}
    with weighttui.Recorder(tmp_path / "np.wtui", instruments=["sigma"]) as rec:
        for step, (x, y) in enumerate(_batches(61)):
            if step % 10 == 0:
                arrays = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
                rec.snapshot(step, arrays)
                for n, a in arrays.items():
                    if a.ndim == 2:
                        refs.setdefault(n, []).append(inst.sigma_max_ref(a))
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    run = weighttui.open(tmp_path / "np.wtui")
    assert len(refs) == 3
    for name, ref in refs.items():
        _, sig = run.series(name, "sigma_max")
        err = (np.array(ref) - sig) / np.array(ref)
        assert len(err) == 7 and np.max(np.abs(err)) < 1e-3, (name, err)


@pytest.mark.parametrize("cpu_kernel", KERNELS[-1:])
def test_one_power_step_per_snapshot_is_not_enough_on_these_runs(tmp_path, cpu_kernel):
    """sigma_steps=0 (the warm-started power step alone, what big matrices had before): the 1e-3 bound
    above is not met on the same AdamW run, so the tests above measure the Lanczos steps."""
    _train_torch(tmp_path / "run.wtui", "adamw", 60, cpu_kernel, sigma_steps=0)
    errors = _errors(tmp_path / "run.wtui")
    assert max(np.max(np.abs(errors[n])) for n in ("0.weight", "2.weight")) > 1e-2


def test_jax_device_path_sigma_max_within_1e3_of_the_svd_at_every_snapshot(tmp_path):
    """JAX stats="device" (jnp, forced on the CPU as the other device-path tests): the fixed Lanczos
    steps run on the device without a host read (record/instruments.lanczos_fixed); optax AdamW."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    import weighttui.jax as wj

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {f"l{i}": {"w": jax.random.normal(keys[i], (DIMS[i + 1], DIMS[i])) / DIMS[i] ** 0.5}
              for i in range(len(DIMS) - 1)}

    def loss(p, x, y):
        h = x
        for i in range(len(DIMS) - 1):
            h = h @ p[f"l{i}"]["w"].T
            if i < len(DIMS) - 2:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    opt = optax.adamw(1e-3, weight_decay=0.01)
    state = opt.init(params)
    grad_fn = jax.jit(jax.grad(loss))
    path = tmp_path / "jax.wtui"
    rec = wj.recorder(path, every=1, full_every=1, instruments=["sigma"])
    for step, (x, y) in enumerate(_batches(61)):
        if step % 10 == 0:
            assert wj.snapshot(rec, step, params, stats="device")
        updates, state = opt.update(grad_fn(params, jnp.asarray(x.numpy()), jnp.asarray(y.numpy())), state,
                                    params)
        params = optax.apply_updates(params, updates)
    rec.close()
    run = weighttui.open(path)
    checked = 0
    for name in ("l0/w", "l1/w", "l2/w"):
        steps, sig = run.series(name, "sigma_max")
        ref = np.array([inst.sigma_max_ref(run.weights(step=s)[name]) for s in steps.tolist()])
        err = (ref - sig) / ref
        assert len(err) == 7 and np.max(np.abs(err)) < 1e-3, (name, err)
        checked += len(err)
    assert checked == 21


def test_keras_tf_ops_path_sigma_max_within_1e3_of_the_svd_at_every_snapshot(tmp_path):
    """Keras WeightCallback stats="device" (TF ops, forced on the CPU), AdamW, a snapshot every 10
    batches: kernels of 256 x 512 and 512 x 384 (Keras keeps them in x out)."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":  # pragma: no cover - another backend
        pytest.skip("the TF-ops path needs the TensorFlow backend")
    from weighttui.keras import WeightCallback

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    teacher = rng.standard_normal((DIMS[0], DIMS[-1])).astype("float32")
    x = rng.standard_normal((61 * 128, DIMS[0])).astype("float32")
    y = (x @ teacher).argmax(1)
    model = keras.Sequential([keras.Input((DIMS[0],))] + [
        keras.layers.Dense(d, activation="relu" if k < len(DIMS) - 2 else None, name=f"l{k}")
        for k, d in enumerate(DIMS[1:])])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / "tf.wtui"
    cb = WeightCallback(path, stats="device", every_batches=10, full_every=1, initial=False,
                        instruments=["sigma"])
    model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    run = weighttui.open(path)
    checked = 0
    for name in run.tensor_names:
        if len(run.tensor(name).shape) != 2:
            continue
        steps, sig = run.series(name, "sigma_max")
        ref = np.array([inst.sigma_max_ref(run.weights(step=s)[name]) for s in steps.tolist()])
        err = (ref - sig) / ref
        assert len(err) >= 6 and np.max(np.abs(err)) < 1e-3, (name, err)
        checked += 1
    assert checked == 3
