"""Read leases on files `weighttui import` maps in place (docs/import.md "Files rewritten while being read"):
a trainer that starts rewriting a settled file while the kernel reads it waits in open() until the import
is between two groups of tensors, so it can no longer pull pages from under the kernel (SIGBUS) or have a
group read half old, half new."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import Unit
from weighttui.integrations.importers.readers import changed, open_reader

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read leases are Linux's")

MIB = 1 << 20


def _leases_granted(path) -> bool:
    with mapping.leases():
        try:
            lease = mapping.Lease.take(str(path))
        except mapping.BeingWritten:
            return False
        if lease is None:
            return False
        lease.close()
        return True


def _save(path, m):
    from safetensors.numpy import save_file

    save_file(m, str(path))
    os.utime(path, (1e9, 1e9))  # unchanged for long: `import` maps it in place


def _model(value: float):
    return {k: np.full(MIB, value + i, dtype=np.float32) for i, k in enumerate(("a", "b", "c"))}


# opens the file for writing (truncating it), says when open() returned, then writes the new version
WRITER = """import sys, time
from safetensors.numpy import save_file
import numpy as np
print("opening", flush=True)
f = open(sys.argv[1], "wb")
print("opened", time.monotonic(), flush=True)
time.sleep(float(sys.argv[2]))
f.close()
save_file({k: np.full(1 << 20, 99.0 + i, dtype=np.float32) for i, k in enumerate("abc")}, sys.argv[1])
"""


def test_a_writer_waits_for_the_reader_and_the_reader_lets_go(tmp_path):
    path = tmp_path / "step_1.safetensors"
    _save(path, _model(1.0))
    if not _leases_granted(path):
        pytest.skip("this filesystem grants no read leases")
    with mapping.leases() as usable:
        assert usable
        reader = open_reader(Unit(str(path), "safetensors", path.name), mapped=True)
        try:
            assert reader.in_place and reader.lease is not None
            assert changed(reader) is None
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "0"], stdout=subprocess.PIPE,
                                      text=True)
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "opening"
            time.sleep(1.0)
            assert writer.poll() is None  # still in open(): the lease holds it
            assert np.array_equal(reader.raw("a")[0], np.full(MIB, 1.0, np.float32))  # safe to read
            why = changed(reader)  # a safe point: the reader lets go, the writer goes on
            assert why == "step_1.safetensors changed while being read (a trainer opened it for writing)"
            assert writer.wait(timeout=30) == 0
            assert changed(reader) == why  # and it stays refused
        finally:
            reader.close()
    # outside leases(): no lease is taken (SIGIO would end the process); a file open for writing is copied
    reader = open_reader(Unit(str(path), "safetensors", path.name), mapped=True)
    try:
        assert reader.lease is None
    finally:
        reader.close()
    os.utime(path, (1e9, 1e9))
    with open(path, "ab"), mapping.leases():
        reader = open_reader(Unit(str(path), "safetensors", path.name), mapped=True, copy_dir=str(tmp_path))
        try:
            assert not reader.in_place and reader.lease is None
        finally:
            reader.close()


# An import that stops for a while inside the kernel call of one group (the window where a rewrite used to
# pull the pages away), saying when it stops and when that call returns.
CHILD = """import sys, time
from weighttui.record import kernel
from weighttui.integrations.importers.driver import import_source
real, calls, at = kernel.run, [0], int(sys.argv[3])
def run(*a, **k):
    calls[0] += 1
    if calls[0] != at:
        return real(*a, **k)
    print("reading", flush=True)
    time.sleep(1.5)
    try:
        return real(*a, **k)
    finally:
        print("read", time.monotonic(), flush=True)
