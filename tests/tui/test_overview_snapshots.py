"""SVG snapshots of the overview (pytest-textual-snapshot), from logs with fixed times and host.

Update after an intended change of the screen with:
    pytest tests/tui/test_overview_snapshots.py --snapshot-update
and look at the SVGs under tests/tui/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest

from weighttui.tui.app import WeightApp

pytestmark = pytest.mark.timeout(120)


def make_app(tui, tmp_path, *, steps=30, mode="watch", nan_at=None):
    path = tmp_path / "run.wtui"
    log = tui.FixedLog(path)
    for s in range(steps):
        log.snapshot(s * 10, epoch=s // 10, nan_in=1 if nan_at is not None and s >= nan_at else None)
    log.end(snapshots=steps)
    # Frozen clock: "last record ... ago" is the same on every run; alerts off so that
    # changes to the diagnose rules do not change these pictures.
    return WeightApp(path, mode=mode, alerts=False, clock=lambda: tui.FIXED_TIME + 3600)


def loaded(tui, app, n):
    async def run_before(pilot):
        await tui.wait_until(pilot, lambda: app.data.n == n and app.refreshes > 0, what="log loaded")
        await pilot.pause(0.2)
    return run_before


SIZES = [(60, 15), (80, 24), (120, 40), (200, 60)]  # 80x24 first: the layout is made for it


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_overview_sizes(snap_compare, tui, tmp_path, utc, size):
    app = make_app(tui, tmp_path)
    assert snap_compare(app, terminal_size=size, run_before=loaded(tui, app, 30))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_detail_sizes(snap_compare, tui, tmp_path, utc, size):
    """The tensor detail screen through the real app (header, heatmap, histogram axis, charts)."""
    app = make_app(tui, tmp_path)
    before = loaded(tui, app, 30)

    async def run_before(pilot):
        await before(pilot)
        app.open_tensor("encoder.layers.1.weight")
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "DetailScreen" and app.screen.is_mounted,
                             what="the detail screen")
        await pilot.pause(0.6)  # the charts follow a moment later (CHART_DELAY)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_replay_position_nan_and_sort_120x30(snap_compare, tui, tmp_path, utc):
    """Replay scrubbed to a snapshot after a NaN appeared, sorted by update ratio."""
    app = make_app(tui, tmp_path, mode="replay", nan_at=20)
    assert snap_compare(app, terminal_size=(120, 30), run_before=loaded(tui, app, 30),
                        press=["shift+right", "shift+right", "right", "s", "s"])
