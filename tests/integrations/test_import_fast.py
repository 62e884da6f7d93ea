"""The fast import path: mapped reads, the fused kernel's exact deltas, values written from the files' pages,
and the peak-RSS bound (docs/import.md "Memory and speed").

Imported logs are checked against float64 numpy computed here from the
checkpoints as written, for every reader that maps (safetensors, torch .pt,
.npz stored and compressed) and for the tensors the kernel hands back (NaN,
integers, a dtype change between checkpoints).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers import driver
from weighttui.integrations.importers.base import Unit
from weighttui.integrations.importers.driver import import_source
from weighttui.integrations.importers.readers import open_reader
from weighttui.record import kernel

BINS = 64


def _models(n=3, seed=1):
    """Checkpoints with a tensor over the statistics' chunk size, a small one, a float16 one, one with a
    NaN (the reference path), an int one, and one that changes dtype after the first checkpoint."""
    rng = np.random.default_rng(seed)
    w = {"big.weight": rng.standard_normal((700, 300)).astype(np.float32) * 0.05,
         "small.bias": rng.standard_normal(7).astype(np.float32),
         "half.weight": rng.standard_normal((33, 17)).astype(np.float16),
         "nan.weight": rng.standard_normal((20, 20)).astype(np.float32),
         "count": np.arange(50, dtype=np.int64),
         "mixed": rng.standard_normal((9, 9)).astype(np.float32)}
    out = []
    for i in range(n):
        w = {k: (v + (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v + i)
             for k, v in w.items()}
        w["big.weight"].reshape(-1)[::97] = 0.0  # some unchanged elements: changed_frac < 1
        m = dict(w)
        m["nan.weight"] = w["nan.weight"].copy()
        m["nan.weight"][3, 4] = np.nan
        if i:
            m["mixed"] = w["mixed"].astype(np.float64)
        out.append(m)
    return out


def _expect_delta(now, prev):
    a, b = now.astype(np.float64).reshape(-1), prev.astype(np.float64).reshape(-1)
    fin = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[fin]
    bn = np.linalg.norm(b[fin])
    dn = np.linalg.norm(d)
    stats = [dn, dn / bn, np.abs(d).max(), np.abs(d).mean(), np.count_nonzero(d) / a.size, 1.0]
    counts = np.histogram(d, bins=BINS, range=(d.min(), d.max()))[0] if d.min() < d.max() else None
    return stats, d.min(), d.max(), counts


def _expect_weights(x):
    a = x.astype(np.float64).reshape(-1)
    f = a[np.isfinite(a)]
    return ([f.mean(), f.std(), f.min(), f.max(), np.abs(f).mean(), np.linalg.norm(f),
             np.count_nonzero(a == 0) / a.size, np.isnan(a).sum(), np.isinf(a).sum()],
            np.histogram(f, bins=BINS, range=(f.min(), f.max()))[0])


def _check_log(out, models, steps, values=True):
    run = weighttui.open(out)
    assert list(run.steps) == steps
    for i, (step, m) in enumerate(zip(steps, models, strict=True)):
        if values:
            got = run.weights(step=step)
            for k, v in m.items():
                assert got[k].dtype == v.dtype and np.array_equal(got[k], v, equal_nan=True), (step, k)
        for k, v in m.items():
            (wstats, wcounts) = _expect_weights(v)
            _s, lo, hi, counts = run.histograms(k, "weights", start=step, stop=step + 1)
            assert np.array_equal(counts[0], wcounts), (step, k)
            for stat, want in zip(("mean", "std", "min", "max", "absmean", "norm", "zero_frac", "nan", "inf"),
                                  wstats, strict=True):
                s, series = run.series(k, stat, kind="weights")
                assert series[i] == pytest.approx(want, rel=1e-6, abs=1e-12), (step, k, stat)
            if i == 0:
                continue
            stats, dlo, dhi, dcounts = _expect_delta(v, models[i - 1][k])
            for stat, want in zip(("norm", "ratio", "max_abs", "mean_abs", "changed_frac", "exact"), stats,
                                  strict=True):
                s, series = run.series(k, stat, kind="delta")
                assert series[i] == pytest.approx(want, rel=1e-9, abs=1e-15), (step, k, stat)
            _s, lo, hi, counts = run.histograms(k, "delta", start=step, stop=step + 1)
            assert lo[0] == dlo and hi[0] == dhi, (step, k)
            if dcounts is not None:
                assert np.array_equal(counts[0], dcounts), (step, k)


def _save(fmt, path, m):
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(m, path)
    elif fmt == "npz":
        np.savez(path, **m)
    elif fmt == "npz_compressed":
        np.savez_compressed(path, **m)
    elif fmt in ("h5", "h5_gzip"):
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as f:  # h5py's default layout (contiguous) is mapped; gzip is read by h5py
            for k, v in m.items():
                f.create_dataset(k, data=v, **({"compression": "gzip"} if fmt == "h5_gzip" and v.ndim else {}))
    else:
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in m.items()}, path)


SUFFIX = {"safetensors": "safetensors", "npz": "npz", "npz_compressed": "npz", "pt": "pt", "h5": "h5",
          "h5_gzip": "h5"}
KIND = {"pt": "torch", "h5": "hdf5", "h5_gzip": "hdf5"}


@pytest.mark.parametrize("fmt,values", [("safetensors", True), ("pt", True), ("npz", True), ("npz_compressed", True),
                                        ("h5", True), ("h5_gzip", True), ("safetensors", False), ("h5", False)])
def test_exact_deltas_against_float64_numpy(tmp_path, fmt, values, capsys, monkeypatch):
    """With values one group at a time; without, several kernel calls at once (Importer._tensors)."""
    models = _models()
    for i, m in enumerate(models):
        _save(fmt, str(tmp_path / f"step_{(i + 1) * 10}.{SUFFIX[fmt]}"), m)
    out = str(tmp_path / "run.wtui")
    calls, chained = [], []
    real, real_chain = kernel.run, kernel.chain
    monkeypatch.setattr(kernel, "run", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(kernel, "chain", lambda *a, **k: chained.append(a) or real_chain(*a, **k))
    import_source(str(tmp_path), out, values=values)
    _check_log(out, models, [10, 20, 30], values)
    err = capsys.readouterr().err
    assert "dropped" not in err  # the writer is drained, never refused
    if kernel.available():  # the float tensors went through the kernel (the others through the reference)
        codes = b"".join(calls)  # one call per group of tensors
        if values or fmt != "safetensors" or not kernel.has_chain():
            assert len(codes) == 5 * 3 and {kernel.F32, kernel.F16, kernel.F64} <= set(codes)
        else:  # the chains (Importer._chains) took the tensors they can; kernel.run the rest
            assert {a[5] for a in chained} == {kernel.F32, kernel.F16, kernel.F64}
            assert len(codes) < 5 * 3


def test_bfloat16_safetensors_deltas(tmp_path):
    """bfloat16 goes to the kernel as its raw bits; the log keeps the bits and the deltas are exact."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(3)
    from safetensors.numpy import save_file

    base = rng.standard_normal((400, 500)).astype(np.float32)
    models = []
    for i in range(3):
        bf = (base + 0.01 * i * rng.standard_normal(base.shape).astype(np.float32)).astype(ml_dtypes.bfloat16)
        models.append(bf)
        save_file({"w": bf}, str(tmp_path / f"step_{i}.safetensors"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    for i, bf in enumerate(models):
        assert np.array_equal(run.weights(step=i)["w"], bf.astype(np.float32))
    _s, norm = run.series("w", "norm", kind="delta")
    for i in (1, 2):
        want = np.linalg.norm(models[i].astype(np.float64) - models[i - 1].astype(np.float64))
        assert norm[i] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "pt", "h5"])
