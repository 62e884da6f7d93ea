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
