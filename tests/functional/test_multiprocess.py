"""Several processes on one log: viewers, a writer that restarts, ranks.

The convention for more than one writing rank (one log per rank, e.g.
`run.rank{RANK}.wtui`) is documented in docs/reliability.md; the last test
shows why two writers must not share one log.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

import weighttui
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail

WRITER = textwrap.dedent('''
    import sys, time
    import numpy as np
    import weighttui
    path, steps, start, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with weighttui.Recorder(path, mode=mode, queue_size=10000, meta={"start": start}) as rec:
        for step in range(start, start + steps):
            rec.snapshot(step, {"w": np.full(4, step, np.float32), "b": np.arange(3.0) + step})
            time.sleep(0.002)
''')

VIEWER = textwrap.dedent('''
    import json, sys, time
    from weighttui.log.tail import LogTail
    from weighttui.data.run import RunData
    data, tail = RunData(sys.argv[1]), LogTail(sys.argv[1])
    deadline = time.monotonic() + 60
    while data.end is None and time.monotonic() < deadline:
        data.ingest(tail.poll())
        time.sleep(0.01)
    print(json.dumps({"steps": data.steps.tolist(), "status": data.status}))
''')


def start_writer(path, steps, start=0, mode="w"):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(steps), str(start), mode])


class Viewer:
    """An in-process viewer: a LogTail feeding a RunData, as the TUI's follower does."""

    def __init__(self, path):
        self.data, self.tail = RunData(path), LogTail(path)

    def poll(self):
        self.data.ingest(self.tail.poll())
        return self.data


