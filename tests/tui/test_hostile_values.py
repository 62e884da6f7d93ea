"""The viewer on the hostile-log corpus (tests/hostile_corpus.py): absurd times, pids, meta,
histograms, statistics, steps and end records must not end the app on any screen it shows them."""

from __future__ import annotations

import pytest
from hostile_corpus import generate

from weighttui.tui.app import WeightApp
from weighttui.tui.screens.detail import DetailScreen

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

CASES = ("times_created_inf", "times_created_nan", "times_snapshot_inf", "times_snapshot_nan", "times_created_huge",
         "pid_2pow40", "meta_bytes_keys", "hist_reversed", "hist_infinite", "hist_nan_bounds_with_counts",
         "hist_edge_of_float", "hist_max_counts", "stats_huge_counts", "stats_all_inf", "stats_nonsense",
         "stats_extremes", "steps_extreme", "scalars_odd", "end_odd", "start_zeroed_block", "start_rewritten")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("corpus"))


async def _wait(pilot, cond, what, timeout=15.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


@pytest.mark.parametrize("case", CASES)
async def test_viewer_survives_hostile_values(corpus, case):
    app = WeightApp(corpus[case], mode="replay", alerts=True, clock=lambda: 1_700_000_100.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait(pilot, lambda: app.data.n >= 1 and app.data.end is not None or app.data.n >= 3, "the log")
        await pilot.pause(0.2)
        assert app.is_running, case
        for key in ("end", "home", "right"):
            await pilot.press(key)
        app.open_tensor(app.data.tensor_names[0])
        await _wait(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.is_mounted, "detail")
        for key in ("w", "d", "g", "l", "r", "z", "w"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert app.is_running and app.return_code is None, (case, key)
        await pilot.press("escape", "c")
        await pilot.pause(0.1)
        await pilot.press("escape", "exclamation_mark")
        await pilot.pause(0.1)
        assert app.is_running and app.return_code is None, case
