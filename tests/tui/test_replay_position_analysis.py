"""Alerts, the layer table's sort and the change table as of a snapshot the thinned row view lacks
(issue 14: every snapshot reachable at full resolution).

The viewer's row view keeps `max_rows` rows of a long run; ← → walk every snapshot. At a snapshot
between two rows, the alerts (`!`, the table's marks), the metric sorts and the change table
(its values at the position and between the marks a and b) are that snapshot's, not those of the
row at or before it. The log is written by the real Recorder.
"""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.analysis.changes import change_table
from weighttui.tui.app import WeightApp
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.widgets.layer_table import LayerTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

STEPS = 300
MAX_ROWS = 32  # rows 0, 16, 32 ... 288 and the latest: snapshots 5 and 20 are not rows
# (what is computed as of a position sees the last data/run.UPTO_TAIL = 64 snapshots, every one)
NAN_AT = 5  # b.weight holds a NaN at this snapshot only
JUMP_AT = 20  # a.weight is scaled by 1.5 at this snapshot: the largest update and norm change there
RATIOS = {"a.weight": 1e-3, "b.weight": 2e-3, "c.weight": 3e-3}


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay_at") / "long.wtui"
    rng = np.random.default_rng(7)
    w = {n: rng.normal(0, 0.3, (8, 8)) for n in RATIOS}
    with Recorder(path, delta=True, sample=8, queue_size=4096) as rec:  # (never drops)
        for step in range(STEPS):
            for n, v in w.items():
                d = rng.normal(size=v.shape)
                v += d * (RATIOS[n] * np.linalg.norm(v) / np.linalg.norm(d))
            if step == JUMP_AT:
                w["a.weight"] *= 1.5
            shown = {n: v.copy() for n, v in w.items()}
            if step == NAN_AT:
                shown["b.weight"][0, 0] = np.nan
            rec.snapshot(step, shown, scalars={"loss": 1.0 / (1 + step)})
    return str(path)


async def replay(pilot, app, tui) -> None:
    await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                         what="the whole log")
    await pilot.pause(0.05)
    assert app.data.n < STEPS and not {NAN_AT, JUMP_AT} & set(app.data.snapshot_index.tolist())


async def go(pilot, app, tui, index: int) -> None:
    """To snapshot `index` with ← → from the first one, and wait for the alerts there."""
    await pilot.press("home", *["right"] * index)
    assert app.view().step == index and app.view().snapshot == index
    if app._diagnose is not None:
        await tui.wait_until(pilot, lambda: not app._alerts_dirty, what="the alerts at the position")
    await pilot.pause()


def nonfinite(app) -> list:
    return [a for a in app.alerts if a.rule == "nonfinite" and a.tensor == "b.weight"]


async def test_alerts_are_those_of_the_snapshot_at_the_position(long_log, tui):
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS)
    async with app.run_test(size=(120, 30)) as pilot:
        await replay(pilot, app, tui)
        await go(pilot, app, tui, NAN_AT - 1)
        assert nonfinite(app) == []
        await go(pilot, app, tui, NAN_AT)  # the row at or before it (step 0) has no NaN
        [alert] = nonfinite(app)
        assert alert.step == NAN_AT and alert.severity == "error"
        assert app.screen.query_one(LayerTable).get_cell("t:b.weight", "mark").plain.strip() == "✖"
        await pilot.press("exclamation_mark")
        screen = app.screen
        assert isinstance(screen, AlertsScreen)
        table = screen.query_one("#alerts")
        shown = [(table.get_row_at(i)[1].plain, table.get_row_at(i)[2].plain, table.get_row_at(i)[3].plain)
                 for i in range(table.row_count)]
        assert ("nonfinite", "b.weight", str(NAN_AT)) in shown
        assert screen.query_one("#ahead").content.plain.startswith(f"{len(app.alerts)} alert")
        assert f" as of step {NAN_AT} · " in screen.query_one("#ahead").content.plain
        await pilot.press("escape")
        await go(pilot, app, tui, NAN_AT + 1)  # the snapshots just before a position are its history
        assert "finite again at step 6" in nonfinite(app)[0].message
        # at snapshot 16, a row of the row view, too: the NaN 11 snapshots before is seen (the row
        # view alone, rows 0 and 16, lacks it); 100 snapshots on, past the full-resolution tail,
        # it is still an alert (a NaN anywhere before the position is never lost to thinning)
        await pilot.press("home", *["right"] * 16)
        assert app.view().snapshot is None and app.view().step == 16
        await tui.wait_until(pilot, lambda: not app._alerts_dirty, what="the alerts at the position")
        assert [a.step for a in nonfinite(app)] == [NAN_AT]
        await go(pilot, app, tui, 100)
        [alert] = nonfinite(app)
        assert alert.step == NAN_AT and "finite again by step 100" in alert.message


async def test_sort_is_by_the_values_of_the_snapshot_at_the_position(long_log, tui):
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await replay(pilot, app, tui)
        await pilot.press("end")
        await pilot.press("s", "s")  # update ratio, at the latest snapshot: c, b, a as recorded
        assert app.tensor_order == ["c.weight", "b.weight", "a.weight"]
        await go(pilot, app, tui, JUMP_AT)
        await pilot.press("s", "s", "s", "s", "s")  # round to the update ratio again: sorted here
        assert app.tensor_order[0] == "a.weight"  # its jump is at this snapshot; at step 16 it is last
        assert "sort: update ratio (at step 20, s to re-sort)" in app.screen.query_one("#sortline").content.plain
        await pilot.press("s")  # norm change since the first snapshot
        assert app.tensor_order[0] == "a.weight"
        await go(pilot, app, tui, JUMP_AT - 1)
        await pilot.press("s", "s", "s", "s", "s")
        assert app.tensor_order[0] != "a.weight"


async def test_change_table_at_the_position_and_between_exact_marks(long_log, tui):
    full = weighttui.open(long_log)  # every snapshot: what the table must show
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await replay(pilot, app, tui)
        await go(pilot, app, tui, 3)
        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, ChangeTableScreen)
        await pilot.press("a", *["right"] * (JUMP_AT - 3))
        await pilot.press("b")
        await pilot.pause()
        assert (screen.mark_a, screen.mark_b) == (3, JUMP_AT)
        head = screen.query_one("#chead").content.plain
        assert f"changes at step {JUMP_AT} (snapshot {JUMP_AT + 1}/{STEPS})" in head
        assert "a = step 3, b = step 20" in head
        got = {r["tensor"]: r for r in screen.rows}
        want = {r["tensor"]: r for r in change_table(full, row=JUMP_AT, mark_a=3, mark_b=JUMP_AT)}
        for name in RATIOS:
            assert got[name]["change_ab_from"] == "samples"
            for col in ("change_ab", "ratio", "update_norm", "max_abs", "norm_change"):
                assert got[name][col] == pytest.approx(want[name][col]), (name, col)
        # a.weight moved by half its norm between the marks; the rows at or before them (0, 16) say less
        assert got["a.weight"]["change_ab"] > 0.4
        cell = screen.table.get_cell("a.weight", "change_ab").plain.strip()
        assert cell and cell != "–"
        # the marks stay when the table is left and opened again
        await pilot.press("escape", "home", "c")
        again = app.screen
        assert isinstance(again, ChangeTableScreen) and again is not screen
        assert (again.mark_a, again.mark_b) == (3, JUMP_AT)
        assert "a = step 3, b = step 20" in again.query_one("#chead").content.plain
        await pilot.press("x")
        assert (again.mark_a, again.mark_b) == (None, None)
