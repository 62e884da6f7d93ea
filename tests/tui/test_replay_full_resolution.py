"""Replay at full resolution outside the detail screen (issue 14: every snapshot reachable).

The viewer's row view thins a long run to `max_rows` rows; ← → in the real app still walk every
snapshot of the log, and what the overview shows at the position (header step and epoch, the
timeline, the scalars, the layer table's values and NaN marks) is that snapshot's, read from the
store, also for the snapshots the row view lacks. shift+← → move by rows of the timeline.
"""

from __future__ import annotations

import numpy as np
import pytest
from logbuilder import FixedLog

import weighttui
from weighttui.tui.app import WeightApp
from weighttui.tui.formatting import fmt, fmt_value
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.heatmap_view import HistogramBars
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.scalars import ScalarsPanel
from weighttui.tui.widgets.timeline import Timeline

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

STEPS = 300
MAX_ROWS = 32  # the row view keeps about 20 of the 300 snapshots (every 16th and the latest)
NAN_AT = 5  # tensor 0 holds a NaN at this snapshot only: one the row view lacks


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "long.wtui"
    log = FixedLog(path)
    for s in range(STEPS):
        log.snapshot(s * 10, epoch=s // 7, nan_in=0 if s == NAN_AT else None)
    log.end(snapshots=STEPS)
    return str(path)


def text(widget) -> str:
    return widget.content.plain


async def replay(pilot, app, tui) -> None:
    await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                         what="the whole log")
    await pilot.pause(0.05)
    assert app.data.n < STEPS  # thinned


def shown_value(app, name: str, column: str) -> str:
    """The value part of a layer-table cell (after the sparkline)."""
    return app.screen.query_one(LayerTable).get_cell("t:" + name, column).plain.split()[-1]


def mark(app, name: str) -> str:
    return app.screen.query_one(LayerTable).get_cell("t:" + name, "mark").plain.strip()


def expected(app, full, index: int, name: str) -> dict[str, str]:
    """What the table must show for `name` at snapshot `index`: the log's own values."""
    col = full.tensor_names.index(name)
    value_w = app.screen.query_one(LayerTable)._lay["value"]
    norm = full.stat_matrix("weights", "norm")[index, col]
    ratio = full.stat_matrix("delta", "ratio")[index, col] / 10  # per optimizer step: snapshots are 10 steps apart
    return {"norm": fmt(norm, value_w).strip(), "ratio": fmt(ratio, value_w - 1).strip()}


async def test_arrows_walk_every_snapshot_with_the_logs_values(long_log, tui):
    full = weighttui.open(long_log)  # every snapshot: the log's own values
    steps, epochs = full.steps, full.epochs
    name = full.tensor_names[1]
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await replay(pilot, app, tui)
        thinned = set(app.data.snapshot_index.tolist())
        assert app.position == 0 and "step 0 " in text(app.screen.query_one(RunHeader)) + " "
        visited = []
        for index in range(1, 40):
            await pilot.press("right")
            visited.append(app.view().step)
            header = text(app.screen.query_one(RunHeader))
            assert f"step {steps[index]}  epoch {epochs[index]}" in header
            assert f"  {index + 1}/{STEPS}  step {steps[index]}  epoch {epochs[index]}" in \
                text(app.screen.query_one(Timeline))
            if index in (1, 2, 7, 15, 17, 33):
                assert index not in thinned
                want = expected(app, full, index, name)
                assert shown_value(app, name, "norm") == want["norm"]
                assert shown_value(app, name, "ratio") == want["ratio"]
                # not the row view's row at or before it: the test would see a stale value
                assert want["norm"] != expected(app, full, index - index % 16, name)["norm"]
                loss = full.scalars("loss")[1][index]
                assert fmt(loss, 8).strip() in text(app.screen.query_one(ScalarsPanel))
        assert visited == steps[1:40].tolist()  # every snapshot, none skipped, none twice

        # the NaN at a snapshot the row view lacks is marked there, and only there
        await pilot.press("home")
        assert mark(app, full.tensor_names[0]) == ""
        for _ in range(NAN_AT):
            await pilot.press("right")
        assert NAN_AT not in thinned and app.view().step == steps[NAN_AT]
        assert mark(app, full.tensor_names[0]) == "✖"
        assert shown_value(app, full.tensor_names[0], "norm") == "nan"
        await pilot.press("right")
        assert mark(app, full.tensor_names[0]) == ""

        # back one at a time, exactly
        await pilot.press("left", "left")
        assert app.view().step == steps[NAN_AT - 1]


async def test_shift_arrows_move_by_rows_of_the_timeline(long_log, tui):
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await replay(pilot, app, tui)
        rows = app.data.steps
        await pilot.press("right", "right", "right")  # between rows 0 and 1
        assert app.view().snapshot == 3
        await pilot.press("shift+right")
        assert app.view().snapshot is None and app.view().step == rows[10]
        await pilot.press("right", "shift+left")  # from between rows 10 and 11: ten rows back from row 11
        assert app.view().step == rows[1]
        await pilot.press("end", "left")
        assert app.view().step == (STEPS - 2) * 10  # the snapshot before the latest, not the row before


async def test_goto_and_play_at_full_resolution(long_log, tui):
    full = weighttui.open(long_log)
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await replay(pilot, app, tui)
        app._goto("1230")  # a step the row view lacks
        await pilot.pause()
        assert app.view().step == 1230 and app.view().snapshot == 123
        app._goto("e20")  # the first snapshot of epoch 20 (index 140), not the first row in it
        await pilot.pause()
        assert app.view().step == int(full.steps[np.argmax(full.epochs >= 20)]) == 1400
        await pilot.press("home")
        for _ in range(3):  # play: the speed is in snapshots a second (10/s: one a tick), every one
            app._play_tick()
        assert app.view().step == 30 and app.view().snapshot == 3


async def test_detail_screen_shows_the_epoch_of_any_snapshot(long_log, tui):
    """Item: the zoom cursor's snapshot, and a position between the row view's rows, show their
    step and epoch as read from the log."""
    full = weighttui.open(long_log)
    app = WeightApp(long_log, mode="replay", max_rows=MAX_ROWS, alerts=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay(pilot, app, tui)
        await pilot.press("right", "right", "right")
        app.open_tensor(full.tensor_names[1])
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        head = text(screen.query_one("#dhead"))
        assert f"step 30 epoch {full.epochs[3]} (snapshot 4/{STEPS}" in head
        # the values and the histogram are that snapshot's, not the row's before it (step 0)
        name = full.tensor_names[1]
        norm = full.series(name, "norm")[1]
        assert f"norm {fmt_value(norm[3], 0).strip()} " in head and fmt_value(norm[0], 0) != fmt_value(norm[3], 0)
        assert "at step 30:" in screen.query_one(HistogramBars)._source[5]
        await pilot.press("end", "i", "i", "i", "left", "left", "left")
        await pilot.pause()
        index = STEPS - 4
        assert index not in set(app.data.snapshot_index.tolist())
        head = text(screen.query_one("#dhead"))
        assert screen.cursor == full.steps[index]
        assert f"step {full.steps[index]} epoch {full.epochs[index]} (snapshot {index + 1}/{STEPS}, zoom cursor)" \
            in head
