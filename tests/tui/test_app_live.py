"""The app following real logs: appends while it runs, waiting, and every damaged-input case."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.log.format import HEADER
from weighttui.tui.app import WeightApp
from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.timeline import Timeline

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def header(app) -> str:
    return app.screen.query_one(RunHeader).content.plain


async def test_recorder_appending_while_the_app_runs(tmp_path, tui):
    """A real Recorder writes in a thread; each new step reaches the header and the table."""
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=16)
    rec.snapshot(0, tui.layer_params(0), grads={k: v * 0.1 for k, v in tui.layer_params(0).items()},
                 scalars={"loss": 1.0})
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 1, what="first snapshot")
        await tui.wait_until(pilot, lambda: "step 0" in header(app), what="step 0 on screen")
        assert app.run_status() == "live"
        table = app.screen.query_one(LayerTable)
        assert "t:layers.2.weight" in {k.value for k in table.rows}

        stop = threading.Event()

        def writer():
            for step in range(1, 6):
                p = tui.layer_params(step)
                rec.snapshot(step, p, grads={k: v * 0.1 for k, v in p.items()}, scalars={"loss": 1 / (1 + step)})
                time.sleep(0.05)
            stop.set()

        t = threading.Thread(target=writer)
        t.start()
        await tui.wait_until(pilot, lambda: "step 5" in header(app), what="step 5 on screen")
        t.join()
        assert app.data.n == 6
        assert app.position is None  # following
        # The cell shows the newest norm, the value RunData holds for step 5.
        norm_now = app.data.series("layers.2.weight", "norm")[1][-1]
        cell = table.get_cell("t:layers.2.weight", "norm").plain
        assert cell.split()[-1] == f"{norm_now:.4g}"
        # A new snapshot updated the cells in place: same row keys, no rebuild.
        assert [k.value for k in table.rows][:3] == ["g:layers.0", "t:layers.0.weight", "t:layers.0.bias"]
        rec.close()
        await tui.wait_until(pilot, lambda: app.run_status() == "finished", what="finished status")
        await pilot.press("q")
    assert app.return_code == 0


async def test_watch_waits_for_a_missing_file_then_follows_it(tmp_path, tui):
    path = tmp_path / "later.wtui"
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.waiting == "missing", what="waiting state")
        await pilot.pause(0.1)
        assert "waiting for later.wtui to appear" in header(app)
        assert "Waiting for" in tui.static_text(app.screen.query_one("#empty"))
        log = tui.FixedLog(path)
        await tui.wait_until(pilot, lambda: app.data.run is not None, what="run record")
        log.snapshot(0, epoch=0)
        log.snapshot(10, epoch=0)
        await tui.wait_until(pilot, lambda: "step 10" in header(app), what="step 10 on screen")
        assert app.screen.query_one(LayerTable).display


async def test_corruption_is_counted_and_the_rest_still_shown(tmp_path, tui):
    src = os.path.join(tui.DATA, "bitflip_payload.wtui")
    expected = json.load(open(os.path.join(tui.DATA, "expected.json")))["bitflip_payload.wtui"]
    path = tmp_path / "bitflip.wtui"
    shutil.copy(src, path)
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == len(expected["snapshot_steps"]), what="all snapshots")
        await pilot.pause(0.15)
        assert "1 corrupt record skipped" in header(app)
        assert list(app.data.steps) == expected["snapshot_steps"]
        await pilot.press("end")
        assert f"step {expected['snapshot_steps'][-1]}" in header(app)
        table = app.screen.query_one(LayerTable)
        for name, stats in expected["last_weights_stats"].items():
            assert table.get_cell(f"t:{name}", "norm").plain.split()[-1] == f"{stats['norm']:.4g}"


async def test_torn_tail_ignored_while_live_then_completed(tmp_path, tui):
    path = tmp_path / "torn.wtui"
    log = tui.FixedLog(path, pid=os.getpid())  # this process: the writer counts as alive
    log.snapshot(0, epoch=0)
    frame = log.frames(10, epoch=0)
    log.append(frame[:37])  # a writer caught mid-write
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 1, what="first snapshot")
        await pilot.pause(0.3)
        assert app.data.n == 1 and not app.data.corruptions
        assert "incomplete" not in header(app)  # live: the rest is just arriving
        log.append(frame[37:])
        await tui.wait_until(pilot, lambda: app.data.n == 2, what="completed frame")
        assert not app.data.corruptions


async def test_torn_tail_of_a_dead_writer_is_reported(tmp_path, tui):
    src = os.path.join(tui.DATA, "torn_tail.wtui")
    expected = json.load(open(os.path.join(tui.DATA, "expected.json")))["torn_tail.wtui"]
    path = tmp_path / "torn.wtui"
    shutil.copy(src, path)
    old = time.time() - 3600
    os.utime(path, (old, old))  # not growing for an hour: the writer is gone
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == len(expected["snapshot_steps"]), what="snapshots")
        await pilot.pause(0.15)
        assert app.run_status() == "stalled"
        await pilot.press("end")
        assert f"incomplete final record, {expected['torn_tail_bytes']} bytes ignored" in header(app)
        assert "STALLED" in header(app)


async def test_damage_at_the_end_is_no_incomplete_record(tmp_path, tui):
    """Bytes the reader skips as damage at the end of a finished log are a corruption, not an
    incomplete final record: the header says what `info` says (torn_tail 0)."""
    src = os.path.join(tui.DATA, "torn_tail.wtui")
    expected = json.load(open(os.path.join(tui.DATA, "expected.json")))["torn_tail.wtui"]
    raw = open(src, "rb").read()
    path = tmp_path / "damaged_end.wtui"
    path.write_bytes(raw[: len(raw) - expected["torn_tail_bytes"]] + b"\x00not a frame" * 4)
    old = time.time() - 3600
    os.utime(path, (old, old))  # not growing for an hour: the writer is gone
    info = weighttui.open(path)
    assert info.torn_tail == 0 and info.corruptions
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == len(expected["snapshot_steps"]), what="snapshots")
        await pilot.pause(0.15)
        await pilot.press("end")
        assert app.data.torn_tail == 0 and app.data.corruptions == info.corruptions
        assert "incomplete final record" not in header(app)


async def test_truncated_and_rewritten_by_a_new_run_reloads(tmp_path, tui):
    path = tmp_path / "reused.wtui"
    log = tui.FixedLog(path)
    for s in range(5):
        log.snapshot(s, epoch=0)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 5, what="first run")
        await pilot.press("left", "left")
        assert app.position == 2
        # A new training run opens the same path with mode "w" (truncate, same inode).
        new = tui.FixedLog(path, names=["other.weight"], host="otherbox")
        new.snapshot(100, epoch=0)
        await tui.wait_until(pilot, lambda: app.data.resets == 1 and app.data.n == 1, what="reload")
        await pilot.pause(0.15)
        assert app.position is None  # a new run: follow it from the start
        assert "reloaded" in header(app) and "otherbox" in header(app)
        table = app.screen.query_one(LayerTable)
        assert [k.value for k in table.rows] == ["g:other", "t:other.weight"]
        assert "step 100" in header(app)


@pytest.mark.parametrize("garbage, message", [
    (b"this is not a weighttui log at all\n" * 4, "not a weighttui run log"),
    (HEADER[:8] + struct.pack("<HH", 99, 0), "newer weighttui"),
])
async def test_replaced_by_something_that_is_not_a_log_exits_2(tmp_path, garbage, message, tui):
    path = tmp_path / "run.wtui"
    log = tui.FixedLog(path)
    log.snapshot(0)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 1, what="first snapshot")
        tmp = tmp_path / "garbage"
        tmp.write_bytes(garbage)
        os.replace(tmp, path)  # new inode: the follower reopens and checks the header
        await tui.wait_until(pilot, lambda: app.error_message is not None, what="failure")
    assert app.return_code == 2
    assert message in app.error_message


async def test_writer_killed_without_end_record_shows_stalled(tmp_path, tui):
    import subprocess
    import sys

    path = tmp_path / "dead.wtui"
    # A real writer process that records a few snapshots and then dies without closing.
    code = ("import os, numpy as np; from weighttui import Recorder\n"
            f"r = Recorder({str(path)!r})\n"
            "for s in range(3): r.snapshot(s, {'w': np.ones((4, 4)) * s})\n"
            "import time\n"
            "while r.written < 3: time.sleep(0.01)\n"
            "os._exit(0)  # dies without an end record\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    clock = {"now": time.time()}
    app = WeightApp(path, mode="watch", alerts=False, clock=lambda: clock["now"])
    async with app.run_test(size=(100, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 3, what="snapshots")
        assert app.run_status() == "live"  # just written: could still be training
        clock["now"] += 11  # 11 s without growth and the pid is gone
        assert app.run_status() == "stalled"
        assert "live following" in tui.static_text(app.screen.query_one(Timeline))
        app._tick()
        await pilot.pause(0.05)
        assert "STALLED" in header(app)
        # the timeline moves with the header: no "live following" under STALLED (nothing else redraws it)
        timeline = tui.static_text(app.screen.query_one(Timeline))
        assert "ended" in timeline and "live following" not in timeline


@pytest.mark.parametrize("name", ["clean.wtui", "unknown_type.wtui"])
async def test_example_logs_from_an_independent_writer(tmp_path, name, tui):
    expected = json.load(open(os.path.join(tui.DATA, "expected.json")))[name]
    app = WeightApp(os.path.join(tui.DATA, name), mode="replay", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == len(expected["snapshot_steps"]), what="snapshots")
        await pilot.pause(0.15)
        assert app.position == 0  # replay opens at the first snapshot
        assert f"step {expected['snapshot_steps'][0]}" in header(app)
        assert not app.data.corruptions
        table = app.screen.query_one(LayerTable)
        names = {k.value[2:] for k in table.rows if k.value.startswith("t:")}
        assert names == set(expected["last_weights_stats"])


async def test_updates_are_coalesced_while_many_snapshots_arrive(tmp_path, tui):
    """A burst of 200 snapshots must not cost 200 screen refreshes."""
    path = tmp_path / "burst.wtui"
    log = tui.FixedLog(path)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.run is not None, what="run")
        before = app.refreshes
        started = time.monotonic()
        for s in range(200):
            log.snapshot(s)
            if s % 20 == 0:
                await pilot.pause(0.01)
        await tui.wait_until(pilot, lambda: app.data.n == 200 and "step 199" in header(app), timeout=40,
                             what="all 200")
        elapsed = time.monotonic() - started
        # At most ~10 refreshes a second (plus the odd forced one), far fewer than 200.
        assert app.refreshes - before <= 10 * elapsed + 5, (app.refreshes - before, elapsed)
        assert app.refreshes - before < 200


async def test_long_run_history_is_thinned(tmp_path, tui):
    path = tmp_path / "long.wtui"
    log = tui.FixedLog(path)
    for s in range(300):
        log.snapshot(s)
    log.end(snapshots=300)
    app = WeightApp(path, mode="watch", alerts=False, max_rows=64)
    async with app.run_test(size=(160, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.snapshot_count == 300, what="all snapshots")
        await pilot.pause(0.15)
        assert app.data.n <= 64
        timeline = tui.static_text(app.screen.query_one(Timeline))
        assert f"300/300  step 299  (charts thinned to {app.data.n})" in timeline
        assert "step 299" in header(app)
        np.testing.assert_array_equal(app.data.steps[-1], 299)
