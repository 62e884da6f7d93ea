"""What a new user trips over on the screens (issue 18, items 12 and 13), checked on real apps and logs."""

from __future__ import annotations

import numpy as np
import pytest

from weighttui import Recorder
from weighttui.tui.app import WeightApp
from weighttui.tui.widgets.heatmap_view import axis_label
from weighttui.tui.widgets.layer_rows import ratio_band
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.timeline import Timeline

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.mark.parametrize("width", range(4, 60))
def test_histogram_axis_labels_never_run_into_each_other(width):
    left, right = "-0.000269", "0.000406"
    middles = ("μ 1.28e-05  σ 0.000131", "μ 1.28e-05 σ 0.000131", "μ 1.28e-05")
    label = axis_label(width, left, right, middles)
    assert len(label) <= width
    words = label.split()
    assert all(w in (left, right, "μ", "σ", "1.28e-05", "0.000131") for w in words), label
    if len(left) + len(right) + 1 <= width:
        assert label.startswith(left) and label.endswith(right)


def test_ratio_band_says_frozen():
    assert ratio_band(0.0) == "frozen" and ratio_band(1e-3, trainable=False) == "frozen"
    assert ratio_band(1e-3) == "good" and ratio_band(np.nan) == ""


async def wait_loaded(pilot, app, n):
    for _ in range(500):
        if app.data.n == n and app.first_data_at is not None:
            return
        await pilot.pause(0.02)
    raise AssertionError("the log did not load")


async def test_live_run_timeline_cursor_and_frozen_tensor(tmp_path):
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=8)
    rng = np.random.default_rng(0)
    w = {"enc.weight": rng.normal(size=(4, 4)), "enc.bias": np.zeros(4), "emb.weight": rng.normal(size=(6, 2))}
    for step in range(6):
        w["enc.weight"] = w["enc.weight"] * 0.99 + 1e-3
        w["enc.bias"] = w["enc.bias"] + 1e-3
        rec.snapshot(step, dict(w))  # emb.weight never changes: frozen
    app = WeightApp(path, mode="watch", alerts=False)
    try:
        async with app.run_test(size=(100, 24)) as pilot:
            await wait_loaded(pilot, app, 6)
            await pilot.pause(0.1)
            timeline = app.screen.query_one(Timeline).content.plain
            assert timeline.startswith("● live following") and "⏸" not in timeline
            table = app.screen.query_one(LayerTable)
            assert table.current_key().startswith("t:")  # the cursor starts on a tensor, not a group
            assert "frozen" in table.get_cell("t:emb.weight", "ratio").plain
            assert "frozen" not in table.get_cell("t:enc.weight", "ratio").plain
            await pilot.press("left")  # scrubbing: the play state is shown again
            assert app.screen.query_one(Timeline).content.plain.startswith("⏸")
    finally:
        rec.close()