kernel.run = run
kernel.has_chain = lambda: False  # the per-checkpoint path (the chains: test_a_rewrite_during_the_chains_...)
import_source(sys.argv[1], sys.argv[2], values=sys.argv[4] == "values")
"""


@pytest.mark.parametrize("target,values", [("current", "values"), ("previous", "values"),
                                           ("current", "no-values"), ("previous", "no-values")])
def test_rewriting_a_file_the_kernel_reads_neither_kills_nor_mixes(tmp_path, target, values):
    """step_0, step_1, step_2, three groups each; in the first group of step_1 (target current) or of step_2
    (target previous: step_1 is read there for the deltas) a writer truncates step_1 and rewrites it. Before
    leases the import died of SIGBUS here."""
    pytest.importorskip("safetensors")
    src = tmp_path / "ck"
    src.mkdir()
    for i in range(3):
        _save(src / f"step_{i}.safetensors", _model(float(i)))
    if not _leases_granted(src / "step_1.safetensors"):
        pytest.skip("this filesystem grants no read leases")
    out = tmp_path / "run.wtui"
    at = 4 if target == "current" else 7  # kernel calls: one per group, three groups per checkpoint
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(out), str(at), values], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "reading"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src / "step_1.safetensors"), "2"],
                              stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reading = threading.Thread(target=lambda: lines.extend(writer.stdout.read().splitlines()))  # type: ignore[union-attr]
    reading.start()
    read_line = child.stdout.readline().split()
    _out, err = child.communicate(timeout=120)
    writer.wait(timeout=60)
    reading.join()
    assert child.returncode == 0, f"the import died ({child.returncode}; SIGBUS is -7): {err}"
    assert read_line[0] == "read"
    opened = [float(ln.split()[1]) for ln in lines if ln.startswith("opened")]
    assert opened and opened[0] > float(read_line[1])  # the writer got the file only after the group was read
    run = weighttui.open(str(out))
    assert list(run.steps) == [0, 1, 2]
    if values == "no-values":  # kernel calls run two at a time: which groups were in flight is up to timing
        lost = 0
        for i, k in enumerate("abc"):  # whatever was read of step_1 is its old version, never the new one
            _s, mean = run.series(k, "mean", kind="weights")
            assert np.isnan(mean[1]) or mean[1] == 1.0 + i, (k, mean)
            assert mean[2] == 2.0 + i
            _s, norm = run.series(k, "norm", kind="delta")
            assert np.isnan(norm[2]) or norm[2] == pytest.approx(np.sqrt(MIB)), (k, norm)
            lost += int(np.isnan(mean[1])) + int(np.isnan(norm[2]))
        _s, mean = run.series("a", "mean", kind="weights")
        assert mean[1] == 1.0  # the group in the kernel when the writer came
        if lost:  # what was left out is said
            assert "step_1.safetensors changed while being read (a trainer opened it for writing)" in err
        return
    s1 = run.weights(step=1)
    if target == "current":  # the group read before the rewrite is kept, whole and old; the rest is said
        assert set(s1) == {"a"} and np.array_equal(s1["a"], np.full(MIB, 1.0, np.float32))
        assert "step_1.safetensors changed while being read (a trainer opened it for writing)" in err
    else:
        assert all(np.array_equal(s1[k], np.full(MIB, 1.0 + i, np.float32)) for i, k in enumerate("abc"))
        _s, norm = run.series("a", "norm", kind="delta")  # read before the writer got in: exact
        assert norm[2] == pytest.approx(np.sqrt(MIB))
        for k in "bc":
            _s, norm = run.series(k, "norm", kind="delta")
            assert np.isnan(norm[2]), k
        assert ("no update statistics for 2 tensor(s) from b on: the previous checkpoint's step_1.safetensors "
                "changed while being read (a trainer opened it for writing)") in err
    s2 = run.weights(step=2)
    assert all(np.array_equal(s2[k], np.full(MIB, 2.0 + i, np.float32)) for i, k in enumerate("abc"))


def test_leases_only_where_sigio_can_be_ignored(tmp_path):
    """A broken lease is signalled with SIGIO, whose default action ends the process: leases() ignores it
    while inside and restores it after; off the main thread, or with someone else's SIGIO handler, no lease
    is taken at all."""
    import signal

    path = tmp_path / "a.safetensors"
    _save(path, _model(0.0))
    before = signal.getsignal(signal.SIGIO)
    with mapping.leases() as usable:
        assert usable and signal.getsignal(signal.SIGIO) == signal.SIG_IGN
        with mapping.leases() as nested:  # nested: still usable, restored by the outer one only
            assert nested
        assert signal.getsignal(signal.SIGIO) == signal.SIG_IGN
        got: list = []
        worker = threading.Thread(target=lambda: got.append(_in_thread(path)))
        worker.start()
        worker.join()
        assert got == [True]  # a thread of a process inside leases() may take them (SIGIO is ignored)
    assert signal.getsignal(signal.SIGIO) == before
    got = []
    worker = threading.Thread(target=lambda: got.append(_in_thread(path)))
    worker.start()
    worker.join()
    assert got == [False]  # off the main thread, SIGIO's disposition cannot be set: no leases
    seen: list = []
    signal.signal(signal.SIGIO, lambda *a: seen.append(a))
    try:
        with mapping.leases() as usable:
            assert not usable and mapping.Lease.take(str(path)) is None
    finally:
        signal.signal(signal.SIGIO, before)


def _in_thread(path) -> bool:
    with mapping.leases() as usable:
        lease = mapping.Lease.take(str(path))
        if lease is not None:
            lease.close()
        return usable or lease is not None


# The same for `import --no-values` along each tensor's versions (driver.Importer._chains): it stops inside
# one chain() step.
CHAIN_CHILD = """import sys, time
from weighttui.record import kernel
from weighttui.integrations.importers.driver import import_source
real, calls, at = kernel.chain, [0], int(sys.argv[3])
def chain(*a, **k):
    calls[0] += 1
    if calls[0] != at:
        return real(*a, **k)
    print("reading", flush=True)
    time.sleep(1.5)
    try:
        return real(*a, **k)
    finally:
        print("read", time.monotonic(), flush=True)