def test_mapped_and_read_tensors_are_the_same(tmp_path, fmt):
    """`weighttui import` maps a settled file in place, `weighttui watch` maps a private copy: both hand out
    the same tensors."""
    m = _models(1)[0]
    path = str(tmp_path / f"a.{SUFFIX[fmt]}")
    _save(fmt, path, m)
    os.utime(path, (1e9, 1e9))  # unchanged for long: read in place
    unit = Unit(path, KIND.get(fmt, fmt), os.path.basename(path))
    mapped, read = open_reader(unit, mapped=True), open_reader(unit)
    try:
        if fmt == "h5":  # every numeric dataset of a default h5py file is read from the map
            assert set(mapped.mapped) == set(m) == set(read.mapped)
        for k, v in m.items():
            a, a_bf = mapped.raw(k)
            b, b_bf = read.raw(k)
            assert a_bf == b_bf is False
            assert np.array_equal(a, v, equal_nan=True) and np.array_equal(b, v, equal_nan=True)
            assert a.flags.aligned  # the kernel reads aligned items (.npz members are copied when not)
            mapped.release(k)
            assert np.array_equal(a, v, equal_nan=True)  # given-back pages are read again from the file
    finally:
        mapped.close()
        read.close()


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "pt", "h5"])
def test_a_file_cut_short_after_mapping_is_refused_not_faulted(tmp_path, fmt):
    """A settled file is mapped in place and checked before each tensor; a recent one (which a trainer may
    still rewrite) is read from a private copy, which the truncation does not reach."""
    from weighttui.integrations.importers.base import ImportFileError

    if fmt == "pt":
        pytest.importorskip("torch")
    m = _models(1)[0]
    settled, recent = str(tmp_path / f"a.{SUFFIX[fmt]}"), str(tmp_path / f"b.{SUFFIX[fmt]}")
    _save(fmt, settled, m)
    _save(fmt, recent, m)
    os.utime(settled, (1e9, 1e9))
    kind = KIND.get(fmt, fmt)
    in_place = open_reader(Unit(settled, kind, "a"), mapped=True)
    copied = open_reader(Unit(recent, kind, "b"), mapped=True, copy_dir=str(tmp_path))
    try:
        os.truncate(settled, 100)
        os.truncate(recent, 100)
        with pytest.raises(ImportFileError, match="truncated while being read"):
            in_place.raw("big.weight")
        assert np.array_equal(copied.raw("big.weight")[0], m["big.weight"])  # the copy as it was opened
        assert not [f for f in os.listdir(tmp_path) if f.startswith(".weighttui-copy-")]  # unlinked at once
    finally:
        in_place.close()
        copied.close()


