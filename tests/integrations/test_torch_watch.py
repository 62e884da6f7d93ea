"""weighttui.torch.watch on real (tiny) PyTorch training loops, read back with weighttui.open."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weighttui  # noqa: E402
import weighttui.torch as wt  # noqa: E402
from weighttui.integrations import torch_native, torch_stats  # noqa: E402
from weighttui.record import stats  # noqa: E402

pytestmark = pytest.mark.torch
W = stats.WEIGHT_STATS


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, :1] * 2 - x[:, 1:2]).tanh()


def _train_step(model, opt, x, y):
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _np(t):
    return t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


def test_optimizer_hooks_record_grads_before_and_weights_and_deltas_after(tmp_path):
    path = tmp_path / "run.wtui"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = _batch()
    h = wt.watch(model, path, optimizer=opt, every=3, sample=4)
    seen = {}  # step -> (weights, grads) as the loop saw them
    prev_w = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(1, 13):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        if step % 3 == 0:
            seen[step] = ({n: p.detach().clone() for n, p in model.named_parameters()}, grads)
    h.close()

    run = weighttui.open(path)
    assert run.status == "finished"
    assert list(run.steps) == [0, 3, 6, 9, 12]  # step 0: the weights as watch() found them
    assert run.tensor_names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [t.layer for t in run.tensors] == ["0", "0", "2", "2"]
    assert run.run.framework.startswith("torch ")
    for name in run.tensor_names:
        steps, norms = run.series(name, "norm")
        ref = [stats.weight_stats(_np(prev_w[name]))[5]] + [stats.weight_stats(_np(seen[s][0][name]))[5]
                                                          for s in (3, 6, 9, 12)]
        np.testing.assert_allclose(norms, ref, rtol=2e-6)
        _, gnorm = run.series(name, "norm", kind="grad")
        assert np.isnan(gnorm[0])  # no gradient before the first step
        np.testing.assert_allclose(gnorm[1:], [stats.weight_stats(_np(seen[s][1][name]))[5] for s in (3, 6, 9, 12)],
                                   rtol=2e-6)
        _, ratio = run.series(name, "ratio", kind="delta")
        want = [stats.delta_stats(_np(seen[b][0][name]), _np(seen[a][0][name]) if a else _np(prev_w[name]))[1]
                for a, b in ((0, 3), (3, 6), (6, 9), (9, 12))]
        assert np.isnan(ratio[0])
        np.testing.assert_allclose(ratio[1:], want, rtol=1e-5)
        _, exact = run.series(name, "exact", kind="delta")
        assert (exact[1:] == 1).all()
        # sampled values are the values at the declared flat indices
        steps, samples = run.samples(name)
        idx = run.tensor(name).sample_index
        np.testing.assert_array_equal(samples[-1], _np(seen[12][0][name]).reshape(-1)[idx])


def test_histograms_in_the_log_match_numpy(tmp_path):
    path = tmp_path / "run.wtui"
    model = torch.nn.Linear(300, 300)  # 90,000 weights: the single-tensor path
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 300)
    with wt.watch(model, path, optimizer=opt, bins=32, hist_sample=None):  # every element
        for _ in range(2):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    run = weighttui.open(path)
    steps, lo, hi, counts = run.histograms("weight", "weights")
    rlo, rhi, rcounts = stats.histogram(model.weight.detach().numpy(), 32)
    assert (lo[-1], hi[-1]) == (rlo, rhi)
    assert counts[-1].sum() == rcounts.sum() == 90_000
    assert np.abs(counts[-1].astype(int) - rcounts.astype(int)).sum() <= 4  # float32 binning at edges


def test_torch_kernel_samples_cpu_histograms_of_huge_tensors_by_default(tmp_path):
    # 360,000 weights > 65,536: 256 chunks of 256 contiguous elements, spread over the tensor
    model = torch.nn.Linear(600, 600, bias=False)
    with wt.watch(model, tmp_path / "auto.wtui", cpu_kernel="torch"):
        pass
    with wt.watch(model, tmp_path / "all.wtui", hist_sample=None, cpu_kernel="torch"):
        pass
    auto, full = weighttui.open(tmp_path / "auto.wtui"), weighttui.open(tmp_path / "all.wtui")
    counts = auto.histograms("weight", "weights")[3][0]
    w = model.weight.detach().numpy().reshape(-1).astype(np.float64)
    sample = np.concatenate([w[j * (360_000 - 256) // 255:][:256] for j in range(256)])
    ref = np.histogram(sample, bins=counts.size, range=(w.min(), w.max()))[0]
    assert counts.sum() == 65_536 and np.abs(counts.astype(np.int64) - ref).sum() <= 8
    assert full.histograms("weight", "weights")[3][0].sum() == 360_000
    # the statistics stay exact either way
    np.testing.assert_array_equal(auto.stat_matrix("weights", "std"), full.stat_matrix("weights", "std"))
    with pytest.raises(ValueError):
        wt.watch(model, tmp_path / "bad.wtui", hist_sample=0)


def test_manual_step_without_optimizer(tmp_path):
    path = tmp_path / "run.wtui"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    h = wt.watch(model, path, every=2, initial=False)
    for epoch in range(2):
        for _ in range(3):
            loss = _train_step(model, opt, x, y)
            h.step(epoch=epoch, scalars={"loss": loss.item()})
    h.close()
    run = weighttui.open(path)
    assert list(run.steps) == [2, 4, 6]
    assert list(run.epochs) == [0, 1, 1]
    steps, loss = run.scalars("loss")
    assert list(steps) == [1, 2, 3, 4, 5, 6] and np.isfinite(loss).all()
    assert run.has_kind("grad") and run.has_kind("delta")


def test_wrappers_frozen_tied_lazy_and_later_parameters(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.lazy = torch.nn.LazyLinear(4)
            self.frozen = torch.nn.Linear(4, 4)
            self.frozen.requires_grad_(False)
            self.out = torch.nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight  # tied

        def forward(self, i):
            return self.out(self.frozen(self.lazy(self.emb(i))))

    path = tmp_path / "run.wtui"
    net = Net()
    compiled = torch.compile(net, backend="eager")  # a wrapper with _orig_mod
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    h = wt.watch(compiled, path, optimizer=opt)
    i = torch.arange(10)
    for step in range(3):
        if step == 1:
            net.extra = torch.nn.Parameter(torch.ones(3))  # added later
            opt.add_param_group({"params": [net.extra]})
        loss = torch.nn.functional.cross_entropy(compiled(i), i) + (net.extra.sum() if step else 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h.close()
    run = weighttui.open(path)
    names = run.tensor_names
    assert "out.weight" not in names and names.count("emb.weight") == 1  # tied: once
    assert not any(n.startswith("_orig_mod") for n in names)
    assert {"lazy.weight", "lazy.bias", "frozen.weight", "extra"} <= set(names)
    assert run.tensor("frozen.weight").trainable is False and run.tensor("emb.weight").trainable is True
    present = run.present
    col = run.tensor_names.index("lazy.weight")
    assert not present[0, col] and present[-1, col]  # skipped until materialised
    col = run.tensor_names.index("extra")
    assert list(present[:, col]) == [False, False, True, True]
    assert run.tensor("extra").layer == "extra"

    skip = tmp_path / "skip.wtui"
    with wt.watch(net, skip, skip_frozen=True):
        pass
    assert not any(n.startswith("frozen") for n in weighttui.open(skip).tensor_names)


def test_buffers_batchnorm_running_stats(tmp_path):
    path = tmp_path / "run.wtui"
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = wt.watch(model, path, optimizer=opt, buffers=True)
    for _ in range(3):
        _train_step(model, opt, torch.randn(16, 4) * 3 + 1, torch.zeros(16, 8))
    h.close()
    run = weighttui.open(path)
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert run.tensor(name).trainable is False
    _, mean = run.series("1.running_mean", "mean")
    assert mean[-1] == pytest.approx(float(model[1].running_mean.mean()), rel=1e-6)
    _, nbt = run.series("1.num_batches_tracked", "max")
    assert list(nbt) == [0, 1, 2, 3]
    _, changed = run.series("1.running_var", "changed_frac", kind="delta")
    assert changed[-1] == 1.0


def test_delta_policies_and_budget(tmp_path):
    x, y = _batch()

    def run_with(**kw):
        path = tmp_path / f"run{len(list(tmp_path.iterdir()))}.wtui"
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with wt.watch(model, path, optimizer=opt, **kw):
            for _ in range(3):
                _train_step(model, opt, x, y)
        return weighttui.open(path)

    # in declaration order, a copy is kept while it fits: 0.weight (96 float32 =
    # 384 bytes) fits 400 bytes, 0.bias and 2.weight (64 bytes each) do not, 2.bias (4) does
    auto = run_with(delta="auto", delta_budget_bytes=400)
    exact = auto.stat_matrix("delta", "exact")[-1]
    assert list(exact) == [1, 0, 0, 1]
    _, lo, hi, counts = auto.histograms("0.weight", "delta")
    assert counts[-1].sum() == 96
    assert auto.histograms("2.weight", "delta")[0].size == 0  # sampled rows: no histogram
    ratio = auto.stat_matrix("delta", "ratio")[-1]
    assert np.isfinite(ratio).all() and (ratio > 0).all()

    sampled = run_with(delta="sample")
    assert (sampled.stat_matrix("delta", "exact")[-1] == 0).all()
    exact_run = run_with(delta="exact")
    assert (exact_run.stat_matrix("delta", "exact")[-1] == 1).all()
    # the sampled estimate of the update norm is in the right range
    ratio_s = sampled.stat_matrix("delta", "ratio")[-1]
    ratio_e = exact_run.stat_matrix("delta", "ratio")[-1]
    assert np.all((ratio_s > ratio_e / 10) & (ratio_s < ratio_e * 10))
    off = run_with(delta="off")
    assert not off.has_kind("delta")


def test_full_every_values_bit_for_bit_including_bfloat16(tmp_path):
    path = tmp_path / "run.wtui"
    model = _mlp().to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    h = wt.watch(model, path, optimizer=opt, every=1, full_every=2)
    kept = {}
    for step in range(1, 5):
        _train_step(model, opt, x.bfloat16(), y.bfloat16())
        kept[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
    h.close()
    run = weighttui.open(path)
    assert run.full_steps == [0, 2, 4]
    for step in (2, 4):
        got = run.weights(step=step)
        for name, t in kept[step].items():
            np.testing.assert_array_equal(got[name], t.float().numpy())
    assert run.tensor("0.weight").dtype == "bfloat16"


def test_amp_gradscaler_skipped_steps_are_events_not_updates(tmp_path):
    path = tmp_path / "run.wtui"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = _batch()
    h = wt.watch(model, path, optimizer=opt, scaler=scaler)
    for i in range(4):
        loss = ((model(x) - y) ** 2).mean()
        if i == 1:
            loss = loss * float("inf")  # inf gradients: the scaler skips this step
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    h.close()
    assert "step" not in scaler.__dict__ and "update" not in scaler.__dict__  # unwrapped on close
    run = weighttui.open(path)
    assert list(run.steps) == [0, 1, 2, 3]  # three optimizer steps happened, not four
    skipped = [e for e in run.events if e.kind == "skipped_step"]
    assert len(skipped) == 1 and skipped[0].step == 1
    assert "1024 -> 512" in skipped[0].message
    assert np.isfinite(run.stat_matrix("grad", "norm")[1:]).all()


def test_nonfinite_weights_are_counted_and_reported(tmp_path):
    path = tmp_path / "run.wtui"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    with wt.watch(model, path, optimizer=opt):
        _train_step(model, opt, x, y)
        with torch.no_grad():
            model[0].weight[0, :3] = float("nan")
        opt.step()  # grads still there: one more (recorded) step
    run = weighttui.open(path)
    col = run.tensor_names.index("0.weight")
    assert run.stat_matrix("weights", "nan")[-1, col] == 3
    ref = stats.weight_stats(model[0].weight.detach().numpy())
    np.testing.assert_allclose(run.stat_matrix("weights", "std")[-1, col], ref[1], rtol=1e-6)
    assert any(e.kind == "nonfinite" for e in run.events)


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_no_exception_reaches_the_training_loop(tmp_path, monkeypatch, capsys, kernel):
    if kernel == "fused" and not torch_native.available():
        pytest.skip(torch_native.UNAVAILABLE)
    path = tmp_path / "run.wtui"
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    h = wt.watch(model, path, optimizer=opt, cpu_kernel=kernel)

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure in the statistics")

    if kernel == "fused":
        monkeypatch.setattr(torch_native, "rows", boom)
    else:
        monkeypatch.setattr(torch_stats.DeviceStats, "fast", boom)
    before = model[0].weight.detach().clone()
    for _ in range(3):
        _train_step(model, opt, x, y)  # must not raise
    assert not torch.equal(before, model[0].weight)  # and training really went on
    monkeypatch.undo()
    _train_step(model, opt, x, y)
    h.close()
    err = capsys.readouterr().err
    # reported once per place it happened (gradients, snapshot), not once per step
    assert err.count("while taking a snapshot: RuntimeError: injected failure") == 1
    assert err.count("while taking gradient statistics: RuntimeError: injected failure") == 1
    run = weighttui.open(path)
    assert list(run.steps) == [0, 4]  # steps 1..3 failed and were skipped
    assert any(e.kind == "recorder_error" and "injected" in e.message for e in run.events)


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
def test_unwritable_log_does_not_stop_training(tmp_path, capsys):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    h = wt.watch(model, "/dev/full", optimizer=opt, full_every=1)
    for _ in range(3):
        _train_step(model, opt, x, y)
    h.close()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with wt.watch(model, ro / "run.wtui", optimizer=opt):
            _train_step(model, opt, x, y)
    finally:
        ro.chmod(0o700)
    assert "weighttui: error" in capsys.readouterr().err


def test_one_host_copy_per_snapshot_and_masked_pass_only_for_nonfinite(tmp_path, monkeypatch):
    from weighttui.integrations import torch_host

    copies, masked = [], []
    real_to_host, real_masked = torch_host.to_host, torch_stats.DeviceStats.masked
    monkeypatch.setattr(torch_host, "to_host", lambda parts: copies.append(len(parts)) or real_to_host(parts))
    monkeypatch.setattr(torch_stats.DeviceStats, "masked",
                        lambda self, work, rows: masked.append(list(rows)) or real_masked(self, work, rows))
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    with wt.watch(model, tmp_path / "run.wtui", optimizer=opt, initial=False):
        for _ in range(3):
            _train_step(model, opt, x, y)
        assert len(copies) == 3 and not masked  # weights, deltas, grads, samples: one transfer each
        with torch.no_grad():
            model[2].bias[0] = float("inf")
        opt.step()
    assert len(copies) == 4
    assert masked == [[3], [3]]  # the weights row and the delta row of 2.bias, nothing else
