"""SVG snapshots of the multi-run viewer, from logs with fixed times, host and values.

Update after an intended change of the screens with:
    pytest tests/tui/test_multi_app_snapshots.py --snapshot-update
and look at the SVGs under tests/tui/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest
from logbuilder import FIXED_TIME, fixed_sweep_log

from weighttui.tui.multi_app import MultiRunApp

pytestmark = pytest.mark.timeout(120)

SWEEP = ((0.001, "finished"), (0.01, "failed"), (0.1, "interrupted"))


def make_app(tmp_path, monkeypatch):
    # Relative paths (from the log directory) so the command shown under the list is the same on every run.
    monkeypatch.chdir(tmp_path)
    names = []
    for lr, status in SWEEP:
        names.append(fixed_sweep_log(f"lr{lr}.sock", lr, 20 if lr < 0.1 else 12, status=status))
    (tmp_path / "notes.txt").write_text("not a log")
    return MultiRunApp(names, title="weighttui · sweep", clock=lambda: FIXED_TIME + 3600)


def loaded(tui, app):
    async def run_before(pilot):
        await tui.wait_until(pilot, lambda: len(app.slots) == 3 and all(s.data.end is not None for s in app.slots)
                             and all(s.alerts is not None for s in app.slots) and app.refreshes > 0,
                             what="logs loaded and their alerts computed")
        await pilot.pause(0.3)
    return run_before


def test_run_list_120x16(snap_compare, tui, tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)
    assert snap_compare(app, terminal_size=(120, 16), run_before=loaded(tui, app))


def test_compare_update_ratio_120x36(snap_compare, tui, tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)
    assert snap_compare(app, terminal_size=(120, 36), run_before=loaded(tui, app), press=["tab", "s", "s"])
