"""A live run's index is saved off the UI thread: a slow save never holds new snapshots back.

The save is made to block (SavePlan.write waits on an Event) while a real Recorder
appends; the screen must show the new steps meanwhile, no second save may start,
and quitting while it blocks must finish it and leave an index the next open uses.
Small logs and small segments (MIN_LOG_BYTES 0, SEAL_ENTRIES 40) so that groups are
spilled to the index directory while the viewer follows the log.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import weighttui
import weighttui.tui.app as single_app
import weighttui.tui.multi_app as multi_app
from weighttui import Recorder
from weighttui.data.run import RunData
from weighttui.data.store import columns as store_columns
from weighttui.data.store import index as store_index
from weighttui.tui.app import WeightApp
from weighttui.tui.multi_app import MultiRunApp
from weighttui.tui.screens.runs_list import RunTable
from weighttui.tui.widgets.header import RunHeader

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


class BlockedSaves:
    """SavePlan.write held until `release` is set; counts writes, and writes running at once."""

    def __init__(self, monkeypatch):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.running = 0
        self.overlapped = False
        self._lock = threading.Lock()
        original = store_index.SavePlan.write

        def write(plan, fd, st):
            with self._lock:
                self.calls += 1
                self.running += 1
                self.overlapped |= self.running > 1
            self.entered.set()
            try:
                assert self.release.wait(60), "the test never released the save"
                return original(plan, fd, st)
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(store_index.SavePlan, "write", write)


@pytest.fixture
def live_index(monkeypatch, tmp_path):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 40)
    monkeypatch.setattr(store_index, "SEAL_ENTRIES", 40)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(single_app, "INDEX_SAVE_S", 0.0)  # a save after every delivery (one at a time)
    monkeypatch.setattr(multi_app, "INDEX_SAVE_S", 0.0)
    return BlockedSaves(monkeypatch)


def snap(rec: Recorder, step: int) -> None:
    rng = np.random.default_rng(step)
    rec.snapshot(step, {"a": rng.normal(size=(6, 6)), "b": rng.normal(size=5)}, scalars={"loss": 1 / (1 + step)})


def header(app) -> str:
    content = app.screen.query_one(RunHeader).content  # (a str on the start screen)
    return getattr(content, "plain", str(content))


def same_as_a_fresh_read(path) -> None:
    """The index left behind covers the whole log, is used by the next open and reads the same."""
    reopened = RunData(path)
    scan = reopened.load_index()
    assert scan is not None and scan.offset == path.stat().st_size  # the next viewer starts at the end
    via_index, fresh = weighttui.open(path), weighttui.open(path, cache=False)
    assert via_index.index_path is not None
    assert via_index.steps.tolist() == fresh.steps.tolist()
    np.testing.assert_array_equal(via_index.stat_matrix("weights", "norm"), fresh.stat_matrix("weights", "norm"))
    np.testing.assert_array_equal(via_index.histograms("a")[1], fresh.histograms("a")[1])


async def test_a_blocked_save_does_not_hold_new_steps_back(tmp_path, tui, live_index):
    saves = live_index
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=8, queue_size=100000)
    for step in range(30):
        snap(rec, step)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: "step 29" in header(app), what="step 29 on screen")
        snap(rec, 30)  # a delivery after catching up: the save is due
        await tui.wait_until(pilot, lambda: saves.entered.is_set(), what="a save in flight")
        for step in range(31, 40):
            snap(rec, step)
        await tui.wait_until(pilot, lambda: "step 39" in header(app), what="step 39 on screen during the save")
        assert app.data.n == 40
        assert app.index_saver.busy and saves.calls == 1  # still blocked, and no second save started
        saves.release.set()
        await tui.wait_until(pilot, lambda: app.index_saver.saves >= 1, what="the save completed")
        snap(rec, 40)  # later saves go on (one at a time)
        await tui.wait_until(pilot, lambda: app.index_saver.saves >= 2, what="the next save")
        await tui.wait_until(pilot, lambda: "step 40" in header(app), what="step 40 on screen")
        rec.close()
        await tui.wait_until(pilot, lambda: app.data.end is not None, what="the end record")
    assert not saves.overlapped
    same_as_a_fresh_read(path)


async def test_quitting_during_a_save_finishes_it(tmp_path, tui, live_index):
    saves = live_index
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=8, queue_size=100000)
    for step in range(30):
        snap(rec, step)
    app = WeightApp(path, mode="watch", alerts=False)
    seen: dict = {}
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: "step 29" in header(app), what="step 29 on screen")
        snap(rec, 30)
        await tui.wait_until(pilot, lambda: saves.entered.is_set(), what="a save in flight")
        for step in range(31, 35):
            snap(rec, step)
        await tui.wait_until(pilot, lambda: "step 34" in header(app), what="step 34 on screen")
        finish = app.index_saver.finish

        def finish_on_quit():
            seen["busy"] = app.index_saver.busy
            saves.release.set()  # the save goes on while quitting waits for it
            finish()
            seen["done"] = app.index_saver.saves

        app.index_saver.finish = finish_on_quit  # type: ignore[method-assign]
        await pilot.press("q")
    rec.close()
    assert seen == {"busy": True, "done": 1}
    assert not saves.overlapped
    # the log ends with the end record now, which no viewer read: the next open extends the index
    reopened = RunData(path)
    scan = reopened.load_index()
    assert scan is not None and reopened.snapshot_count == 35  # all that the quitting viewer had read
    same_as_a_fresh_read_after_open(path)


def same_as_a_fresh_read_after_open(path) -> None:
    weighttui.open(path)  # extends the index by the end record
    same_as_a_fresh_read(path)


async def test_a_failing_save_does_not_stop_the_viewer(tmp_path, tui, live_index, monkeypatch):
    def broken(_plan, _fd, _st):
        raise OSError("disk full")

    monkeypatch.setattr(store_index.SavePlan, "_write", broken)
    live_index.release.set()
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=8, queue_size=100000)
    for step in range(10):
        snap(rec, step)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: "step 9" in header(app), what="step 9 on screen")
        snap(rec, 10)
        await tui.wait_until(pilot, lambda: app.index_saver.saves >= 1, what="a failed save done")
        snap(rec, 11)
        await tui.wait_until(pilot, lambda: "step 11" in header(app), what="step 11 after the failure")
    rec.close()


async def test_multi_run_app_saves_off_the_ui_thread(tmp_path, tui, live_index):
    saves = live_index
    paths = [tmp_path / "a.wtui", tmp_path / "b.wtui"]
    recs = [Recorder(p, bins=8, queue_size=100000) for p in paths]
    for rec in recs:
        for step in range(30):
            snap(rec, step)
    app = MultiRunApp(directory=tmp_path, mode="watch", alerts=False)
    seen: dict = {}
    async with app.run_test(size=(140, 30)) as pilot:
        table = lambda: app.screen.query_one(RunTable)
        await tui.wait_until(pilot, lambda: len(app.slots) == 2 and all(s.caught_up for s in app.slots)
                             and all(s.data.n == 30 for s in app.slots), what="both runs read")
        for rec in recs:
            snap(rec, 30)
        await tui.wait_until(pilot, lambda: saves.entered.is_set(), what="a save in flight")
        for rec in recs:
            for step in range(31, 40):
                snap(rec, step)
        await tui.wait_until(pilot, lambda: all(s.data.n == 40 for s in app.slots), what="steps read during the save")
        await tui.wait_until(pilot, lambda: [tui.cell_text(table(), str(p), "snapshots") for p in paths] == ["40"] * 2,
                             what="40 snapshots on the list during the save")
        assert app.index_saver.busy and saves.calls == 1
        finish = app.index_saver.finish

        def finish_on_quit():
            seen["busy"] = app.index_saver.busy
            saves.release.set()
            finish()
            seen["done"] = app.index_saver.saves

        app.index_saver.finish = finish_on_quit  # type: ignore[method-assign]
        await pilot.press("q")
    for rec in recs:
        rec.close()
    assert seen == {"busy": True, "done": 1}
    assert not saves.overlapped
    for p in paths:
        reopened = RunData(p)
        assert reopened.load_index() is not None and reopened.snapshot_count == 40
        same_as_a_fresh_read_after_open(p)
