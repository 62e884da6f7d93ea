"""Instruments of watch() (docs/instruments.md) on real torch training, against float64
references computed from the complete values the same log stores (full_every=1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import weighttui
import weighttui.torch as wt
from weighttui.integrations import torch_native
from weighttui.log.schema import BASE_COLUMNS
from weighttui.record import instruments as inst

KERNELS = ["torch"] + (["fused"] if torch_native.available() else [])


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.BatchNorm2d(8)
        self.fc1 = torch.nn.Linear(8 * 6 * 6, 96)  # 27,648 weights: sampled cosines at cos_sample=4096
        self.fc2 = torch.nn.Linear(96, 5)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def _train(path, *, opt="adamw", steps=25, cpu_kernel="torch", nan_at=None, every=1, **kw):
    kw.setdefault("instruments", True)  # every instrument, not the cheap default set
    torch.manual_seed(0)
    model = Net()
    if opt == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    elif opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    x = torch.randn(64, 3, 8, 8)
    y = torch.randint(0, 5, (64,))
    grads = {}
    handle = wt.watch(model, path, optimizer=optimizer, every=every, full_every=every, cpu_kernel=cpu_kernel, **kw)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if nan_at == step:
            with torch.no_grad():
                model.fc2.weight.grad[2, 7] = float("nan")
        grads[step] = {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters()}
        optimizer.step()
    handle.close()
    return model, optimizer, grads


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_adamw_training_against_float64_references(tmp_path, cpu_kernel):
    path = tmp_path / "run.wtui"
    model, optimizer, grads = _train(path, cpu_kernel=cpu_kernel, buffers=True)
    run = weighttui.open(path)
    full = {s: run.weights(step=s) for s in run.full_steps}
    assert run.full_steps[:3] == [0, 1, 2]
    checked = 0
    for name in run.tensor_names:
        steps, sig = run.series(name, "sigma_max")
        _, srank = run.series(name, "stable_rank")
        _, norm = run.series(name, "norm")
        _, dist = run.series(name, "dist_init")
        _, cos_prev = run.series(name, "cos_prev", kind="delta")
        _, cos_grad = run.series(name, "cos_grad", kind="delta")
        _, sratio = run.series(name, "sigma_ratio", kind="delta")
        for i, s in enumerate(steps.tolist()):
            w = full[s][name].astype(np.float64)
            if "num_batches" in name:  # an int buffer
                continue
            assert dist[i] == pytest.approx(inst.dist_init_ref(w, full[0][name]), rel=1e-5, abs=1e-7)
            if w.ndim >= 2:
                ref = inst.sigma_max_ref(w)
                assert sig[i] <= ref * (1 + 1e-5)  # a Ritz value: from below
                if s == 0 or s >= 15:  # warmed up; a new top direction (early Adam steps) takes a few snapshots
                    assert sig[i] == pytest.approx(ref, rel=1e-3), (name, s)
                assert srank[i] == pytest.approx(norm[i] ** 2 / sig[i] ** 2, rel=1e-12)
                checked += 1
            else:
                assert math.isnan(sig[i])
            if s >= 1 and w.ndim >= 2:
                d = w - full[s - 1][name]
                ratio_ref = inst.sigma_max_ref(d) / inst.sigma_max_ref(w)
                assert sratio[i] == pytest.approx(ratio_ref, rel=5e-2), (name, s)
            if s >= 2 and name in grads[s]:
                d = (w - full[s - 1][name]).reshape(-1)
                dp = (full[s - 1][name].astype(np.float64) - full[s - 2][name]).reshape(-1)
                g = grads[s][name].reshape(-1)
                idx = inst.sample_index(name, d.size, inst.DEFAULT_COS_SAMPLE)
                if idx is None:  # every element: the cosine itself
                    assert cos_prev[i] == pytest.approx(inst.cosine(d, dp), abs=1e-9)
                    assert cos_grad[i] == pytest.approx(inst.cosine(d, g), abs=1e-9)
                else:  # the sampled coordinates' cosine, close to the full one
                    assert cos_prev[i] == pytest.approx(inst.cosine(d[idx], dp[idx]), abs=1e-9)
                    assert cos_grad[i] == pytest.approx(inst.cosine(d[idx], g[idx]), abs=1e-9)
                    assert abs(cos_grad[i] - inst.cosine(d, g)) < 3 / math.sqrt(idx.size)
    assert checked >= 3 * 20
    # alpha: every 10 snapshots of matrices with at least 10 rows and columns (fc1: 96 x 288)
    steps, alpha = run.series("fc1.weight", "alpha")
    due = np.isfinite(alpha)
    assert steps[due].tolist() == [0, 10, 20]
    for s in (0, 10, 20):
        eigs = np.linalg.svd(full[s]["fc1.weight"].astype(np.float64), compute_uv=False) ** 2
        assert alpha[steps.tolist().index(s)] == pytest.approx(inst.powerlaw_alpha(eigs), rel=1e-3)
    assert np.isnan(run.series("fc2.weight", "alpha")[1]).all()  # 5 rows: too few eigenvalues
    # optimizer state at the last snapshot: the state as it is now
    for name, p in model.named_parameters():
        st = optimizer.state[p]
        _, m = run.series(name, "m_norm", kind="optim")
        _, v = run.series(name, "v_norm", kind="optim")
        _, eff = run.series(name, "eff_lr", kind="optim")
        _, bad = run.series(name, "nonfinite", kind="optim")
        m_ref = np.linalg.norm(st["exp_avg"].double().numpy())
        v_ref = np.linalg.norm(st["exp_avg_sq"].double().numpy())
        assert m[-1] == pytest.approx(m_ref, rel=1e-5)
        assert v[-1] == pytest.approx(v_ref, rel=1e-5)
        assert eff[-1] == pytest.approx(inst.adam_eff_lr(3e-3, v_ref, p.numel(), float(st["step"]), 0.999, 1e-8),
                                        rel=1e-5)
        assert bad[-1] == 0
    # buffers are not parameters: no optimizer state
    assert np.isnan(run.series("norm.running_mean", "m_norm", kind="optim")[1]).all()
    assert not [e for e in run.events if e.kind == "nan_origin"]


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_plain_sgd_updates_point_against_the_gradient(tmp_path, cpu_kernel):
    path = tmp_path / "run.wtui"
    _train(path, opt="sgd", steps=6, cpu_kernel=cpu_kernel)
    run = weighttui.open(path)
    for name in ("conv.weight", "fc1.weight", "fc2.bias"):
        steps, cos_grad = run.series(name, "cos_grad", kind="delta")
        assert steps.tolist() == list(range(7))
        assert math.isnan(cos_grad[0])
        assert np.allclose(cos_grad[1:], -1.0, atol=1e-5)
        _, eff = run.series(name, "eff_lr", kind="optim")
        assert np.all(eff == 0.05)  # plain SGD: the learning rate


def test_sgd_momentum_buffer_norm(tmp_path):
    path = tmp_path / "run.wtui"
    model, optimizer, _ = _train(path, opt="momentum", steps=5)
    run = weighttui.open(path)
    for name, p in model.named_parameters():
        _, m = run.series(name, "m_norm", kind="optim")
        _, v = run.series(name, "v_norm", kind="optim")
        assert m[-1] == pytest.approx(float(optimizer.state[p]["momentum_buffer"].norm()), rel=1e-5)
        assert np.isnan(v).all()
    # momentum keeps consecutive updates pointing the same way
    _, cos_prev = run.series("fc1.weight", "cos_prev", kind="delta")
    assert np.all(cos_prev[3:] > 0.5)


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_nan_origin_names_the_gradient(tmp_path, cpu_kernel):
    path = tmp_path / "run.wtui"
    _train(path, opt="sgd", steps=6, nan_at=4, cpu_kernel=cpu_kernel)
    run = weighttui.open(path)
    origins = [e for e in run.events if e.kind == "nan_origin"]
    assert len(origins) == 1
    ev = origins[0]
    assert ev.step == 4 and run.tensors[ev.tensor].name == "fc2.weight"
    assert "gradient of fc2.weight at flat index 199" in ev.message  # [2, 7] of 5 x 96


def test_sampled_steps_and_options(tmp_path):
    # every=3: deltas and cosines span three optimizer steps; gradients are the snapshot step's
    path = tmp_path / "run.wtui"
    _train(path, opt="sgd", steps=9, every=3, instruments={"cos_sample": 64, "optim": False})
    run = weighttui.open(path)
    assert run.steps.tolist() == [0, 3, 6, 9]
    assert not run.has_kind("optim")
    full = {s: run.weights(step=s) for s in run.full_steps}
    _, cos_prev = run.series("fc2.weight", "cos_prev", kind="delta")
    idx = inst.sample_index("fc2.weight", 480, 64)
    d = (full[9]["fc2.weight"].astype(np.float64) - full[6]["fc2.weight"]).reshape(-1)[idx]
    dp = (full[6]["fc2.weight"].astype(np.float64) - full[3]["fc2.weight"]).reshape(-1)[idx]
    assert cos_prev[-1] == pytest.approx(inst.cosine(d, dp), abs=1e-9)
    with pytest.raises(ValueError, match="unknown instruments"):
        wt.watch(Net(), tmp_path / "x.wtui", instruments={"spectrum": True})

    path = tmp_path / "off.wtui"
    _train(path, steps=3, instruments=False)
    run = weighttui.open(path)
    assert run.columns("weights") == BASE_COLUMNS["weights"]
    assert run.columns("delta") == BASE_COLUMNS["delta"]
    assert not run.has_kind("optim")


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_per_unit_norms_of_weights_and_gradients(tmp_path, cpu_kernel):
    from weighttui.data.units import unit_norms

    path = tmp_path / "run.wtui"
    model, _opt, grads = _train(path, opt="sgd", steps=4, cpu_kernel=cpu_kernel)
    with torch.no_grad():
        model.fc1.weight[5] = 0.0  # after training: not in the log
    run = weighttui.open(path)
    for name in ("conv.weight", "fc1.weight", "fc2.weight"):
        steps, w = unit_norms(path, name)
        _, g = unit_norms(path, name, kind="grad")
        assert steps.tolist() == run.steps.tolist()
        for i, s in enumerate(steps.tolist()):
            np.testing.assert_allclose(w[i], inst.unit_norms_ref(run.weights(step=s)[name]), rtol=2**-8)
            if s == 0:
                assert np.isnan(g[i]).all()  # the initial snapshot has no gradient
            else:
                np.testing.assert_allclose(g[i], inst.unit_norms_ref(grads[s][name]), rtol=2**-8)
        _, dead = run.series(name, "dead_units", kind="grad")
        assert dead[1:].tolist() == [0] * 4
    # a conv weight's units are its output channels
    assert unit_norms(path, "conv.weight")[1].shape == (5, 8)


def test_default_watch_records_only_the_cheap_instruments(tmp_path):
    """watch() without instruments= : optimizer state and unit counts, no spectral/cosine columns."""
    path = tmp_path / "default.wtui"
    _train(path, steps=4, instruments="default")
    run = weighttui.open(path)
    assert "sigma_max" not in run.columns("weights") and "cos_prev" not in run.columns("delta")
    assert "exploding_units" in run.columns("weights")
    assert "m_norm" in run.columns("optim")


INSTRUMENT_COLUMNS = [("sigma_max", "weights"), ("stable_rank", "weights"), ("dist_init", "weights"),
                      ("cos_prev", "delta"), ("cos_grad", "delta"), ("sigma_ratio", "delta"),
                      ("m_norm", "optim"), ("v_norm", "optim"), ("eff_lr", "optim"),
                      ("exploding_units", "weights"), ("dead_units", "grad")]


def _paths_rtol(stat: str) -> float:
    """How close the fused kernel's and torch ops' columns are: float32 vs float64 products (1e-5), and
    for sigma_max and what divides by it, each path's estimate stops within inst.SIGMA_TOL of the true
    value by its own steps (the kernel's first, then Lanczos): within twice that of each other."""
    return {"sigma_max": 2, "stable_rank": 4, "sigma_ratio": 2}.get(stat, 0) * inst.SIGMA_TOL + 1e-5


@pytest.mark.skipif("fused" not in KERNELS or not torch_native.has_extras(), reason="the fused kernel is not built")
@pytest.mark.parametrize("nan_at", [None, 12])
def test_instruments_in_the_kernel_passes_equal_torch_ops(tmp_path, monkeypatch, nan_at):
    """With one vector (block=1), the fused kernel computes the instruments in its passes
    (kernel.Extras); the numbers equal the torch-ops path's (float32 vs float64 products: 1e-5), except
    sigma_max and what divides by it: each path's estimate stops within inst.SIGMA_TOL of the true value
    by its own steps (the kernel's first, then Lanczos), so the two agree within twice that.
    A NaN gradient at step 12 makes the weights NaN: the kernel hands those tensors back and
    torch ops compute their instruments (the same NaN columns, the same nan_origin)."""
    from weighttui.record import kernel

    seen = []
    real_run = kernel.run

    def spy(*args, **kw):
        out = real_run(*args, **kw)
        extras = args[6] if len(args) > 6 else kw.get("extras")
        seen.extend(e for e in extras or () if e is not None)
        return out

    monkeypatch.setattr(kernel, "run", spy)
    cfg = {"block": 1, "cos_sample": 256}
    _train(tmp_path / "fused.wtui", cpu_kernel="fused", steps=16, nan_at=nan_at, instruments=cfg)
    assert any(e.b is not None and e.bd is not None and e.x0 is not None and e.states and e.w_done for e in seen)
    assert any(e.gathered is not None and e.unit_norms is not None and e.w_done for e in seen)  # gradients too
    if nan_at:
        assert any(not e.w_done for e in seen)  # handed back, done with torch ops
    _train(tmp_path / "torch.wtui", cpu_kernel="torch", steps=16, nan_at=nan_at, instruments=cfg)
    fused, ops = weighttui.open(tmp_path / "fused.wtui"), weighttui.open(tmp_path / "torch.wtui")
    compared = 0
    for name in ops.tensor_names:
        for stat, kind in INSTRUMENT_COLUMNS:
            s1, a = fused.series(name, stat, kind=kind)
            s2, b = ops.series(name, stat, kind=kind)
            assert s1.tolist() == s2.tolist()
            np.testing.assert_allclose(a, b, rtol=_paths_rtol(stat), atol=1e-9, err_msg=f"{name} {stat}")
            compared += int(np.isfinite(b).sum())
    assert compared > 600
    assert [e.message for e in fused.events if e.kind == "nan_origin"] == \
        [e.message for e in ops.events if e.kind == "nan_origin"]
    if nan_at:
        assert np.isnan(fused.series("fc2.weight", "sigma_max")[1][-1])


def _train_strided(path, cpu_kernel, steps=12):
    """_train's network with fc1's weight made non-contiguous at step 6 (the same values) and fc1's
    gradient non-contiguous at steps 4 and 9 to 10, and fc2's gradient missing at step 7: the
    tensors and the rows with a gradient that the instruments' per-tensor plans were built for change."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randn(64, 3, 8, 8)
    y = torch.randint(0, 5, (64,))
    handle = wt.watch(model, path, optimizer=optimizer, full_every=1, cpu_kernel=cpu_kernel,
                      instruments={"block": 1, "cos_sample": 256})
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if step == 6:
            with torch.no_grad():
                model.fc1.weight.data = model.fc1.weight.data.t().contiguous().t()
        if step in (4, 9, 10):
            model.fc1.weight.grad = model.fc1.weight.grad.t().contiguous().t()
        if step == 7:
            model.fc2.weight.grad = None
        optimizer.step()
    handle.close()


@pytest.mark.skipif("fused" not in KERNELS or not torch_native.has_extras(), reason="the fused kernel is not built")
def test_kernel_plans_follow_tensors_that_change(tmp_path):
    """The per-tensor plans of the torch instruments (kept while the tensors are the same) hand a
    tensor or gradient the kernel no longer takes (not contiguous) to torch ops, and are rebuilt when
    a gradient goes missing: every instrument equals the torch-ops path's, snapshot by snapshot."""
    _train_strided(tmp_path / "fused.wtui", "fused")
    _train_strided(tmp_path / "torch.wtui", "torch")
    fused, ops = weighttui.open(tmp_path / "fused.wtui"), weighttui.open(tmp_path / "torch.wtui")
    compared = 0
    for name in ops.tensor_names:
        for stat, kind in INSTRUMENT_COLUMNS:
            s1, a = fused.series(name, stat, kind=kind)
            s2, b = ops.series(name, stat, kind=kind)
            assert s1.tolist() == s2.tolist()
            np.testing.assert_allclose(a, b, rtol=_paths_rtol(stat), atol=1e-9, err_msg=f"{name} {stat}")
            compared += int(np.isfinite(b).sum())
    assert compared > 400
    # the steps that changed the tensors have their numbers (not NaN) where torch ops have them
    _, cos = fused.series("fc1.weight", "cos_grad", kind="delta")
    assert np.isfinite(cos[[4, 6, 9, 10]]).all()


def test_optim_states_reads_each_group_and_step():
    """optim_states: per parameter its moments and its own group's lr / beta2 / eps and step (a tensor
    per parameter in torch's Adam, a number in other optimizers); None outside the optimizer or
    before the moments exist."""
    from weighttui.integrations.torch_instruments import optim_states

    a, b, c, outside = (torch.nn.Parameter(torch.randn(4, 3)) for _ in range(4))
    opt = torch.optim.AdamW([{"params": [a, b], "lr": 1e-3}, {"params": [c], "lr": 5e-2, "betas": (0.8, 0.95),
                                                               "eps": 1e-6}])
    assert optim_states(opt, [a, None, outside]) == [None, None, None]  # no moments before the first step
    for p in (a, b, c):
        p.grad = torch.randn_like(p)
    opt.step()
    c.grad = torch.randn_like(c)
    opt.step()  # c: step 2 (a and b too: every parameter with a gradient)
    opt.state[b]["step"] = 7.0  # a plain number, as other optimizers keep it
    got = optim_states(opt, [a, b, c, outside, None])
    assert got[3] is None and got[4] is None
    for p, (m, v, hyper), want in zip((a, b, c), got, [(1e-3, 2.0, 0.999, 1e-8), (1e-3, 7.0, 0.999, 1e-8),
                                                      (5e-2, 2.0, 0.95, 1e-6)], strict=False):
        assert m is opt.state[p]["exp_avg"] and v is opt.state[p]["exp_avg_sq"]
        assert hyper == pytest.approx(want)
    sgd = torch.optim.SGD([a], lr=0.1, momentum=0.9)
    assert optim_states(sgd, [a]) == [None]  # no momentum buffer yet
    sgd.step()
    m, v, hyper = optim_states(sgd, [a])[0]
    assert m is sgd.state[a]["momentum_buffer"] and v is None and hyper[0] == 0.1


def test_small_matrices_checked_together_equal_lanczos(monkeypatch):
    """_small_sigmas (the small matrices' sigma_max check, all of them in a few batched calls) gives what
    the per-matrix lanczos() gives, within SIGMA_TOL of numpy's SVD and from below: from kept Ritz vectors
    (no step needed), from a block that is not orthonormal (the warm-up's), for a matrix whose top gap is
    tiny (Lanczos steps from the batched start), for blocks of other sizes; NaN for a matrix with NaN."""
    from weighttui.integrations import torch_instruments as ti

    rng = np.random.default_rng(3)
    ins = ti.TorchInstruments({"sigma"})

    def spectrum(m, n, s):  # U diag(s) V^T with the given singular values
        u = np.linalg.qr(rng.standard_normal((m, len(s))))[0]
        v = np.linalg.qr(rng.standard_normal((n, len(s))))[0]
        return torch.from_numpy(((u * s) @ v.T).astype(np.float32))

    mats = {
        "kept": torch.from_numpy(rng.standard_normal((64, 147)).astype(np.float32)),
        "raw block": torch.from_numpy(rng.standard_normal((128, 64)).astype(np.float32)),
        "tiny gap": spectrum(96, 80, np.r_[10.0, 10.0 - 1e-3, np.linspace(9.9, 0.1, 60)]),
        "p of 5": torch.from_numpy(rng.standard_normal((5, 96)).astype(np.float32)),
        "nan": torch.from_numpy(np.where(rng.random((64, 64)) < 1e-3, np.nan, 1.0).astype(np.float32)),
    }
    pend = ti._Pending(len(mats))
    starts = {}
    for i, (name, w) in enumerate(mats.items()):
        p = ins.settings.vectors(*w.shape)
        v = torch.from_numpy(rng.standard_normal((w.shape[1], p)).astype(np.float32))
        if name == "kept":  # the Ritz vectors a previous snapshot kept, orthonormal
            v = ti._lanczos(w, v, 40)[0]
        ins._v[name] = starts[name] = v
        assert ins._batched(name, w, tuple(w.shape), p)
        pend.small.append((i, name, w))
    calls = []
    real = ti._lanczos
    monkeypatch.setattr(ti, "_lanczos", lambda w2, v, steps, z=None: calls.append((w2, z is not None))
                        or real(w2, v, steps, z))
    ins._small_sigmas(pend)
    monkeypatch.undo()
    # steps only where the batched start's bound asks for them, from its basis; NaN from the start
    taken = {name: z for name, w in mats.items() for w2, z in calls if w2 is w}
    assert "kept" not in taken and taken["tiny gap"] is True and taken["nan"] is False
    for i, (name, w) in enumerate(mats.items()):
        sigma, v_new = pend.sigmas[(i, False)]
        if name == "nan":
            assert math.isnan(sigma)
            continue
        ref = inst.sigma_max_ref(w.numpy())
        assert sigma <= ref * (1 + 1e-5)
        _, alone = ti._lanczos(w, starts[name], ins.settings.sigma_steps)
        if name != "raw block":  # (a random start: within the steps' reach only where the gap allows)
            assert sigma == pytest.approx(ref, rel=2 * inst.SIGMA_TOL), name
        assert sigma == pytest.approx(alone, rel=2 * inst.SIGMA_TOL), name
        assert tuple(v_new.shape) == tuple(starts[name].shape)
        gram = (v_new.mT @ v_new).double().numpy()
        np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)  # unit, orthogonal Ritz vectors


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_a_nan_where_alpha_is_due_keeps_the_snapshot(tmp_path, cpu_kernel):
    # svdvals raises on a NaN/Inf: the snapshot of a diverged run was lost at every alpha fit
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    path = tmp_path / "run.wtui"
    handle = wt.watch(model, path, optimizer=optimizer, every=1, instruments=True, cpu_kernel=cpu_kernel)
    x = torch.randn(8, 16)
    for step in range(1, 15):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        if step == 5:
            model.weight.grad[2, 3] = float("nan")
        optimizer.step()
    handle.close()
    run = weighttui.open(path)
    assert run.steps.tolist() == list(range(15))
    assert not [e for e in run.events if e.kind == "recorder_error"]
    steps, alpha = run.series("weight", "alpha")
    fitted = {int(s): a for s, a in zip(steps, alpha, strict=True) if np.isfinite(a)}
    assert fitted and max(fitted) < 5  # fitted while the weights were finite, NaN after