# ------------------------------------------------------------------ peak RSS

CHILD = """
import json, resource, sys
from weighttui.integrations.importers import driver, safetensors_file, npz_file, tensor_stats
from weighttui.record import kernel, recorder
if sys.argv[3] == "pt":
    import torch
    from weighttui.integrations.importers import torch_state
if sys.argv[3] == "h5":
    import h5py
    from weighttui.integrations.importers import hdf5_file
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
driver.import_source(sys.argv[1], sys.argv[2], values=sys.argv[4] == "values")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base": base * 1024, "peak": peak * 1024}))
"""
# The child is started by a small launcher: Linux carries a process's RSS high-water mark over exec, so a
# child of pytest itself would start from pytest's (hundreds of MB with torch and TensorFlow loaded).
LAUNCH = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"

LARGEST = 16 * 1024 * 1024  # float32 elements: 64 MiB
FIXED = 40 * 1024 * 1024  # what the bound allows on top of two tensors (docs/import.md)


@pytest.mark.parametrize("fmt,values,settled", [("safetensors", "values", True), ("safetensors", "no-values", True),
                                                ("npz", "values", True), ("pt", "values", True),
                                                ("pt", "values", False), ("h5", "no-values", True)])
def test_peak_rss_is_two_tensors_plus_a_fixed_amount(tmp_path, fmt, values, settled):
    """Mapped in place (settled files) and mapped private copies (recent files) alike."""
    if fmt == "pt":
        pytest.importorskip("torch")
    if not sys.platform.startswith("linux"):
        pytest.skip("ru_maxrss in KiB and /proc semantics are Linux's")
    rng = np.random.default_rng(0)
    src = tmp_path / "ck"
    src.mkdir()
    m = {"emb": rng.standard_normal(LARGEST, dtype=np.float32).reshape(4096, -1)}
    for i in range(4):
        m[f"block{i}"] = rng.standard_normal((1024, 2048), dtype=np.float32)
    for step in range(3):
        for v in m.values():
            v += np.float32(1e-3)
        _save(fmt, str(src / f"step_{step}.{SUFFIX[fmt]}"), m)
        if settled:
            os.utime(src / f"step_{step}.{SUFFIX[fmt]}", (1e9, 1e9))
    del m
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", CHILD, str(src),
                           str(tmp_path / "run.wtui"), fmt, values], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    largest = LARGEST * 4
    grew = got["peak"] - got["base"]
    # without values, small tensors are taken on the other core while the largest one is: up to SPARE more
    fixed = FIXED + (driver.SPARE if values == "no-values" else 0)
    assert grew < 2 * largest + fixed, f"peak RSS grew {grew / 2**20:.0f} MiB over two tensors of {largest / 2**20:.0f}"
    if values == "values":
        run = weighttui.open(str(tmp_path / "run.wtui"))
        assert run.n == 3 and len(run.weights(step=2)) == 5


