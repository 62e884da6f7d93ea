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


def test_overview_80x24(snap_compare, tui, tmp_path, utc):
    app = make_app(tui, tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded(tui, app, 30))


def test_overview_160x48(snap_compare, tui, tmp_path, utc):
    app = make_app(tui, tmp_path)
    assert snap_compare(app, terminal_size=(160, 48), run_before=loaded(tui, app, 30))


def test_replay_position_nan_and_sort_120x30(snap_compare, tui, tmp_path, utc):
    """Replay scrubbed to a snapshot after a NaN appeared, sorted by update ratio."""
    app = make_app(tui, tmp_path, mode="replay", nan_at=20)
    assert snap_compare(app, terminal_size=(120, 30), run_before=loaded(tui, app, 30),
                        press=["shift+right", "shift+right", "right", "s", "s"])