def test_dead_unit_events_follow_which_units_are_dead(tmp_path):
    # the alert quotes the latest event: it must name the units dead now, not those of an earlier event
    torch.manual_seed(0)
    fc = torch.nn.Linear(6, 10)
    optimizer = torch.optim.SGD(fc.parameters(), lr=1e-3)
    mask = torch.ones(10, 1)
    fc.weight.register_hook(lambda g: g * mask)
    path = tmp_path / "run.wtui"
    handle = wt.watch(fc, path, optimizer=optimizer, every=1)
    x = torch.randn(8, 6)
    for step in range(1, 22):
        mask.fill_(1)
        dead = [5, 7] if step <= 6 else ([1, 2] if step <= 14 else [1])  # the same count, then fewer
        mask[dead] = 0
        optimizer.zero_grad()
        fc(x).square().mean().backward()
        optimizer.step()
    handle.close()
    run = weighttui.open(path)
    named = [e.message.rsplit(": ", 1)[-1] for e in run.events if e.kind == "dead_units"]
    assert named == ["5, 7", "1, 2", "1"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_ops_norms_of_16_bit_tensors_are_float32(tmp_path, dtype):
    # the torch-ops path (what a GPU runs): a difference or a norm in the tensor's own dtype keeps 8-11 bits
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 16).to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-4)
    w0 = model.weight.detach().double().numpy().copy()
    path = tmp_path / "run.wtui"
    handle = wt.watch(model, path, optimizer=optimizer, every=1, full_every=1, cpu_kernel="torch", instruments=True)
    x = torch.randn(8, 32).to(dtype)
    for _ in range(5):
        optimizer.zero_grad()
        model(x).float().square().mean().backward()
        optimizer.step()
    handle.close()
    run = weighttui.open(path)
    w = run.weights(step=5)["weight"].astype(np.float64)
    _, dist = run.series("weight", "dist_init")
    assert dist[-1] == pytest.approx(np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-5)
    state = optimizer.state[model.weight]
    for stat, key in (("m_norm", "exp_avg"), ("v_norm", "exp_avg_sq")):
        _, got = run.series("weight", stat, kind="optim")
        assert got[-1] == pytest.approx(np.linalg.norm(state[key].double().numpy()), rel=1e-5), stat


