"""The line-rendered layer table with many tensors: paging, lines drawn from the data, cached lines, click, sideways."""

from __future__ import annotations

import numpy as np
import pytest

from weighttui.tui.app import WeightApp
from weighttui.tui.formatting import fmt, fmt_rate
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.sparkline import spark, spark_many

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

NAMES = [f"blocks.{i}.{p}" for i in range(100) for p in ("attn", "mlp", "norm")]


async def big_table(tui, tmp_path, size=(100, 30), steps=5):
    path = tmp_path / "many.wtui"
    log = tui.FixedLog(path, names=NAMES)
    for s in range(steps):
        log.snapshot(s)
    log.end(snapshots=steps)
    app = WeightApp(path, mode="watch", alerts=False)
    return app, app.run_test(size=size)


def line_at_cursor(table) -> str:
    return table.render_line(table.cursor_row - int(table.scroll_y) + 1).text


def norm_text(app, name, width=7) -> str:
    col = app.data.tensor_names.index(name)
    return fmt(app.data.stat_matrix("weights", "norm")[app.row, col], width).strip()


async def test_paging_through_300_tensors_draws_the_right_rows(tmp_path, tui):
    app, ctx = await big_table(tui, tmp_path)
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 5 and app.data.end is not None)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        assert table.row_count == 400  # 100 layer groups + 300 tensors
        visible = table.size.height - 1
        # Only the rows on screen were computed, not all 400.
        assert table.get_cell("t:" + NAMES[0], "norm").plain.strip()
        assert table.get_cell("t:" + NAMES[-1], "norm").plain == ""
        assert len(table._stale) >= table.row_count - (visible + 4)
        assert table.render_line(0).text.split()[:2] == ["tensor", "norm"]

        await pilot.press("pagedown")
        assert table.cursor_row == 1 + visible - 1 and table.scroll_y > 0  # from row 1: the first tensor
        await pilot.press("pagedown", "pagedown")
        entry = table.current_entry()
        line = line_at_cursor(table)
        shown = entry.name.rsplit(".", 1)[-1] if hasattr(entry, "col") else entry.layer
        assert shown in line
        if hasattr(entry, "col"):
            assert norm_text(app, entry.name) in line
        # Rows scrolled past were filled as they came into view, and nothing else.
        assert len(table._stale) >= table.row_count - 4 * (visible + 4)
        assert table.get_cell("t:" + NAMES[-1], "norm").plain == ""

        await pilot.press("ctrl+end")
        assert table.current_key() == "t:" + NAMES[-1]
        line = line_at_cursor(table)
        assert "norm" in line and norm_text(app, NAMES[-1]) in line
        await pilot.press("pageup")
        assert table.cursor_row == table.row_count - 1 - (visible - 1)
        await pilot.press("ctrl+home")
        assert table.cursor_row == 0 and table.scroll_y == 0

        # A click lands on the row drawn at that line, wherever the table is scrolled.
        await pilot.press("pagedown", "pagedown")
        top = int(table.scroll_y)
        await pilot.click(LayerTable, offset=(5, 4))
        assert table.cursor_row == top + 3
        key = table.current_key()
        await pilot.click(LayerTable, offset=(5, 4))  # a second click opens it (or folds a group)
        if key.startswith("t:"):
            assert type(app.screen).__name__ != "OverviewScreen"
        else:
            assert key[2:] in app.screen.collapsed


async def test_sort_and_filter_while_scrolled_down(tmp_path, tui):
    """Re-ordering the rows while paged down (the DataTable version crashed here) keeps the cursor's tensor."""
    app, ctx = await big_table(tui, tmp_path)
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 5 and app.data.end is not None)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        await pilot.press("pagedown", "pagedown", "pagedown", "j")
        if not table.current_key().startswith("t:"):
            await pilot.press("j")
        key = table.current_key()
        await pilot.press("s", "s")  # name, then update ratio (flat, largest first)
        assert app.screen.sort == "update ratio"
        assert table.current_key() == key  # the cursor stayed on its tensor, wherever it went
        assert key[2:] in line_at_cursor(table)
        ratio = app.data.stat_matrix("delta", "ratio")[app.row]
        top = app.data.tensor_names[int(np.nanargmax(ratio))]
        await pilot.press("ctrl+home")
        assert table.current_key() == "t:" + top and top in line_at_cursor(table)
        await pilot.press("slash", *"blocks.9")
        assert {k[2:].split(".")[1] for k in table.rows} <= {"9"} | {str(i) for i in range(90, 100)}
        await pilot.press("escape")
        assert table.row_count == 300


