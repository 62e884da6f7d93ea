"""The whole-file open and a poll-by-poll reader give the same run, thinned or not.

`weighttui.open(path, max_rows=N)` scans the file through the store; a RunData
fed poll by poll (as the TUI does) applies the same frames in smaller pieces.
Both must end with the same row view and values.
"""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui.data.run import RunData, _Thinning
from weighttui.log.format import HEADER_SIZE
from weighttui.log.tail import LogTail


def incremental(path, max_rows, run_index=None, chunk=4096):
    data = RunData(path, max_rows=max_rows, run_index=run_index)
    with LogTail(path, max_bytes_per_poll=chunk) as tail:
        while True:
            poll = tail.poll()
            data.ingest(poll)
            if poll.offset + tail.pending >= poll.size:
                break
        data.torn_tail = 0 if tail.resyncing else tail.pending
    return data


def assert_same(a: RunData, b: RunData):
    assert a.n == b.n and a.snapshot_count == b.snapshot_count
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.snapshot_index, b.snapshot_index)
    np.testing.assert_array_equal(a.present, b.present)
    for kind in ("weights", "delta", "grad"):
        assert a.has_kind(kind) == b.has_kind(kind)
        for stat in a.columns(kind):
            np.testing.assert_array_equal(a.stat_matrix(kind, stat), b.stat_matrix(kind, stat))
    for name in a.tensor_names:
        for x, y in zip(a.histograms(name), b.histograms(name), strict=True):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(a.samples(name), b.samples(name), strict=True):
            np.testing.assert_array_equal(x, y)
    assert a.scalar_names == b.scalar_names
    for s in a.scalar_names:
        np.testing.assert_array_equal(a.scalars(s)[1], b.scalars(s)[1])
    assert [(r.snapshots, r.first_step, r.last_step, r.status) for r in a.runs] == \
        [(r.snapshots, r.first_step, r.last_step, r.status) for r in b.runs]
    assert a.corruptions == b.corruptions and a.torn_tail == b.torn_tail
    assert a.full_steps == b.full_steps and a.record_counts == b.record_counts


def write_run(path, steps, *, mode="w", start=0):
    rng = np.random.default_rng(start)
    with weighttui.Recorder(path, mode=mode, bins=8, sample=3, full_every=50, queue_size=100000) as rec:
        for step in range(start, start + steps):
            ts = {"a": rng.normal(size=(4, 5)), "b": rng.normal(size=7)}
            if step % 3 == 0:
                ts["c"] = rng.normal(size=3)  # covered by every third snapshot only
            rec.snapshot(step, ts, grads={"a": rng.normal(size=(4, 5))}, scalars={"loss": 1 / (step + 1)})


@pytest.mark.parametrize("count", [1, 7, 8, 9, 63, 64, 65, 200, 333])
@pytest.mark.parametrize("max_rows", [4, 5, 8, 50])
def test_row_view_thinning_keeps_first_latest_and_an_even_stride(count, max_rows):
    thin = _Thinning(max_rows)
    for g in range(1, count + 1):
        thin.add(g)  # one snapshot at a time, as a live reader sees them
        rows = thin.rows
        assert rows[0] == 0 and rows[-1] == g - 1 and len(rows) <= max_rows
        assert rows == sorted(set(rows))
        # all but the newest lie on the current stride
        assert all(r % thin.stride == 0 for r in rows[:-1])
    once = _Thinning(max_rows)
    once.add(count)  # all at once (a whole-file open): the same rows
    assert once.rows == thin.rows


@pytest.mark.parametrize("max_rows", [4, 16, 100, 1000])
def test_fast_open_equals_incremental_ingest(tmp_path, max_rows):
    path = tmp_path / "run.wtui"
    write_run(path, 300)
    assert_same(weighttui.open(path, max_rows=max_rows), incremental(path, max_rows))


def test_fast_open_of_appended_runs_and_damage(tmp_path):
    path = tmp_path / "run.wtui"
    write_run(path, 120)
    write_run(path, 90, mode="a", start=1000)
    raw = bytearray(path.read_bytes())
    # damage a byte well inside the second run, and leave a torn tail
    raw[len(raw) * 3 // 4] ^= 0x40
    raw += raw[HEADER_SIZE : HEADER_SIZE + 50]
    path.write_bytes(bytes(raw))
    for run in (None, 0, 1):
        for max_rows in (8, 64):
            fast = weighttui.open(path, max_rows=max_rows, run=run)
            slow = incremental(path, max_rows, run_index=run)
            # one reading rule: the whole-file open and a poll-by-poll reader agree exactly
            assert_same(fast, slow)
            assert fast.torn_tail == slow.torn_tail == 50
            assert fast.status == slow.status == "finished"


def test_fast_open_with_no_thinning_needed_matches_full_read(tmp_path):
    path = tmp_path / "run.wtui"
    write_run(path, 30)
    assert_same(weighttui.open(path, max_rows=4096), weighttui.open(path))
    w = weighttui.open(path, max_rows=4).weights(step=0)
    np.testing.assert_array_equal(w["b"], weighttui.open(path).weights(step=0)["b"])