def test_a_diverging_run_under_a_raising_seterr_keeps_every_snapshot(tmp_path, recwarn):
    """The instruments' numpy parts (spectral steps, cosines) meet inf/NaN on a diverging run: a caller's
    np.seterr(all="raise") must not cost the snapshot where the NaN began, nor warnings leak to the caller."""
    path = tmp_path / "run.wtui"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=50.0, momentum=0.9)
    x, y = torch.randn(64, 8), torch.randn(64, 3)
    old = np.seterr(all="raise")
    try:
        with wt.watch(model, path, optimizer=opt, instruments=True):
            for _ in range(15):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
    finally:
        np.seterr(**old)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    run = weighttui.open(path)
    assert not [e for e in run.events if e.kind == "recorder_error"]
    assert run.steps.tolist() == list(range(16))
    assert not np.isfinite(run.series("0.weight", "norm")[1][-1])  # it did diverge
    origin = [e for e in run.events if e.kind == "nan_origin"]
    assert len(origin) == 1 and origin[0].step == 4


@pytest.mark.parametrize("cpu_kernel", KERNELS)
@pytest.mark.parametrize("opt_name", ["amsgrad", "rmsprop", "adagrad"])
def test_second_moments_of_adaptive_optimizers_give_the_step_taken(tmp_path, cpu_kernel, opt_name):
    """v_norm is the state the step divides by (AMSGrad's max_exp_avg_sq, RMSprop's square_avg, Adagrad's
    sum) and eff_lr = lr / (sqrt(rms(v) / bias correction) + eps), with no bias correction but Adam's."""
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 16)
    opt = {"amsgrad": lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.9), amsgrad=True),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
           "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2)}[opt_name](model.parameters())
    x, y = torch.randn(64, 32), torch.randn(64, 16)
    path = tmp_path / "run.wtui"
    with wt.watch(model, path, optimizer=opt, cpu_kernel=cpu_kernel, instruments=["optim"]):
        for _ in range(8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    run = weighttui.open(path)
    st = opt.state[model.weight]
    v = {"amsgrad": "max_exp_avg_sq", "rmsprop": "square_avg", "adagrad": "sum"}[opt_name]
    v_ref = float(np.linalg.norm(st[v].double().numpy()))
    group = opt.param_groups[0]
    bc2 = 1 - group["betas"][1] ** 8 if opt_name == "amsgrad" else 1.0
    rms = v_ref / math.sqrt(model.weight.numel())
    assert run.series("weight", "v_norm", kind="optim")[1][-1] == pytest.approx(v_ref, rel=1e-5)
    assert run.series("weight", "eff_lr", kind="optim")[1][-1] == pytest.approx(
        group["lr"] / (math.sqrt(rms / bc2) + group["eps"]), rel=1e-5)
    if opt_name == "rmsprop":  # its momentum buffer is the first moment
        m_ref = float(np.linalg.norm(st["momentum_buffer"].double().numpy()))
        assert run.series("weight", "m_norm", kind="optim")[1][-1] == pytest.approx(m_ref, rel=1e-5)


@pytest.mark.parametrize("cpu_kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_dist_init_goes_on_after_the_model_is_cast(tmp_path, cpu_kernel, dtype):
    """model.to(dtype) mid-run keeps the Parameters (optimizer and watch go on): dist_init against the W0
    taken in the old dtype, on both paths (the kernel reads W0 only in W's dtype)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randn(32, 16)
    w0 = model.weight.detach().double().clone()
    path = tmp_path / "run.wtui"
    with wt.watch(model, path, optimizer=opt, cpu_kernel=cpu_kernel, instruments=["dist_init"]):
        for step in range(6):
            if step == 3:
                model.to(dtype)
                x, y = x.to(dtype), y.to(dtype)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    want = float(torch.linalg.vector_norm(model.weight.detach().double() - w0) / torch.linalg.vector_norm(w0))
    _, dist = weighttui.open(path).series("weight", "dist_init")
    assert np.isfinite(dist).all() and dist[-1] == pytest.approx(want, rel=1e-3)
