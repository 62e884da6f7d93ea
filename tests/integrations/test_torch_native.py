"""weighttui.torch.watch with the fused CPU kernel (weighttui._fastats) on real training loops.

The kernel's own contract is tested in tests/test_fastats.py; here: that watch()
routes CPU tensors through it, that what it records equals the numpy reference
(and the torch-ops engine), that what it cannot take falls back without losing
anything, and that training without the kernel built works the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weighttui  # noqa: E402
import weighttui.torch as wt  # noqa: E402
from weighttui.integrations import torch_native, torch_stats  # noqa: E402
from weighttui.record import kernel, stats  # noqa: E402

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not torch_native.available(), reason=str(torch_native.UNAVAILABLE))]
W, D = stats.WEIGHT_STATS, stats.DELTA_STATS


class Net(torch.nn.Module):
    """A conv layer, a norm layer and two linear layers: tensors from 16 to 100k elements."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.LayerNorm(8 * 6 * 6)
        self.fc1 = torch.nn.Linear(8 * 6 * 6, 300)
        self.fc2 = torch.nn.Linear(300, 10)

    def forward(self, x):
        h = self.norm(torch.relu(self.conv(x)).flatten(1))
        return self.fc2(torch.tanh(self.fc1(h)))


def _data(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _train(path, steps=4, dtype=torch.float32, seed=0, hook=None, adam=True, **options):
    """Train Net with Adam (or SGD) for `steps` steps under watch(); returns (model,
    clones of the parameters after every step, clones of the gradients of every step)."""
    torch.manual_seed(seed)
    model = Net().to(dtype)
    model.unused = torch.nn.Parameter(torch.randn(50).to(dtype))  # no gradient, never updated
    opt = (torch.optim.Adam(model.parameters(), lr=1e-2) if adam
           else torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = _data()
    after, grads = {0: _clone(model)}, {}
    with wt.watch(model, path, optimizer=opt, **options):
        for step in range(1, steps + 1):
            if hook:
                hook(step, model)
            loss = torch.nn.functional.cross_entropy(model(x.to(dtype)).float(), y)
            opt.zero_grad()
            loss.backward()
            grads[step] = {n: None if p.grad is None else p.grad.detach().clone()
                           for n, p in model.named_parameters()}
            opt.step()
            after[step] = _clone(model)
    return model, after, grads


def _clone(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _f64(t):
    return t.detach().double().numpy().reshape(-1)


def _hist64(v, bins):
    """numpy.histogram's counts with float64 edges (FORMAT.md's definition), lo == hi in bin B // 2."""
    lo, hi = v.min(), v.max()
    if lo == hi:
        counts = np.zeros(bins, dtype=np.int64)
        counts[bins // 2] = v.size
        return lo, hi, counts
    return lo, hi, np.histogram(v, bins=bins, range=(lo, hi))[0]


def _check_log(path, after, grads, bins=64):
    """Every weights, delta and grad row of the log against the reference on the
    tensors the loop saw, and every histogram count exactly."""
    run = weighttui.open(path)
    steps = list(run.steps)
    assert steps == sorted(after)
    for name in run.tensor_names:
        for r, step in enumerate(steps):
            x = _f64(after[step][name])
            _close(_row(run, "weights", name, r), stats.weight_stats(x), 1e-9)
            lo, hi, counts = _hist_at(run, name, "weights", step)
            rlo, rhi, rc = _hist64(x, bins)
            assert (lo, hi) == (rlo, rhi)
            np.testing.assert_array_equal(counts, rc)
            if step == 0:
                continue
            prev = _f64(after[steps[r - 1]][name])
            ref = stats.delta_stats(x, prev)
            np.testing.assert_allclose(_row(run, "delta", name, r), ref, rtol=1e-9, atol=1e-300)
            np.testing.assert_array_equal(_hist_at(run, name, "delta", step)[2], _hist64(x - prev, bins)[2])
            if grads[step][name] is None:
                assert np.isnan(_row(run, "grad", name, r)).all()
                continue
            g = _f64(grads[step][name])
            _close(_row(run, "grad", name, r), stats.weight_stats(g), 1e-9)
            np.testing.assert_array_equal(_hist_at(run, name, "grad", step)[2], _hist64(g, bins)[2])
    return run


def _close(got, ref, rtol):
    """WEIGHT_STATS rows: the mean to rtol of absmean (a difference of positive
    and negative sums has no relative precision near zero), the rest to rtol."""
    got, ref = np.asarray(got, dtype=np.float64).copy(), np.asarray(ref, dtype=np.float64).copy()
    if got.size == len(W):
        assert abs(got[0] - ref[0]) <= rtol * abs(ref[4]) + 1e-300, (got[0], ref[0])
        got[0] = ref[0]
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-300)


def _hist_at(run, name, kind, step):
    """(lo, hi, counts) of one tensor's histogram at one step."""
    steps, lo, hi, counts = run.histograms(name, kind)
    at = list(steps).index(step)
    return lo[at], hi[at], counts[at]


def _row(run, kind, name, r):
    col = run.tensor_names.index(name)
    names = W if kind != "delta" else D
    return np.array([run.stat_matrix(kind, s)[r, col] for s in names])


def test_fused_kernel_records_every_statistic_and_exact_histograms(tmp_path, monkeypatch):
    """A real Adam loop: weights, deltas and gradients equal the float64 reference
    (the kernel sums in float64) and every histogram equals numpy's, every element
    binned; torch_stats is not needed for any of it."""
    calls = []
    real_fast = torch_stats.DeviceStats.fast
    monkeypatch.setattr(torch_stats.DeviceStats, "fast", lambda self, work: calls.append(len(work.xs))
                        or real_fast(self, work))
    model, after, grads = _train(tmp_path / "run.wtui")
    _check_log(tmp_path / "run.wtui", after, grads)
    assert calls == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_kernel_with_16_bit_parameters(tmp_path, dtype):
    """float16/bfloat16 parameters (SGD: Adam's eps underflows in float16): the
    same exactness on their widened values."""
    model, after, grads = _train(tmp_path / "run.wtui", dtype=dtype, steps=3, adam=False)
    _check_log(tmp_path / "run.wtui", after, grads)


def test_fused_and_torch_engines_agree(tmp_path):
    """The same training with cpu_kernel='torch' (torch ops, every element binned):
    statistics within float32 tolerance, histograms within float32 edge slack."""
    _train(tmp_path / "fused.wtui")
    _train(tmp_path / "torch.wtui", cpu_kernel="torch", hist_sample=None)
    a, b = weighttui.open(tmp_path / "fused.wtui"), weighttui.open(tmp_path / "torch.wtui")
    assert a.tensor_names == b.tensor_names and list(a.steps) == list(b.steps)
    for kind, names in (("weights", W), ("delta", D), ("grad", W)):
        for s in names:
            ga, gb = a.stat_matrix(kind, s), b.stat_matrix(kind, s)
            np.testing.assert_array_equal(np.isnan(ga), np.isnan(gb))
            ga, gb = np.nan_to_num(ga), np.nan_to_num(gb)
            if s == "mean":  # to float32 precision of absmean (see _close)
                assert (np.abs(ga - gb) <= 2e-6 * np.nan_to_num(a.stat_matrix(kind, "absmean"))).all()
                continue
            np.testing.assert_allclose(ga, gb, rtol=2e-5, atol=1e-12, err_msg=f"{kind} {s}")
        for name in a.tensor_names:
            ca, cb = a.histograms(name, kind)[3], b.histograms(name, kind)[3]
            assert (ca.sum(1) == cb.sum(1)).all()
            assert np.abs(ca.astype(np.int64) - cb.astype(np.int64)).sum() <= 8 * len(ca)


def test_nan_in_one_tensor_falls_back_and_deltas_stay_right(tmp_path):
    """A NaN in one tensor at step 2 (a parameter outside the loss, so training
    stays finite): that tensor goes through torch_stats (NaN counted, statistics
    of the finite values); the kernel leaves its previous copy alone, so its
    delta at step 2 is still against step 1; every other tensor is unaffected.
    At step 3 the NaN is replaced again."""

    def poke(step, model):
        with torch.no_grad():
            if step == 2:
                model.unused[3] = float("nan")
            elif step == 3:
                model.unused[3] = 0.5
                model.unused[7] += 1.0

    path = tmp_path / "run.wtui"
    model, after, _ = _train(path, steps=3, hook=poke)
    run = weighttui.open(path)
    col = run.tensor_names.index("unused")
    assert list(run.stat_matrix("weights", "nan")[:, col]) == [0, 0, 1, 0]
    x1, x2, x3 = (_f64(after[s]["unused"]) for s in (1, 2, 3))
    _close(_row(run, "weights", "unused", 2), stats.weight_stats(x2), 2e-6)
    np.testing.assert_allclose(_row(run, "delta", "unused", 2), stats.delta_stats(x2, x1), rtol=1e-6)
    np.testing.assert_allclose(_row(run, "delta", "unused", 3), stats.delta_stats(x3, x2), rtol=1e-6)
    # element 7 changed; element 3 was NaN in the previous copy, so it is not finite in both
    assert _row(run, "delta", "unused", 3)[4] == pytest.approx(1 / 50)
    for name in ("fc1.weight", "conv.weight"):
        for r in (2, 3):
            ref = stats.delta_stats(_f64(after[r][name]), _f64(after[r - 1][name]))
            np.testing.assert_allclose(_row(run, "delta", name, r), ref, rtol=1e-9)


def test_tensors_the_kernel_cannot_read_go_through_torch_ops(tmp_path, monkeypatch):
    """A channels_last conv weight (not contiguous): computed by torch_stats, the rest
    (a float64 layer included) by the kernel, all in one snapshot."""
    seen = []
    real_fast = torch_stats.DeviceStats.fast
    monkeypatch.setattr(torch_stats.DeviceStats, "fast", lambda self, work: seen.append(
        sorted(tuple(x.shape) for x in work.xs)) or real_fast(self, work))
    torch.manual_seed(0)
    model = Net()
    model.conv.weight.data = model.conv.weight.data.contiguous(memory_format=torch.channels_last)
    model.fc2.double()
    path = tmp_path / "run.wtui"
    with wt.watch(model, path, grads=False):
        pass
    assert seen == [[(8, 3, 3, 3)]]
    run = weighttui.open(path)
    for name, p in model.named_parameters():
        _close(_row(run, "weights", name, 0), stats.weight_stats(_f64(p)), 2e-6)


def test_threads_give_identical_rows():
    """Each tensor is computed whole by one thread: 1 and 2 threads agree bit for bit."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(n, generator=g) for n in (5, 70_000, 300, 1_000_000, 17, 4096)]
    ps = [x + 1e-3 * torch.randn(x.shape, generator=g) for x in xs]
    one = torch_native.rows(xs, [p.clone() for p in ps], 64, copy=True, threads=1)
    two = torch_native.rows(xs, [p.clone() for p in ps], 64, copy=True, threads=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_failed_snapshot_forgets_the_copies_the_kernel_moved(tmp_path, monkeypatch):
    """If a snapshot fails after the kernel copied this step's values into the
    previous copies, those copies are dropped: the next snapshot has no delta for
    them (instead of a delta measured from a step that was never recorded), and
    the one after is exact again."""
    from weighttui.integrations import torch as wti

    real = wti.weight_rows
    calls = []

    def flaky(raw):  # one call per snapshot (grads=False): the third is step 2's
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure after the kernel")
        return real(raw)

    monkeypatch.setattr(wti, "weight_rows", flaky)
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    path = tmp_path / "run.wtui"
    after = {}
    handle = wt.watch(model, path, optimizer=opt, grads=False)
    for step in range(1, 5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after[step] = _clone(model)
    handle.close()
    run = weighttui.open(path)
    assert list(run.steps) == [0, 1, 3, 4]
    col = run.tensor_names.index("fc1.weight")
    assert np.isnan(run.stat_matrix("delta", "norm")[2, col])  # step 3: no delta against step 2
    ref = stats.delta_stats(_f64(after[4]["fc1.weight"]), _f64(after[3]["fc1.weight"]))
    np.testing.assert_allclose(_row(run, "delta", "fc1.weight", 3), ref, rtol=1e-9)


def test_without_the_kernel_built_watch_uses_torch_ops(tmp_path, monkeypatch):
    """As on a machine where `pip install` found no C compiler."""
    monkeypatch.setattr(kernel, "_fastats", None)
    monkeypatch.setattr(torch_native, "UNAVAILABLE", "the fused CPU kernel weighttui._fastats is not built (test)")
    model, after, grads = _train(tmp_path / "run.wtui", steps=2)
    run = weighttui.open(tmp_path / "run.wtui")
    name = "fc1.weight"
    _close(_row(run, "weights", name, 2), stats.weight_stats(_f64(after[2][name])), 2e-6)
    with wt.watch(model, tmp_path / "again.wtui") as h:
        assert h.cpu_kernel == "torch"
    # the log says why (once)
    assert [e.kind for e in run.events if e.kind == "cpu_kernel"] == ["cpu_kernel"]
    assert "not built" in next(e.message for e in run.events if e.kind == "cpu_kernel")
    with pytest.raises(ValueError):
        wt.watch(model, tmp_path / "bad.wtui", cpu_kernel="numba")


def test_odd_tensors_mixed_with_kernel_tensors(tmp_path):
    """A scalar parameter, a zero-size one, float64, int8 and bool buffers next to
    ordinary float32/bfloat16 ones, in one snapshot: the kernel takes what it can,
    torch_stats the rest, and every row matches the reference."""

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))
            self.empty = torch.nn.Parameter(torch.zeros(0, 4))
            self.w = torch.nn.Parameter(torch.randn(40, 30))
            self.w16 = torch.nn.Parameter(torch.randn(300).bfloat16())
            self.w64 = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
            self.register_buffer("codes", torch.randint(-100, 100, (50,), dtype=torch.int8))
            self.register_buffer("mask", torch.rand(30) > 0.5)

    torch.manual_seed(1)
    model = Odd()
    path = tmp_path / "run.wtui"
    seen = {}
    with wt.watch(model, path, buffers=True) as h:
        seen[0] = {n: t.detach().clone() for n, t in model.state_dict().items()}
        with torch.no_grad():
            model.scale += 0.25
            model.w.mul_(1.01)
            model.w16.add_(0.125)
            model.w64.sub_(1e-9)
            model.codes[:5] = 7
        h.step()
        seen[1] = {n: t.detach().clone() for n, t in model.state_dict().items()}
    run = weighttui.open(path)
    assert set(run.tensor_names) == set(seen[0])
    for name in run.tensor_names:
        for r in (0, 1):
            x = _f64(seen[r][name])
            row = _row(run, "weights", name, r)
            if x.size == 0:  # NaN statistics, norm 0, no NaN/Inf counted
                np.testing.assert_array_equal(row, stats.weight_stats(x))
                continue
            _close(row, stats.weight_stats(x), 2e-6)
        if x.size:
            np.testing.assert_allclose(_row(run, "delta", name, 1), stats.delta_stats(x, _f64(seen[0][name])),
                                       rtol=2e-6, atol=1e-300)
