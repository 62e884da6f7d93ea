"""RunData: live ingest, thinning of long histories, resets, status."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail


def _write(path, steps, *, start=0, mode="w", close=True):
    rec = Recorder(path, mode=mode, sample=2, queue_size=100_000)  # no drops in a tight loop
    for step in range(start, start + steps):
        rec.snapshot(step, {"w": np.full(4, float(step), dtype=np.float32)}, scalars={"loss": float(step)})
    if close:
        rec.close()
    return rec


def test_live_ingest_sees_snapshots_as_they_are_flushed(tmp_path):
    path = tmp_path / "live.wtui"
    data, tail = RunData(path), LogTail(path)
    assert tail.poll().waiting == "missing"
    rec = Recorder(path)
    for step in range(3):
        rec.snapshot(step, {"w": np.ones(2) * step})
    deadline = time.monotonic() + 10
    while data.snapshot_count < 3 and time.monotonic() < deadline:
        data.ingest(tail.poll())
        time.sleep(0.01)
    assert data.steps.tolist() == [0, 1, 2]
    assert data.status == "running"  # no end record, and the writer (this process) is alive
    rec.close()
    data.ingest(tail.poll())
    assert data.status == "finished" and data.end.snapshots == 3
    tail.close()


def test_max_rows_thins_history_but_keeps_first_and_latest(tmp_path):
    path = tmp_path / "long.wtui"
    _write(path, 1000)
    full = weighttui.open(path)
    thin = weighttui.open(path, max_rows=64)
    assert full.n == 1000 and thin.snapshot_count == 1000
    assert 32 <= thin.n <= 64
    steps = thin.steps
    assert steps[0] == 0 and steps[-1] == 999 and np.all(np.diff(steps) > 0)
    # thinned rows hold the same values as the full history at those steps
    _s, norms = thin.series("w", "norm")
    _s, full_norms = full.series("w", "norm")
    np.testing.assert_array_equal(norms, full_norms[steps])
    # samples follow their rows through the thinning
    _s, samples = thin.samples("w")
    np.testing.assert_array_equal(samples[:, 0], steps.astype(np.float32))


def test_truncation_by_a_new_run_resets_the_reader(tmp_path):
    path = tmp_path / "reused.wtui"
    _write(path, 20)
    data, tail = RunData(path), LogTail(path)
    data.ingest(tail.poll())
    assert data.n == 20
    _write(path, 3, start=100)  # mode="w": truncates and starts over
    data.ingest(tail.poll())
    assert data.resets == 1 and data.steps.tolist() == [100, 101, 102]
    tail.close()


def test_append_mode_seen_live_switches_to_the_new_run(tmp_path):
    path = tmp_path / "appended.wtui"
    _write(path, 5)
    data, tail = RunData(path), LogTail(path)
    data.ingest(tail.poll())
    _write(path, 2, start=0, mode="a")
    data.ingest(tail.poll())
    assert [r.snapshots for r in data.runs] == [5, 2]
    assert data.steps.tolist() == [0, 1] and data.resets == 0
    tail.close()


def test_unfinished_log_of_a_dead_writer_is_not_running(tmp_path):
    """A writer killed before close leaves no end record; its pid is gone."""
    path = tmp_path / "dead.wtui"
    script = (
        "import os, time, numpy as np, weighttui\n"
        f"rec = weighttui.Recorder({str(path)!r})\n"
        "for s in range(3): rec.snapshot(s, {'w': np.ones(2)})\n"
        "while rec.written < 3: time.sleep(0.01)\n"
        "os._exit(0)  # no atexit, no end record\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    run = weighttui.open(path)
    assert run.end is None and run.steps.tolist() == [0, 1, 2]
    assert run.status == "unfinished"


def test_values_of_a_tensor_cut_short_are_reported_not_returned(tmp_path, monkeypatch):
    """A writer that died between the chunks of a tensor's values leaves them incomplete."""
    import weighttui.record.encode as recorder_module  # where values frames are chunked
    from weighttui.log.format import HEADER_SIZE, FrameDecoder, FrameType

    monkeypatch.setattr(recorder_module, "VALUES_CHUNK_BYTES", 16)  # 4 float32 per frame
    path = tmp_path / "cut.wtui"
    with Recorder(path, full_every=1) as rec:
        rec.snapshot(0, {"w": np.arange(10, dtype=np.float32)})
    raw = path.read_bytes()
    dec = FrameDecoder(HEADER_SIZE)
    dec.feed(raw[HEADER_SIZE:])
    chunks = [f for f in dec.frames() if f.type == FrameType.VALUES]
    assert len(chunks) == 3
    assert weighttui.open(path).weights(step=0)["w"].tolist() == list(range(10))
    # keep the first two chunks only, as if the writer died right after them
    path.write_bytes(raw[: chunks[2].offset])
    run = weighttui.open(path)
    with pytest.warns(UserWarning, match="incomplete values at step 0"):
        assert "w" not in run.weights(step=0)
