"""weighttui.data.liveness: the one rule for "is the writer still at work" (RunData.status, both viewers)."""

from __future__ import annotations

import os
import socket
import time

from logbuilder import moving_log

import weighttui
from weighttui.data.liveness import STALL_ANY_S, STALL_DEAD_S, growth_age, run_status, writer_dead
from weighttui.data.run import RunData

NO_SUCH_PID = 2 ** 22 + 12345  # beyond pid_max on Linux defaults: no such process


def test_run_status_rules(tmp_path):
    done = weighttui.open(moving_log(tmp_path / "done.sock"))
    failed = weighttui.open(moving_log(tmp_path / "failed.sock", status="failed"))
    assert run_status(done, growth_age=1e6) == "finished"  # an end record beats any age
    assert run_status(failed) == "failed"
    rec = moving_log(tmp_path / "live.sock", status=None)
    try:
        live = weighttui.open(tmp_path / "live.sock")
        assert live.end is None and live.run is not None
        assert run_status(live, growth_age=1.0) == "live"
        assert run_status(live, growth_age=STALL_DEAD_S + 2) == "live"  # writer alive: wait for the 30 s rule
        assert run_status(live, growth_age=STALL_DEAD_S + 2, writer_dead=True) == "stalled"
        assert run_status(live, growth_age=STALL_ANY_S + 1) == "stalled"
        assert run_status(live, growth_age=None) == "live"  # unknown age: not stalled
        assert run_status(live, growth_age=1.0, loading=True) == "loading"
        assert run_status(live, waiting="no header") == "waiting"
        live.run.pid = NO_SUCH_PID  # asked only when the age makes it matter
        assert run_status(live, growth_age=1.0) == "live"
        assert run_status(live, growth_age=STALL_DEAD_S + 2) == "stalled"
    finally:
        rec.close()
    assert run_status(RunData(tmp_path / "missing.sock")) == "waiting"


def test_writer_dead_is_only_said_for_this_host(tmp_path):
    data = weighttui.open(moving_log(tmp_path / "a.sock"))
    assert data.run.host == socket.gethostname()
    assert writer_dead(data) is False  # this process wrote it and is alive
    data.run.pid = NO_SUCH_PID
    assert writer_dead(data) is True
    data.run.host = "elsewhere"
    assert writer_dead(data) is False


def test_growth_age_from_mtime_else_from_what_was_seen(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    os.utime(path, (time.time() - 100, time.time() - 100))
    assert 99 <= growth_age(path) <= 110
    assert 9 <= growth_age(path, now=os.stat(path).st_mtime + 10) <= 11
    seen = time.monotonic() - 5
    # an mtime in the future (a network file system's clock): what this reader saw instead
    assert 5 <= growth_age(path, seen, now=os.stat(path).st_mtime - 50) < 60
    assert growth_age(path, None, now=os.stat(path).st_mtime - 50) < 0  # nothing better to go on
    # a file that cannot be stat'ed: what was seen, or unknown (None, never inf)
    assert 5 <= growth_age(tmp_path / "gone", seen) < 60
    assert growth_age(tmp_path / "gone") is None
    assert growth_age(None) is None


def test_rundata_status_running_then_unfinished(tmp_path):
    rec = moving_log(tmp_path / "r.sock", status=None)
    deadline = time.monotonic() + 30
    while rec.written < 3 and time.monotonic() < deadline:  # no write may touch the mtime set below
        time.sleep(0.01)
    try:
        data = weighttui.open(tmp_path / "r.sock")
        assert data.status == "running"  # our pid, alive
        data.run.pid = NO_SUCH_PID
        assert data.status == "unfinished"
        data.run.host = "elsewhere"  # the pid says nothing: the file grew just now
        assert data.status == "running"
        old = time.time() - STALL_ANY_S - 5
        os.utime(tmp_path / "r.sock", (old, old))
        data.last_growth = None
        assert data.status == "unfinished"
    finally:
        rec.close()
    assert weighttui.open(tmp_path / "r.sock").status == "finished"