def test_without_values_small_tensors_run_beside_the_largest_within_the_budget(tmp_path, monkeypatch):
    """The kernel calls of the other lane take small tensors while the largest one is being read, and the
    tensors in flight (with their previous copies) never hold more than 2 x the largest + SPARE."""
    import threading
    import time

    if not kernel.available():
        pytest.skip("the kernel is not built")
    monkeypatch.setattr(driver, "default_threads", lambda: 2)
    monkeypatch.setattr(kernel, "has_chain", lambda: False)  # the per-checkpoint lanes (test_import_chain: chains)
    rng = np.random.default_rng(4)
    m = {"emb": rng.standard_normal((1000, 1000)).astype(np.float32)}  # 4 MB: the largest
    m.update({f"b{i}": rng.standard_normal((300, 300)).astype(np.float32) for i in range(12)})
    for step in range(2):
        _save("safetensors", str(tmp_path / f"step_{step}.safetensors"), {k: v + step for k, v in m.items()})
    monkeypatch.setattr(driver, "SPARE", 3 * 300 * 300 * 4 * 2)  # room for one group of three small ones
    lock, live, spans = threading.Lock(), [0], []  # bytes in flight; (start, end, bytes, has emb)
    real = kernel.run

    def run(xs, prevs, *a, **k):
        nbytes = sum(x.nbytes for x in xs) + sum(p.nbytes for p in prevs if p is not None)
        with lock:
            live[0] += nbytes
            assert live[0] <= 2 * 2 * m["emb"].nbytes + driver.SPARE, live[0]
        t0 = time.monotonic()
        try:
            if any(x.size == m["emb"].size for x in xs):
                time.sleep(0.3)  # the largest takes long: the other lane goes on meanwhile
            return real(xs, prevs, *a, **k)
        finally:
            spans.append((t0, time.monotonic(), nbytes, any(x.size == m["emb"].size for x in xs)))
            with lock:
                live[0] -= nbytes

    monkeypatch.setattr(kernel, "run", run)
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out, values=False)
    big = [sp for sp in spans if sp[3]]
    assert len(big) == 2 and all(sp[2] in (m["emb"].nbytes, 2 * m["emb"].nbytes) for sp in big)
    beside = [sp for sp in spans if not sp[3] and any(b[0] < sp[0] < b[1] for b in big)]
    assert len(beside) >= 2  # small tensors' calls started while the largest one's ran
    run = weighttui.open(out)
    for k, v in m.items():
        _s, mean = run.series(k, "mean", kind="weights")
        assert mean[1] == pytest.approx(float(np.mean(v.astype(np.float64) + 1)), rel=1e-9)
        _s, norm = run.series(k, "norm", kind="delta")
        assert norm[1] == pytest.approx(np.sqrt(v.size), rel=1e-6)


def test_groups_keep_order_and_stay_under_the_largest_tensor():
    from weighttui.integrations.importers.base import Spec
    from weighttui.integrations.importers.driver import _nbytes, groups

    specs = {"emb": Spec((1000, 64), "float32"), "a": Spec((100, 64), "float32"), "b": Spec((300, 64), "bfloat16"),
             "c": Spec((900, 64), "float32"), "d": Spec((7,), "int64"), "e": Spec((), "float16")}
    got = groups(specs)
    assert [n for g in got for n, _s in g] == list(specs)  # the snapshot's rows keep the file's order
    budget = _nbytes(specs["emb"])
    assert all(sum(_nbytes(s) for _n, s in g) <= budget for g in got)
    assert [[n for n, _s in g] for g in got] == [["emb"], ["a", "b"], ["c", "d", "e"]]
