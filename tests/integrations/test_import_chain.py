"""`weighttui import --no-values` along each tensor's versions (kernel chain(), Importer._chains): the same
log, record for record, as the per-checkpoint path, and the same rows as snapshot() pair by pair.

The chain runs pass B of checkpoint k together with pass A of checkpoint k + 1, so each checkpoint's bytes
are read three times instead of four (docs/import.md, docs/core.md). Exactness is binding: rows,
histograms (numpy.histogram against float64 edges) and exact deltas bit for bit.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers import driver, tensor_stats
from weighttui.integrations.importers.driver import import_source
from weighttui.log.reader import ScanState, scan_frames
from weighttui.record import kernel

pytestmark = pytest.mark.skipif(not kernel.has_chain(), reason="the kernel (with chain()) is not built")

BINS = 64


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in zip(a, b, strict=True))


def _bf16(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _versions(kind: str, dtype: str, n: int, rng) -> list:
    """Five versions of one tensor, as (stored array, is bfloat16)."""
    base = rng.standard_normal(n) * 0.02
    out = []
    for k in range(5):
        if kind == "walk":
            base = base + 1e-3 * rng.standard_normal(n)
        elif kind == "shift":  # every element moves by the same amount: values on the bin edges
            base = base + 0.25
        elif kind == "lr":  # +-lr updates: every delta at lo or hi
            base = base + 1e-3 * np.sign(rng.standard_normal(n))
        elif kind == "narrow":  # a range a few ulps wide for its magnitude: handed back
            base = np.float32(1.0) + np.float32(2 ** -23) * (rng.standard_normal(n) > 0)
        elif kind == "few":  # few distinct values
            base = np.round(base * 100) / 100 + k
        elif kind == "subnormal":
            base = rng.standard_normal(n) * 1e-41
        v = np.array(base)
        if kind == "constant" and k == 2:
            v[:] = v[0]
        if kind == "nan" and k == 3:
            v[n // 2] = np.nan
        if kind == "inf" and k == 1:
            v[0] = np.inf
        out.append((_bf16(v), True) if dtype == "bf16" else (v.astype(dtype), False))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bf16"])
@pytest.mark.parametrize("kind", ["walk", "shift", "lr", "narrow", "few", "subnormal", "constant", "nan", "inf"])
def test_chain_rows_are_snapshot_rows_bit_for_bit(dtype, kind):
    """Each version's rows from the chain equal one snapshot() call on (version, the one before), on sizes
    around the chunks (CCHUNK, BLOCK, LANES, GROUP); a version the kernel hands back is None (the importer
    computes it as before), and its neighbours still come out right."""
    rng = np.random.default_rng(hash((dtype, kind)) % 2**32)
    sizes = [1, 15, 16, 17, 255, 4097, kernel._fastats.CCHUNK + 3, 2 * kernel._fastats.CCHUNK]
    for n in sizes:
        vs = _versions(kind, dtype, n, rng)
        first_prev = _versions("walk", dtype, n, rng)[0]
        for prev0 in (None, first_prev):
            got = list(tensor_stats.chain(vs, BINS, first_prev=prev0))
            assert len(got) == len(vs)
            for j, (a, bf16) in enumerate(vs):
                prev = vs[j - 1] if j else (prev0 or (None, False))
                want = tensor_stats.rows_many([(a, bf16, prev[0], prev[1])], BINS)[0]
                if got[j] is None:  # handed back: the kernel itself hands that pair back too
                    raw = kernel.run([kernel.flat(a)], [None if prev[0] is None else kernel.flat(prev[0])],
                                     bytes([tensor_stats.code(a, bf16)]), BINS, copy=False)
                    assert not (raw[2][0] and (prev[0] is None or raw[3][0])), (n, j)
                    continue
                assert _same(got[j][0], want[0]) and _same(got[j][1], want[1]), (dtype, kind, n, j)
    if kind == "walk" and dtype == "float32":  # and against numpy itself
        vs = _versions(kind, dtype, 70001, rng)
        got = list(tensor_stats.chain(vs, BINS))
        for j in range(1, len(vs)):
            d = vs[j][0].astype(np.float64) - vs[j - 1][0].astype(np.float64)
            assert np.array_equal(got[j][1][3], np.histogram(d, BINS, (d.min(), d.max()))[0])
            x = vs[j][0].astype(np.float64)
            assert np.array_equal(got[j][0][3], np.histogram(x, BINS, (x.min(), x.max()))[0])


def test_chain_gives_pages_back_and_leaves_the_files_intact(tmp_path):
    """drop: the oldest version's pages are given back as they are read (madvise on the file's map); the
    file, and later reads of it, are untouched."""
    import mmap

    rng = np.random.default_rng(2)
    n = 3 * kernel._fastats.CCHUNK
    arrs = [rng.standard_normal(n).astype(np.float32) + k for k in range(4)]
    maps = []
    for k, a in enumerate(arrs):
        p = tmp_path / f"v{k}"
        a.tofile(p)
        with open(p, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    views = [(np.frombuffer(m, np.float32), False) for m in maps]
    got = list(tensor_stats.chain(views, BINS, drop=lambda _j: True))
    want = list(tensor_stats.chain([(a, False) for a in arrs], BINS))
    for g, w in zip(got, want, strict=True):
        assert _same(g[0], w[0]) and _same(g[1], w[1])
    if os.path.exists("/proc/self/smaps"):  # the three older versions' pages left this process; the last's not
        rss = _rss_of([str(tmp_path / f"v{k}") for k in range(4)])
        assert [r <= 4 for r in rss[:3]] == [True] * 3 and rss[3] >= n * 4 // 1024 - 4, rss
    for v, a in zip(views, arrs, strict=True):
        assert np.array_equal(v[0], a)
    del views, v
    for m in maps:
        m.close()


def _rss_of(paths: list[str]) -> list[int]:
    """KiB of each file's mapping in this process's RSS (/proc/self/smaps)."""
    out = dict.fromkeys(paths, 0)
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 6 and parts[5] in out:
                current = parts[5]
            elif "-" in parts[0]:
                current = None
            elif current and parts[0] == "Rss:":
                out[current] += int(parts[1])
    return [out[p] for p in paths]


# ------------------------------------------------------------------ whole imports, both paths


def _save(path, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def _directory(d) -> None:
    """Checkpoints with everything the chains must get right or leave to the per-checkpoint path."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(7)
    w = {"emb": rng.standard_normal((300, 200)).astype(np.float32) * 0.02,
         "big": rng.standard_normal(2 * kernel._fastats.CCHUNK + 5).astype(np.float32),
         "half": rng.standard_normal((40, 30)).astype(np.float16),
         "bf": rng.standard_normal((64, 70)).astype(ml_dtypes.bfloat16),
         "f64": rng.standard_normal(999),
         "bias": rng.standard_normal(7).astype(np.float32),
         "count": np.arange(50, dtype=np.int64),
         "nanny": rng.standard_normal((20, 20)).astype(np.float32),
         "grows": rng.standard_normal((10, 10)).astype(np.float32),
         "goes": rng.standard_normal(300).astype(np.float32),
         "mixed": rng.standard_normal((9, 9)).astype(np.float32),
         "flat": np.full(500, 0.5, dtype=np.float32)}
    emb = w["emb"]
    for i in range(7):
        w = {k: (v + (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" and k != "flat"
                 else v if k == "flat" else v + i) for k, v in w.items()}
        m = dict(w)
        if i == 3:
            m["nanny"] = w["nanny"].copy()
            m["nanny"][1, 2] = np.nan  # handed back by the kernel: the reference path, then the chain again
        if i >= 4:
            m["grows"] = rng.standard_normal((11, 10)).astype(np.float32)  # a shape change: left out
        if i in (2, 5):
            del m["goes"]  # missing from some checkpoints
        if i >= 3:
            m["mixed"] = w["mixed"].astype(np.float64)  # a dtype change between checkpoints
        if i == 6:
            m["emb"] = emb + np.float32(0.125)  # a shift of every element: deltas near the edges
        emb = m["emb"]
        _save(d / f"step_{(i + 1) * 10}.safetensors", m)
    (d / "step_35.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # a bad file
    with open(d / "step_45.safetensors", "wb") as f:  # a truncated one
        f.write((d / "step_40.safetensors").read_bytes()[:5000])


def _records(path: str) -> list:
    """Every frame of the log, without what differs between two runs (times, run id, process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        frames = list(scan_frames(fd, ScanState(), os.fstat(fd).st_size))
    finally:
        os.close(fd)

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k not in ("time", "created", "run_id", "pid", "argv")}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return [(f.type, clean(f.payload)) for f in frames]


@pytest.mark.parametrize("threads,settled", [(2, True), (1, True), (2, False)])
def test_import_through_chains_equals_the_per_checkpoint_path(tmp_path, monkeypatch, capsys, threads, settled):
    """The same directory imported with chains and without (kernel.has_chain off: the per-checkpoint path of
    before): every record of the two logs is the same (statistics, histograms, deltas, samples, events,
    the problems said), and the chains did compute most tensors."""
    src = tmp_path / "ck"
    src.mkdir()
    _directory(src)
    if settled:  # read in place (leases); else from private copies
        for f in src.iterdir():
            os.utime(f, (1e9, 1e9))
    monkeypatch.setattr(driver, "default_threads", lambda: threads)
    chained = []
    real_chain = kernel.chain
    monkeypatch.setattr(kernel, "chain", lambda *a, **k: chained.append(a[5]) or real_chain(*a, **k))
    out_new = str(tmp_path / "new.wtui")
    import_source(str(src), out_new, values=False)
    err_new = capsys.readouterr().err
    assert len(chained) >= 7 * 8
    monkeypatch.setattr(kernel, "has_chain", lambda: False)
    out_old = str(tmp_path / "old.wtui")
    import_source(str(src), out_old, values=False)
    err_old = capsys.readouterr().err
    assert err_new.replace("new.wtui", "X") == err_old.replace("old.wtui", "X")
    assert "grows changed shape" in err_new and "missing goes" in err_new and "skipped step_35" in err_new
    new, old = _records(out_new), _records(out_old)
    assert [t for t, _p in new] == [t for t, _p in old]
    for (t, a), (_t, b) in zip(new, old, strict=True):
        assert a == b, t
    run = weighttui.open(out_new)
    assert list(run.steps) == [10, 20, 30, 40, 50, 60, 70]
    _s, lo, hi, counts = run.histograms("emb", "delta", start=70, stop=71)
    assert counts[0].sum() == 300 * 200 and 0.12 < lo[0] <= hi[0] < 0.13  # the shift


def test_a_file_rewritten_during_the_chains_drops_what_they_computed(tmp_path, monkeypatch, capsys):
    """A checkpoint file that changes while the chains run: nothing they computed is used, and the import
    goes on as the per-checkpoint path does (which says which file changed)."""
    src = tmp_path / "ck"
    src.mkdir()
    rng = np.random.default_rng(1)
    m = {"a": rng.standard_normal(5000).astype(np.float32), "b": rng.standard_normal(300).astype(np.float32)}
    for i in range(3):
        _save(src / f"step_{i}.safetensors", {k: v + i for k, v in m.items()})
        os.utime(src / f"step_{i}.safetensors", (1e9, 1e9))  # settled: read in place
    done = threading.Event()
    real = driver.Importer._chain

    def chain(self, name, readers, before):
        out = real(self, name, readers, before)
        if not done.is_set():
            done.set()
            os.utime(src / "step_1.safetensors", (2e9, 2e9))  # its signature changes
        return out

    monkeypatch.setattr(driver.Importer, "_chain", chain)
    used = []
    real_rows = driver.Importer._rows
    monkeypatch.setattr(driver.Importer, "_rows",
                        lambda self, r, loaded, t: used.append(len(self._pre)) or real_rows(self, r, loaded, t))
    import_source(str(src), str(tmp_path / "run.wtui"), values=False)
    assert done.is_set() and used and max(used) == 0  # the chains' rows were dropped
    assert "step_1.safetensors changed while being read" in capsys.readouterr().err
    run = weighttui.open(str(tmp_path / "run.wtui"))
    _s, mean = run.series("a", "mean", kind="weights")
    assert mean[0] == pytest.approx(float(np.mean(m["a"].astype(np.float64))), rel=1e-12)


def test_chains_stay_within_the_memory_budget(tmp_path, monkeypatch):
    """The chains in flight hold at most 2 x the largest tensor + SPARE (each chain 2 x its tensor), the
    largest first with small ones beside it."""
    monkeypatch.setattr(driver, "default_threads", lambda: 2)
    rng = np.random.default_rng(4)
    m = {"emb": rng.standard_normal((1000, 1000)).astype(np.float32)}
    m.update({f"b{i}": rng.standard_normal((300, 300)).astype(np.float32) for i in range(12)})
    for step in range(3):
        _save(tmp_path / f"step_{step}.safetensors", {k: v + step for k, v in m.items()})
    monkeypatch.setattr(driver, "SPARE", 2 * 300 * 300 * 4 * 2)  # room for two small ones beside emb
    lock, live, most, order = threading.Lock(), [0], [0], []
    real = driver.Importer._chain

    def chain(self, name, readers, before):
        cost = 2 * m[name].nbytes
        with lock:
            live[0] += cost
            most[0] = max(most[0], live[0])
            order.append(name)
        try:
            return real(self, name, readers, before)
        finally:
            with lock:
                live[0] -= cost

    monkeypatch.setattr(driver.Importer, "_chain", chain)
    import_source(str(tmp_path), str(tmp_path / "run.wtui"), values=False)
    assert order[0] == "emb" and sorted(order) == sorted(m)
    assert most[0] <= 2 * m["emb"].nbytes + driver.SPARE


def test_hf_checkpoint_directories_go_through_the_chains(tmp_path, monkeypatch):
    """Trainer output (checkpoint-N/model.safetensors + trainer_state.json): chained, the same log."""
    import json

    rng = np.random.default_rng(5)
    w = {"w": rng.standard_normal((200, 100)).astype(np.float32), "b": rng.standard_normal(100).astype(np.float32)}
    for i, step in enumerate((5, 10, 15)):
        d = tmp_path / "out" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        w = {k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in w.items()}
        _save(d / "model.safetensors", w)
        (d / "trainer_state.json").write_text(json.dumps(
            {"global_step": step, "epoch": i + 1.0, "log_history": [{"step": step, "loss": 1.0 / step}]}))
    chained = []
    real_chain = kernel.chain
    monkeypatch.setattr(kernel, "chain", lambda *a, **k: chained.append(a[5]) or real_chain(*a, **k))
    import_source(str(tmp_path / "out"), str(tmp_path / "new.wtui"), values=False)
    assert len(chained) == 2 * 4
    monkeypatch.setattr(kernel, "has_chain", lambda: False)
    import_source(str(tmp_path / "out"), str(tmp_path / "old.wtui"), values=False)
    assert _records(str(tmp_path / "new.wtui")) == _records(str(tmp_path / "old.wtui"))
    assert list(weighttui.open(str(tmp_path / "new.wtui")).steps) == [5, 10, 15]


def test_formats_read_whole_at_open_are_not_opened_together(tmp_path, monkeypatch):
    """Only safetensors files are opened a batch at a time (their tensors are maps of the files); the other
    formats go one checkpoint at a time as before (a JSON or compressed .npz reader holds its whole file)."""
    from weighttui.integrations.importers import readers

    rng = np.random.default_rng(6)
    for i in range(3):
        np.savez_compressed(tmp_path / f"step_{i}.npz", w=rng.standard_normal(1000).astype(np.float32))
    live, most = [0], [0]
    real_open = driver.open_reader

    def open_reader(*a, **k):
        r = real_open(*a, **k)
        live[0] += 1
        most[0] = max(most[0], live[0])
        close = r.close

        def closing():
            live[0] -= 1
            r.close = close
            close()

        r.close = closing
        return r

    monkeypatch.setattr(driver, "open_reader", open_reader)
    monkeypatch.setattr(readers, "open_reader", open_reader)
    chains = []
    monkeypatch.setattr(driver.Importer, "_chains", lambda self, batch: chains.append(batch))
    import_source(str(tmp_path), str(tmp_path / "run.wtui"), values=False)
    assert chains == [] and most[0] <= 2  # a checkpoint and the previous one (its deltas' source)
    assert list(weighttui.open(str(tmp_path / "run.wtui")).steps) == [0, 1, 2]
