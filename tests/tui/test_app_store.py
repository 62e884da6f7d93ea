"""The viewer reads history through the log's index and leaves it extended for the next one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.data.store import index as store_index
from weighttui.tui.app import WeightApp

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _write(path, steps, start=0, mode="w"):
    rng = np.random.default_rng(start)
    with Recorder(path, bins=8, mode=mode, queue_size=100000) as rec:
        for step in range(start, start + steps):
            rec.snapshot(step, {"a": rng.normal(size=(6, 6)), "b": rng.normal(size=5)},
                         scalars={"loss": 1 / (1 + step)})


async def test_viewer_starts_from_the_index_and_extends_it(tmp_path, tui, monkeypatch):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "run.wtui"
    _write(path, 40)
    first = weighttui.open(path)  # builds the index
    covered = json.loads((tmp_path / ".run.wtui.wtuidx" / "manifest.json").read_text())["log"]["covered"]
    assert first.index_path is not None and covered > 0
    _write(path, 10, start=100, mode="a")  # appended after the index was written: a second run
    app = WeightApp(path, mode="replay", alerts=False, max_rows=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.snapshot_count == 10 and len(app.data.runs) == 2,
                             what="the appended run")
        assert app.data.index_path is not None  # history came from the index
        want = weighttui.open(path, cache=False)
        assert app.data.steps.tolist() == want.steps.tolist()
        np.testing.assert_array_equal(app.data.stat_matrix("weights", "norm"), want.stat_matrix("weights", "norm"))
        assert [r.snapshots for r in app.data.runs] == [r.snapshots for r in want.runs] == [40, 10]
    after = json.loads((tmp_path / ".run.wtui.wtuidx" / "manifest.json").read_text())["log"]["covered"]
    assert after > covered  # the viewer wrote what it read
    again = weighttui.open(path)
    assert [r.snapshots for r in again.runs] == [40, 10] and again.corruptions == want.corruptions


async def test_viewer_with_nowhere_to_write_an_index_reads_histograms_back_from_the_log(tmp_path, tui, monkeypatch):
    """Read-only media and no user cache: the viewer keeps the statistics and reads histograms and samples
    back from the log (data/store/fromlog.py); its detail screen shows the same as through an index."""
    from weighttui.data.store import columns as store_columns
    from weighttui.data.store.fromlog import LogSource
    from weighttui.tui.screens.detail import DetailScreen

    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 20)  # sealed segments, even for a small log
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "run.wtui"
    _write(path, 60)
    want = weighttui.open(path)  # through an index
    monkeypatch.setattr(store_index, "writable", lambda d: False)
    (tmp_path / ".run.wtui.wtuidx").rename(tmp_path / "elsewhere")
    app = WeightApp(path, mode="replay", alerts=False, max_rows=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.snapshot_count == 60 and app.loading is None, what="loaded")
        data = app.data
        assert data.index_path is None and isinstance(data._store.spill, LogSource) and data._run.groups
        await pilot.press("end", "enter")  # the detail screen of the selected tensor: its histograms
        await pilot.pause(0.3)
        assert isinstance(app.screen, DetailScreen)
        assert data._store.spill.reads > 0  # the screen's histograms came back from the log
        for name in ("a", "b"):
            for got, expected in zip(data.histograms(name), want.histograms(name), strict=True):
                np.testing.assert_array_equal(got, expected)
            for got, expected in zip(data.samples(name), want.samples(name), strict=True):
                np.testing.assert_array_equal(got, expected)
        assert data.index_save() is None
    assert not (tmp_path / ".run.wtui.wtuidx").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "elsewhere" not in p.parts] == [path]