kernel.chain = chain
import_source(sys.argv[1], sys.argv[2], values=False)
print("chain calls", calls[0], flush=True)
"""


def test_a_rewrite_during_the_chains_neither_kills_nor_mixes(tmp_path):
    """A writer truncates and rewrites step_1 while a chain step reads it: it waits until that step is done;
    the chains stop at their next step and what they computed is dropped; the import goes on per checkpoint
    (which lets go of the lease and says what changed) and never records the new version's numbers."""
    pytest.importorskip("safetensors")
    from weighttui.record import kernel

    if not kernel.has_chain():
        pytest.skip("the kernel (with chain()) is not built")
    src = tmp_path / "ck"
    src.mkdir()
    for i in range(3):
        _save(src / f"step_{i}.safetensors", _model(float(i)))
    if not _leases_granted(src / "step_1.safetensors"):
        pytest.skip("this filesystem grants no read leases")
    out = tmp_path / "run.wtui"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.Popen([sys.executable, "-c", CHAIN_CHILD, str(src), str(out), "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "reading"  # the second step of a chain: step_0 and step_1
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src / "step_1.safetensors"), "2"],
                              stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reading = threading.Thread(target=lambda: lines.extend(writer.stdout.read().splitlines()))  # type: ignore[union-attr]
    reading.start()
    read_line = child.stdout.readline().split()
    rest, err = child.communicate(timeout=120)
    writer.wait(timeout=60)
    reading.join()
    assert child.returncode == 0, f"the import died ({child.returncode}; SIGBUS is -7): {err}"
    assert read_line[0] == "read"
    opened = [float(ln.split()[1]) for ln in lines if ln.startswith("opened")]
    assert opened and opened[0] > float(read_line[1])  # the writer got the file only after the step was read
    calls = int(rest.split()[-1])
    assert calls < 3 * 4  # the chains stopped early (three tensors x four steps when nothing changes)
    # said: as changed (the lease let go of when the import reached it) or as cut short (let go of earlier,
    # while an earlier checkpoint was written: the writer had truncated it by then)
    assert ("step_1.safetensors changed while being read (a trainer opened it for writing)" in err
            or "step_1.safetensors: truncated while being read" in err), err
    run = weighttui.open(str(out))
    steps = list(run.steps)
    assert steps[0] == 0 and steps[-1] == 2
    for i, k in enumerate("abc"):  # whatever was kept of step_1 is its old version, never the new one
        _s, mean = run.series(k, "mean", kind="weights")
        assert mean[0] == 0.0 + i and mean[-1] == 2.0 + i
        if steps == [0, 1, 2]:
            assert np.isnan(mean[1]) or mean[1] == 1.0 + i, (k, mean)

