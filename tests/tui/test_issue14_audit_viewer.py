"""Issue 14 audit, the viewer: histograms after a first `info` that indexed statistics only.

A user runs `weighttui info run.wtui` (the index it leaves holds statistics; histograms stay in the log),
then opens the viewer and the detail screen of a tensor: the heatmap must show the same histograms as a
read with no index, the index must stay valid for the next reader, and nothing may be read twice wrong.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.cli.main import main as cli
from weighttui.data.store import columns as store_columns
from weighttui.data.store import index as store_index
from weighttui.tui.app import WeightApp
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.heatmap_view import HeatmapView

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _write(path, steps):
    rng = np.random.default_rng(3)
    with Recorder(path, bins=8, queue_size=100000) as rec:
        for step in range(steps):
            rec.snapshot(step, {"a": rng.normal(size=(6, 6)), "b": rng.normal(size=5)},
                         scalars={"loss": 1 / (1 + step)})


def _fromlog(path) -> int:
    return (path.parent / f".{path.name}.wtuidx" / "manifest.json").read_text().count('"fromlog"')


async def test_detail_screen_after_a_statistics_only_info_shows_the_logs_histograms(tmp_path, tui, monkeypatch, capsys):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 20)
    monkeypatch.setattr(store_index, "SEAL_ENTRIES", 20)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "run.wtui"
    _write(path, 60)
    assert cli(["info", "--json", str(path)]) in (0, 1)
    capsys.readouterr()
    lagging = _fromlog(path)
    assert lagging > 0  # the first info left the histograms in the log
    want = weighttui.open(path, cache=False)
    app = WeightApp(path, mode="replay", alerts=False, max_rows=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.snapshot_count == 60 and app.loading is None, what="loaded")
        assert app.data.index_path is not None
        await pilot.press("end", "enter")
        await tui.wait_until(pilot, lambda: isinstance(app.screen, DetailScreen), what="the detail screen")
        screen = app.screen
        await tui.wait_until(pilot, lambda: screen.query_one(HeatmapView)._source is not None, what="the heatmap")
        steps, lo, hi, counts = screen.query_one(HeatmapView)._source[:4]
        wsteps, wlo, whi, wcounts = want.histograms(screen.tensor, screen.kind)
        assert steps.size == wsteps.size > 0
        np.testing.assert_array_equal(steps, wsteps)
        np.testing.assert_array_equal(lo, wlo)
        np.testing.assert_array_equal(hi, whi)
        np.testing.assert_array_equal(counts, wcounts)
        for name in ("a", "b"):
            for got, expected in zip(app.data.histograms(name), want.histograms(name), strict=True):
                np.testing.assert_array_equal(got, expected)
            for got, expected in zip(app.data.samples(name), want.samples(name), strict=True):
                np.testing.assert_array_equal(got, expected)
    # the viewer indexed what it read; the next reader reads it from the index, the same values
    manifest = json.loads((tmp_path / ".run.wtui.wtuidx" / "manifest.json").read_text())
    assert _fromlog(path) < lagging  # (the run's whole histograms were read: their groups indexed)
    named = set(manifest["files"])
    assert {p.name for p in (tmp_path / ".run.wtui.wtuidx").iterdir() if p.suffix in (".seg", ".bin")} == named
    again = weighttui.open(path)
    for name in ("a", "b"):
        for got, expected in zip(again.histograms(name), want.histograms(name), strict=True):
            np.testing.assert_array_equal(got, expected)
