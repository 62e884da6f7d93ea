"""The multi-run viewer at sweep scale: runs read a few at a time through the store, their indexes
left for the next viewer, and a big log's latest snapshots on the list before its history."""

from __future__ import annotations

import json

import numpy as np
import pytest
from logbuilder import sgd_run

import weighttui
import weighttui.tui.multi_app as multi_app
from weighttui.data import latest
from weighttui.data.store import index as store_index
from weighttui.log.format import HEADER_SIZE
from weighttui.tui.multi_app import MultiRunApp
from weighttui.tui.screens.runs_list import RunTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LRS = (0.001, 0.01, 0.03, 0.1)
STEPS = 30


def sweep(tmp_path, steps=STEPS):
    return [sgd_run(tmp_path / f"lr{lr}.sock", lr, steps, seed=i) for i, lr in enumerate(LRS)]


class CountingApp(MultiRunApp):
    """Records how many runs were reading their history whenever a delivery was ingested."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.readers_seen: list[int] = []

    def _ingest(self, slot, item):
        self.readers_seen.append(sum(s.reading for s in self.slots))
        return super()._ingest(slot, item)


class HeldApp(MultiRunApp):
    """Holds every delivery until `release()`: what the list shows before any history is read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = True
        self.held: list = []

    def _ingest(self, slot, item):
        if self.hold:
            self.held.append((slot, item))
            return False
        return super()._ingest(slot, item)

    def release(self) -> None:
        self.hold = False
        for slot, item in self.held:
            super()._ingest(slot, item)
        self.held.clear()
        self.pump.request_refresh()


def all_read(app, n):
    return lambda: len(app.slots) == n and all(s.caught_up and s.building is None for s in app.slots)


def same_as_a_fresh_read(slot) -> None:
    want = weighttui.open(slot.path, cache=False)
    assert slot.data.steps.tolist() == want.steps.tolist()
    for name in want.tensor_names:
        np.testing.assert_array_equal(slot.data.series(name, "norm")[1], want.series(name, "norm")[1])
    np.testing.assert_array_equal(slot.data.scalars("loss")[1], want.scalars("loss")[1])


async def test_runs_are_read_in_turn_and_leave_their_index(tmp_path, tui, monkeypatch):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)  # these small logs get an index too
    monkeypatch.setattr(multi_app, "LOAD_AT_ONCE", 1)
    paths = sweep(tmp_path)
    app = CountingApp(directory=tmp_path, mode="replay")
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, all_read(app, len(paths)), what="every run read")
        assert app.readers_seen and max(app.readers_seen) == 1  # one run read its history at a time
        for slot in app.slots:
            same_as_a_fresh_read(slot)
            # saved once it had been read, not only at exit
            manifest = tmp_path / f".{slot.name}.wtuidx" / "manifest.json"
            assert json.loads(manifest.read_text())["log"]["covered"] == slot.data.file_size
        table = app.screen.query_one(RunTable)
        await pilot.pause(0.3)
        assert [tui.cell_text(table, p, "snapshots") for p in paths] == [str(STEPS)] * len(paths)

    again = MultiRunApp(directory=tmp_path, mode="replay")
    async with again.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, all_read(again, len(paths)), what="every run read again")
        for slot in again.slots:
            assert slot.data.index_path is not None  # the history came from the index
            same_as_a_fresh_read(slot)


async def test_a_big_log_shows_its_latest_snapshots_before_its_history(tmp_path, tui, monkeypatch):
    monkeypatch.setattr(latest, "PREVIEW_MIN_BYTES", 0)  # every log counts as big
    paths = sweep(tmp_path)
    app = HeldApp(directory=tmp_path, mode="watch")
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, lambda: len(app.slots) == len(paths) and all(s.prepared for s in app.slots),
                             what="every run prepared")
        await pilot.pause(0.3)
        table = app.screen.query_one(RunTable)
        for path, slot in zip(paths, app.slots, strict=True):
            assert slot.building is not None and slot.building.snapshot_count == 0  # nothing read yet
            assert tui.cell_text(table, path, "last_step") == str(STEPS - 1)
            assert tui.cell_text(table, path, "snapshots") == "…"  # the count is not known yet
            assert tui.cell_text(table, path, "status") == "finished"  # the end record is among the latest
            loss = weighttui.open(path, cache=False).scalars("loss")[1][-1]
            assert float(tui.cell_text(table, path, "loss")) == pytest.approx(loss, rel=1e-3)
        app.release()
        await tui.wait_until(pilot, all_read(app, len(paths)), what="every run read")
        await pilot.pause(0.3)
        for path, slot in zip(paths, app.slots, strict=True):
            same_as_a_fresh_read(slot)
            assert tui.cell_text(table, path, "snapshots") == str(STEPS)


async def test_queued_runs_say_so_until_their_turn(tmp_path, tui, monkeypatch):
    monkeypatch.setattr(multi_app, "LOAD_AT_ONCE", 1)
    paths = sweep(tmp_path)
    app = HeldApp(directory=tmp_path, mode="watch")
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, lambda: len(app.held) >= 1 and all(s.prepared for s in app.slots),
                             what="the first run's first delivery")
        await pilot.pause(0.3)
        table = app.screen.query_one(RunTable)
        statuses = [tui.cell_text(table, p, "status") for p in paths]
        assert statuses[1:] == ["queued"] * (len(paths) - 1), statuses
        assert [s.follower is not None for s in app.slots] == [True] + [False] * (len(paths) - 1)
        app.release()
        await tui.wait_until(pilot, all_read(app, len(paths)), what="every run read")
        await pilot.pause(0.3)
        assert [tui.cell_text(table, p, "status") for p in paths] == ["finished"] * len(paths)


def test_preview_only_for_what_the_index_does_not_cover(tmp_path, monkeypatch):
    path = sgd_run(tmp_path / "run.sock", 0.01, STEPS)
    size = (tmp_path / "run.sock").stat().st_size
    assert latest.preview(path, HEADER_SIZE, max_rows=64) is None  # small: read from the start
    got = latest.preview(path, HEADER_SIZE, max_rows=64, min_bytes=0)
    assert got is not None and int(got.steps[-1]) == STEPS - 1 and got.end is not None
    assert latest.preview(path, size, max_rows=64, min_bytes=0) is None  # all covered by an index