def follow_until(viewers, done, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for v in viewers:
            v.poll()
        if done():
            return
        time.sleep(0.01)
    raise AssertionError("viewers did not see the end in time")


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_viewer_started_before_writer_and_two_viewers_agree(tmp_path):
    path = tmp_path / "run.wtui"
    early = Viewer(path)
    assert early.tail.poll().waiting == "missing"
    path.write_bytes(b"")  # created, header not written yet
    assert early.tail.poll().waiting == "no header"
    path.unlink()
    other = subprocess.Popen([sys.executable, "-c", VIEWER, str(path)], stdout=subprocess.PIPE, text=True)
    writer = start_writer(path, 60)
    late = None
    follow_until([early], lambda: early.data.snapshot_count >= 10)
    late = Viewer(path)  # a second viewer attaches mid-run
    follow_until([early, late], lambda: early.data.end is not None and late.data.end is not None)
    assert writer.wait(60) == 0
    out = json.loads(other.communicate(timeout=60)[0])
    expected = list(range(60))
    assert early.data.steps.tolist() == late.data.steps.tolist() == out["steps"] == expected
    assert early.data.status == late.data.status == out["status"] == "finished"
    np.testing.assert_array_equal(early.data.series("b", "max")[1], np.arange(60) + 2.0)
    assert early.data.corruptions == late.data.corruptions == []


def test_viewers_never_write(tmp_path):
    """Followers open read-only; followers and `weighttui info` leave the directory as it was."""
    path = tmp_path / "run.wtui"
    assert start_writer(path, 20).wait(60) == 0
    before = (sorted(os.listdir(tmp_path)), digest(path), os.stat(path).st_mtime_ns)
    v = Viewer(path)
    v.poll()
    flags = int(open(f"/proc/self/fdinfo/{v.tail._fh.fileno()}").read().split("flags:")[1].split()[0], 8) \
        if os.path.exists("/proc/self/fdinfo") else os.O_RDONLY
    assert flags & os.O_ACCMODE == os.O_RDONLY
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    os.chmod(path, 0o444)  # a read-only log is still readable (for non-root too)
    assert weighttui.open(path).snapshot_count == 20
    assert (sorted(os.listdir(tmp_path)), digest(path), os.stat(path).st_mtime_ns) == before


def test_readers_of_a_large_log_add_only_its_index_beside_it(tmp_path):
    """A log of 1 MiB or more gets its index (the run store's cache, docs/store.md) as one hidden directory
    beside it; the log's bytes and mtime stay as they were, and --no-cache / cache=False write nothing."""
    path = tmp_path / "run.wtui"
    with weighttui.Recorder(path, full_every=1) as rec:
        for step in range(6):
            rec.snapshot(step, {"w": np.full((256, 256), step, dtype=np.float32)})
    assert os.path.getsize(path) >= 1 << 20
    before = (digest(path), os.stat(path).st_mtime_ns)
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", "--no-cache", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert weighttui.open(path, cache=False).snapshot_count == 6
    assert sorted(os.listdir(tmp_path)) == ["run.wtui"]
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert weighttui.open(path).snapshot_count == 6
    assert sorted(os.listdir(tmp_path)) == [".run.wtui.wtuidx", "run.wtui"]
    assert (digest(path), os.stat(path).st_mtime_ns) == before


def test_writer_restart_mode_w_makes_viewers_reload(tmp_path):
    path = tmp_path / "run.wtui"
    a, b = Viewer(path), Viewer(path)
    assert start_writer(path, 30).wait(60) == 0
    follow_until([a, b], lambda: a.data.end is not None and b.data.end is not None)
    first_id = a.data.run.run_id
    # restart: truncates and writes a new, *longer* run before b polls again
    writer = start_writer(path, 8, start=500, mode="w")
    follow_until([a], lambda: a.data.end is not None and a.data.run.run_id != first_id)
    assert writer.wait(60) == 0
    follow_until([a, b], lambda: b.data.end is not None and b.data.run.run_id != first_id)
    for v in (a, b):
        assert v.data.resets >= 1
        assert v.data.steps.tolist() == list(range(500, 508))
        assert len(v.data.runs) == 1 and v.data.run.meta == {"start": 500}
        assert v.data.corruptions == []


def test_writer_restart_mode_a_shows_latest_and_lists_earlier(tmp_path):
    path = tmp_path / "run.wtui"
    v = Viewer(path)
    assert start_writer(path, 12).wait(60) == 0
    follow_until([v], lambda: v.data.end is not None)
    assert start_writer(path, 5, start=100, mode="a").wait(60) == 0
    follow_until([v], lambda: len(v.data.runs) == 2 and v.data.end is not None)
    assert v.data.resets == 0  # appending is not a reset
    assert v.data.steps.tolist() == list(range(100, 105)) and v.data.run.meta == {"start": 100}
    assert [(r.index, r.snapshots, r.first_step, r.last_step, r.status) for r in v.data.runs] == \
        [(0, 12, 0, 11, "finished"), (1, 5, 100, 104, "finished")]
    first = weighttui.open(path, run=0)
    assert first.steps.tolist() == list(range(12)) and first.run.meta == {"start": 0}
    assert weighttui.open(path).steps.tolist() == list(range(100, 105))


def test_one_log_per_rank(tmp_path):
    """Ranks write concurrently, each to its own log; each log is whole."""
    writers = [start_writer(tmp_path / f"run.rank{r}.wtui", 40, start=1000 * r) for r in range(3)]
    assert [w.wait(60) for w in writers] == [0, 0, 0]
    for r in range(3):
        data = weighttui.open(tmp_path / f"run.rank{r}.wtui")
        assert data.steps.tolist() == list(range(1000 * r, 1000 * r + 40))
        assert data.status == "finished" and data.corruptions == []


def test_a_second_writer_on_a_live_log_is_refused_and_the_log_stays_whole(tmp_path):
    """Two processes on one path would interleave their runs' records: the log's
    advisory lock refuses the second writer with one line while the first
    writes; once the first has closed, mode="a" appends a new run."""
    path = tmp_path / "shared.wtui"
    go = tmp_path / "go"
    weighttui.Recorder(path).close()
    holder = textwrap.dedent('''
        import os, sys, time, numpy as np, weighttui
        path, go = sys.argv[1], sys.argv[2]
        with weighttui.Recorder(path, mode="a") as rec:
            for step in range(40):
                rec.snapshot(step, {"w": np.full(4, step, np.float32)})
                if step == 19:
                    print("ready", flush=True)
                    while not os.path.exists(go):
                        time.sleep(0.01)
    ''')
    first = subprocess.Popen([sys.executable, "-c", holder, str(path), str(go)], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "ready"
    second = subprocess.run([sys.executable, "-c", WRITER, str(path), "40", "1000", "a"],
                            capture_output=True, text=True, timeout=120)
    go.touch()
    assert first.wait(120) == 0 and second.returncode == 0
    refusals = [ln for ln in second.stderr.splitlines() if "being written by another process" in ln]
    assert len(refusals) == 1, second.stderr
    data = weighttui.open(path)
    assert len(data.runs) == 2 and data.corruptions == [] and data.torn_tail == 0
    assert data.steps.tolist() == list(range(40)) and data.status == "finished"
    third = start_writer(path, 40, start=1000, mode="a")
    assert third.wait(60) == 0
    data = weighttui.open(path)
    assert len(data.runs) == 3 and data.corruptions == [] and data.steps.tolist() == list(range(1000, 1040))
