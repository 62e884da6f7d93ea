"""The writer under faults: training is never hurt, drops are counted, one report.

Every test runs a real (small, numpy) training loop while the fault happens
and checks that (1) the trained parameters and losses are bit-for-bit those of
the same loop without a recorder, (2) no exception reached the loop, (3) the
problem was reported once on stderr, (4) `written + dropped` accounts for every
snapshot the schedule asked for, and (5) what did reach the log reads back.

Faults: /dev/full (ENOSPC on every write), a file-size limit hit mid-run
(RLIMIT_FSIZE: the kernel fails the write with EFBIG), os.write raising EIO
mid-run, the log's directory removed mid-run, permission denied at open (a
real one: the child drops root privileges or the directory is read-only) and a
writer blocked on a slow disk.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import weighttui
from weighttui.record.recorder import Recorder

STEPS = 60

# The training loop, also run verbatim by the child processes below.
TRAIN_SRC = '''
import numpy as np

def train(rec=None, steps=60, every=1, fault=None):
    """Two-layer tanh MLP on fixed data, plain SGD; rec.snapshot each step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8))
    y = np.sin(x[:, :1]) + 0.1 * x[:, 1:2]
    p = {"l1.weight": rng.normal(0, 0.5, (8, 16)), "l1.bias": np.zeros(16),
         "l2.weight": rng.normal(0, 0.5, (16, 1)), "l2.bias": np.zeros(1)}
    losses = []
    scheduled = 0
    for step in range(steps):
        if fault is not None:
            fault(step)
        h = np.tanh(x @ p["l1.weight"] + p["l1.bias"])
        out = h @ p["l2.weight"] + p["l2.bias"]
        err = out - y
        loss = float(np.mean(err ** 2))
        g_out = 2 * err / len(x)
        g = {"l2.weight": h.T @ g_out, "l2.bias": g_out.sum(0)}
        g_h = (g_out @ p["l2.weight"].T) * (1 - h ** 2)
        g["l1.weight"] = x.T @ g_h
        g["l1.bias"] = g_h.sum(0)
        for k in p:
            p[k] = p[k] - 0.05 * g[k]
        losses.append(loss)
        if rec is not None:
            scheduled += step % every == 0
            rec.snapshot(step, p, grads=g, epoch=step // 10, scalars={"loss": loss})
    return p, losses, scheduled
'''
_ns: dict = {}
exec(TRAIN_SRC, _ns)
train = _ns["train"]


@pytest.fixture(scope="module")
def baseline():
    params, losses, _ = train(None, STEPS)
    return params, losses


def assert_same_training(result, baseline):
    params, losses, _ = result
    base_params, base_losses = baseline
    assert losses == base_losses
    for k, v in base_params.items():
        assert np.array_equal(params[k], v), k


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("weighttui: error")]


# ------------------------------------------------------------------- disk full


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_dev_full_every_write_fails(baseline, capfd):
    rec = Recorder("/dev/full")  # the header write already fails: ENOSPC
    result = train(rec, STEPS)
    rec.close()
    assert_same_training(result, baseline)
    err = capfd.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "No space left" in lines[0], err
    assert not rec.active
    assert rec.written == 0
    assert rec.dropped == result[2] == STEPS  # every scheduled snapshot is accounted for


CHILD_SRC = TRAIN_SRC + '''
import json, os, resource, signal, sys
import weighttui

mode, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
base_p, base_losses, _ = train(None, 60)
if mode == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
elif mode == "setuid":
    # load the recorder (and the stdlib it imports) first: `nobody` cannot read root's Python
    import weighttui.record.recorder  # noqa: F401
    os.setgid(65534)
    os.setuid(65534)  # nobody: may not create files in a root-owned directory
rec = weighttui.Recorder(path, every=2)
p, losses, scheduled = train(rec, 60, every=2)
rec.close()
print(json.dumps({
    "same": losses == base_losses and all((p[k] == base_p[k]).all() for k in p),
    "written": rec.written, "dropped": rec.dropped, "scheduled": scheduled, "active": rec.active,
}))
'''


def run_child(mode: str, path, limit: int = 0) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD_SRC, mode, str(path), str(limit)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_disk_full_mid_run(tmp_path):
    """The file hits a size limit part-way: the kernel fails the write (EFBIG)."""
    path = tmp_path / "run.wtui"
    limit = 40_000  # a few snapshots fit, the rest do not
    out, err = run_child("fsize", path, limit)
    assert out["same"], "training results changed"
    assert len(error_lines(err)) == 1, err
    assert out["written"] > 0 and out["dropped"] > 0
    assert out["written"] + out["dropped"] == out["scheduled"] == 30
    assert path.stat().st_size <= limit
    data = weighttui.open(path)
    assert data.corruptions == []
    # the snapshot being written when the limit hit may be in the log, or torn
    assert out["written"] <= data.snapshot_count <= out["written"] + 1
    assert list(data.steps[: out["written"]]) == list(range(0, 2 * out["written"], 2))


# ------------------------------------------------------------------ I/O errors


def failing_writes(monkeypatch, fd: int, after: int, exc_factory):
    """Make os.write on `fd` raise after `after` successful calls (other fds untouched)."""
    real = os.write
    calls = {"n": 0}

    def write(f, data):
        if f == fd:
            calls["n"] += 1
            if calls["n"] > after:
                raise exc_factory()
        return real(f, data)

    monkeypatch.setattr(os, "write", write)
    return calls


def test_io_error_mid_run(tmp_path, baseline, capfd, monkeypatch):
    path = tmp_path / "run.wtui"
    rec = Recorder(path)
    failing_writes(monkeypatch, rec.writer.fd, after=25,
                   exc_factory=lambda: OSError(errno.EIO, os.strerror(errno.EIO)))
    result = train(rec, STEPS)
    rec.close()
    monkeypatch.undo()
    assert_same_training(result, baseline)
    lines = error_lines(capfd.readouterr().err)
    assert len(lines) == 1 and "Input/output error" in lines[0]
    assert rec.written > 0 and rec.dropped > 0
    assert rec.written + rec.dropped == STEPS
    data = weighttui.open(path)
    assert data.corruptions == [] and data.torn_tail == 0
    assert data.snapshot_count == rec.written
    assert data.end is None  # no end record could be written


def test_log_directory_removed_mid_run(tmp_path, baseline, capfd):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    rec = Recorder(logdir / "run.wtui")
    removed = threading.Event()

    def fault(step):
        if step == 20:
            shutil.rmtree(logdir)
            removed.set()

    result = train(rec, STEPS, fault=fault)
    rec.close()
    assert removed.is_set() and not logdir.exists()
    assert_same_training(result, baseline)
    lines = error_lines(capfd.readouterr().err)
    assert len(lines) == 1 and "removed" in lines[0]
    assert not rec.active
    assert rec.dropped >= STEPS - 20  # nothing after the removal reached a file
    assert rec.written + rec.dropped == STEPS


def test_permission_denied_on_open(tmp_path, baseline, capfd):
    logdir = tmp_path / "ro"
    logdir.mkdir()
    path = logdir / "run.wtui"
    if os.geteuid() == 0:
        # root ignores mode bits: the child drops to `nobody` before opening
        os.chmod(tmp_path, 0o755)
        out, err = run_child("setuid", path)
        assert out["same"], "training results changed"
        assert out["written"] == 0 and not out["active"]
        assert out["dropped"] == out["scheduled"] == 30
    else:
        os.chmod(logdir, 0o500)
        try:
            rec = Recorder(path, every=2)
            result = train(rec, STEPS, every=2)
            rec.close()
        finally:
            os.chmod(logdir, 0o700)
        assert_same_training(result, baseline)
        err = capfd.readouterr().err
        assert rec.written == 0 and rec.dropped == result[2] == 30
    lines = error_lines(err)
    assert len(lines) == 1 and "Permission denied" in lines[0], err
    assert not path.exists()


# ------------------------------------------------------------------ slow disk


def test_blocked_writer_drops_and_counts(tmp_path, baseline, capfd, monkeypatch):
    """The disk stalls for the whole run: training finishes anyway, drops are counted."""
    path = tmp_path / "run.wtui"
    rec = Recorder(path, queue_size=4)
    release = threading.Event()
    real = os.write
    fd = rec.writer.fd

    def write(f, data):
        if f == fd:
            release.wait(60)
        return real(f, data)

    monkeypatch.setattr(os, "write", write)
    result = train(rec, STEPS)
    # Training is over while the writer is still stuck in its first write:
    # proof that the loop never waited for the disk.
    assert not release.is_set()
    assert rec.dropped > 0
    release.set()
    rec.close()
    monkeypatch.undo()
    assert_same_training(result, baseline)
    assert error_lines(capfd.readouterr().err) == []  # slowness is not an error
    assert rec.written + rec.dropped == STEPS
    data = weighttui.open(path)
    assert data.corruptions == [] and data.status == "finished"
    assert data.snapshot_count == rec.written
    assert data.end.snapshots == rec.written and data.end.dropped == rec.dropped
    dropped_events = [e for e in data.events if e.kind == "dropped"]
    assert dropped_events and dropped_events[0].level == "warning"
    assert str(rec.dropped) in dropped_events[-1].message


def test_a_snapshot_in_the_log_counts_as_written_when_a_later_frame_of_its_job_fails(tmp_path, monkeypatch, capfd):
    """A snapshot's frame reached the log, then its scalars frame failed: the log holds it, so it is
    counted written, not dropped (the full suite under load hit this as 12 snapshots read, 11 written)."""
    import weighttui.record.writer as writer_module
    from weighttui.log.format import FrameType

    real = writer_module.encode_frame

    def encode(ftype, payload):
        if ftype == FrameType.SCALARS and payload.get("step") == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(ftype, payload)

    monkeypatch.setattr(writer_module, "encode_frame", encode)
    path = tmp_path / "run.wtui"
    rec = Recorder(path)
    for step in range(6):
        rec.snapshot(step, {"w": np.full(4, float(step), np.float32)}, scalars={"loss": 1.0 / (step + 1)})
    rec.close()
    monkeypatch.undo()
    assert len(error_lines(capfd.readouterr().err)) == 1
    data = weighttui.open(path)
    assert data.snapshot_count == rec.written == 4
    assert rec.written + rec.dropped == 6