async def test_lines_are_cached_until_their_cells_change(tmp_path, tui):
    app, ctx = await big_table(tui, tmp_path)
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 5 and app.data.end is not None)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        built = table.strips_built
        app._refresh_now(force=True)  # same data, same position: nothing to redraw
        await pilot.pause()
        assert table.strips_built == built
        await pilot.press("j", "j", "k")  # the cursor moves over cached lines
        assert table.strips_built == built
        before = line_at_cursor(table)
        await pilot.press("left")  # one snapshot back: new values in every visible row
        await pilot.pause()
        assert table.strips_built > built
        assert line_at_cursor(table) != before


async def test_narrow_terminal_scrolls_sideways_with_the_names_fixed(tmp_path, tui):
    app, ctx = await big_table(tui, tmp_path, size=(56, 20))
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 5 and app.data.end is not None)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        assert table.shown_metrics == ("norm", "ratio")  # narrow: two metrics, wide sparklines, no scrolling
        assert table.virtual_size.width <= table.size.width
        # The user picks every metric column (m, then space on std and grad): now it scrolls sideways.
        await pilot.press("m")
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen")
        await pilot.press("down", "space", "down", "down", "space", "enter")
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "OverviewScreen")
        assert table.shown_metrics == ("norm", "std", "ratio", "grad")
        assert [c for c in table.columns][-4:] == ["norm", "std", "ratio", "grad"]
        assert table.virtual_size.width > table.size.width
        await pilot.press("m")  # escape leaves the choice as it is
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen")
        await pilot.press("space", "escape")
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "OverviewScreen")
        assert table.shown_metrics == ("norm", "std", "ratio", "grad")
        await pilot.press("j")
        name_w = table.columns["mark"].width + table.columns["name"].width
        plain = table.render_line(2).text
        table.scroll_to(x=12, animate=False, immediate=True)
        await pilot.pause()
        moved = table.render_line(2).text
        dx = table.scroll_offset.x
        assert 0 < dx <= 12
        assert moved[:name_w] == plain[:name_w]  # mark and name stay
        assert moved[name_w:].startswith(plain[name_w + dx:])  # the metrics moved left by dx
        assert moved.rstrip() != plain.rstrip()


def test_spark_many_matches_spark():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=30), np.full(30, 2.0), np.abs(rng.normal(size=30)), rng.normal(size=7),
              np.array([]), np.where(rng.random(30) < 0.3, np.nan, rng.normal(size=30)), np.full(30, np.nan)]
    for width in (3, 6, 14, 40):
        for log in (False, True):
            assert spark_many(series, width, log=log) == [spark(s, width, log=log) for s in series]


def test_slow_snapshot_rates_read_as_an_interval():
    """A snapshot per epoch or an imported folder of hourly checkpoints: '1 snap per 1h00m', not
    '0.000278 snap/s'; fast rates stay per second."""
    assert fmt_rate(0.5) == "0.5 snap/s" and fmt_rate(20.0) == "20 snap/s"
    assert fmt_rate(1 / 3600) == "1 snap per 1h00m"
    assert fmt_rate(1 / 300) == "1 snap per 5m00s"
    assert fmt_rate(1 / 12) == "1 snap per 12s"


@pytest.mark.parametrize("width", [8, 10, 12, 14, 16, 20])
def test_metric_headers_never_run_together(width):
    """At 120 columns the header read `grad normexploding units`: a label as wide as its column left no space
    before the next one."""
    from weighttui.tui.widgets.layer_rows import METRICS
    from weighttui.tui.widgets.layer_table import header_label

    for _key, _kind, _stat, label, _log in METRICS:
        got = header_label(label, width)
        assert len(got) == width and got[0] == " ", (label, got)
    assert header_label("exploding units", 15) == "      exploding"  # the short form where it does not fit
    assert header_label("norm", 16) == "            norm"
