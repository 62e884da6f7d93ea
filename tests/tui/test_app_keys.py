"""Keys and mouse on the overview: navigation, filter, sort, fold, pause, timeline, go to, help, enter."""

from __future__ import annotations

import pytest

from weighttui.tui.app import WeightApp
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.screens.help import HelpScreen
from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.timeline import GotoScreen, Timeline

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def keys(table) -> list[str]:
    return [k.value for k in table.rows]


def header(app) -> str:
    return app.screen.query_one(RunHeader).content.plain


async def loaded(tui, tmp_path, steps=30, size=(120, 30), mode="replay", **kw):
    """A finished fixed log, opened and fully loaded; returns (app, context manager)."""
    path = tmp_path / "run.wtui"
    tui.fixed_log(path, steps)
    app = WeightApp(path, mode=mode, alerts=False, **kw)
    return app, app.run_test(size=size)


async def test_navigation_filter_and_fold(tmp_path, tui):
    app, ctx = await loaded(tui, tmp_path)
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        assert keys(table)[:3] == ["g:encoder.layers.0", "t:encoder.layers.0.weight", "t:encoder.layers.0.bias"]
        assert table.has_focus
        assert table.current_key() == "t:encoder.layers.0.weight"  # on a tensor, not its group row
        await pilot.press("j")
        assert table.current_key() == "t:encoder.layers.0.bias"
        await pilot.press("k")
        assert table.current_key() == "t:encoder.layers.0.weight"
        await pilot.press("down")
        assert table.current_key() == "t:encoder.layers.0.bias"

        # Substring filter, typed into the box that "/" opens.
        await pilot.press("slash", *"bias")
        assert [k for k in keys(table) if k.startswith("t:")] == [
            "t:encoder.layers.0.bias", "t:encoder.layers.1.bias", "t:encoder.layers.2.bias"]
        assert app.tensor_order == ["encoder.layers.0.bias", "encoder.layers.1.bias", "encoder.layers.2.bias"]
        await pilot.press("enter")
        assert table.has_focus
        # Glob filter.
        await pilot.press("slash", *("\b" * 4), *"*.[12].w*")
        await pilot.pause(0.05)
        assert [k for k in keys(table) if k.startswith("t:")] == [
            "t:encoder.layers.1.weight", "t:encoder.layers.2.weight"]
        # Escape clears it.
        await pilot.press("escape")
        assert len([k for k in keys(table) if k.startswith("t:")]) == 7

        # Enter on a group row folds it; again unfolds.
        table.move_cursor(row=0)
        await pilot.press("enter")
        assert "t:encoder.layers.0.weight" not in keys(table)
        assert table.get_cell("g:encoder.layers.0", "name").plain.startswith("▸")
        await pilot.press("enter")
        assert "t:encoder.layers.0.weight" in keys(table)
        await pilot.press("z")
        assert all(k.startswith("g:") for k in keys(table))
        assert len(app.tensor_order) == 7  # folded groups still count for [ ] on the detail screen
        await pilot.press("z")
        assert len(keys(table)) == 11


async def test_sort_cycles_and_puts_the_fastest_tensor_first(tmp_path, tui):
    app, ctx = await loaded(tui, tmp_path, mode="watch")
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        table = app.screen.query_one(LayerTable)
        await pilot.press("s")
        assert app.screen.sort == "name"
        await pilot.press("s")
        assert app.screen.sort == "update ratio"
        assert not any(k.startswith("g:") for k in keys(table))  # flat when sorted by a metric
        ratio = app.data.stat_matrix("delta", "ratio")[-1]
        expected = [app.data.tensors[i].name for i in sorted(range(ratio.size), key=lambda i: -ratio[i])]
        assert [k[2:] for k in keys(table)] == expected
        await pilot.press("s")
        assert app.screen.sort == "norm change"
        norm = app.data.stat_matrix("weights", "norm")
        change = abs(norm[-1] / norm[0] - 1)
        assert keys(table)[0] == "t:" + app.data.tensors[int(change.argmax())].name
        await pilot.press("s")
        assert app.screen.sort == "alerts"

        class A:  # the fields of weighttui.analysis.diagnose.Alert that the table uses
            def __init__(self, tensor, severity):
                self.tensor, self.severity, self.message = tensor, severity, "x"

        app.set_alerts([A("encoder.layers.1.bias", "warning"), A("head.weight", "error")])
        await pilot.press("s", "s", "s", "s", "s")  # round the cycle back to alerts, re-sorted
        assert app.screen.sort == "alerts"
        assert keys(table)[:2] == ["t:head.weight", "t:encoder.layers.1.bias"]
        assert table.get_cell("t:head.weight", "mark").plain.strip() == "✖"
        assert table.get_cell("t:encoder.layers.1.bias", "mark").plain.strip() == "▲"
        assert table.get_cell("t:encoder.layers.0.bias", "mark").plain.strip() == ""


async def test_timeline_keys_and_cells_follow_the_position(tmp_path, tui):
    app, ctx = await loaded(tui, tmp_path, mode="replay")
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        table = app.screen.query_one(LayerTable)

        def norm_cell():
            return table.get_cell("t:head.weight", "norm").plain.split()[-1]

        def norm_at(row):
            return f"{app.data.stat_matrix('weights', 'norm')[row, 6]:.4g}"

        # visible rows are filled on the next refresh after the data arrives
        await tui.wait_until(pilot, lambda: table.get_cell("t:head.weight", "norm").plain.strip() != "",
                             what="the table's first values")
        assert app.position == 0 and norm_cell() == norm_at(0)
        await pilot.press("right")
        assert app.position == 1 and norm_cell() == norm_at(1)
        await pilot.press("shift+right")
        assert app.position == 11 and norm_cell() == norm_at(11)
        assert "step 110" in header(app) and "12/30" in app.screen.query_one(Timeline).content.plain
        await pilot.press("shift+left", "left")
        assert app.position == 0
        await pilot.press("left")
        assert app.position == 0  # clamped
        await pilot.press("end")
        assert app.position is None and app.row == 29 and norm_cell() == norm_at(29)
        await pilot.press("home")
        assert app.position == 0

        # g: a step (the last snapshot at or before it), then an epoch.
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        await pilot.press(*"155", "enter")
        assert app.position == 15 and int(app.data.steps[15]) == 150
        await pilot.press("g", *"e2", "enter")
        assert app.position == 20 and int(app.data.epochs[20]) == 2
        await pilot.press("g", *"nonsense", "enter")
        assert app.position == 20
        await pilot.press("g", "escape")
        assert app.position == 20 and not isinstance(app.screen, GotoScreen)

        # space plays at `speed` snapshots a second and stops again.
        await pilot.press(*["minus"] * 5)
        assert app.speed == 1
        await pilot.press("space")
        assert app.playing
        await tui.wait_until(pilot, lambda: app.position > 20, timeout=5, what="one step of play")
        await pilot.press("space")
        assert not app.playing
        stopped = app.position
        await pilot.pause(1.3)
        assert app.position == stopped
        # +: faster; played to the end it stops by itself.
        await pilot.press(*["plus"] * 6)
        assert app.speed == 100
        await pilot.press("space")
        await tui.wait_until(pilot, lambda: not app.playing, timeout=10, what="play to the end")
        assert app.row == 29


async def test_watch_scrubs_back_and_end_follows_again(tmp_path, tui):
    path = tmp_path / "live.wtui"
    log = tui.FixedLog(path)
    for s in range(10):
        log.snapshot(s)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 10)
        assert app.position is None
        await pilot.press("left", "left")
        assert app.position == 7
        log.snapshot(10)
        await tui.wait_until(pilot, lambda: app.data.n == 11)
        await pilot.pause(0.15)
        assert app.position == 7 and "step 7" in header(app)  # scrubbing stays put
        await pilot.press("right", "right", "right")
        assert app.position is None  # stepping onto the newest follows again
        await pilot.press("left")
        await pilot.press("end")
        assert app.position is None
        log.snapshot(11)
        await tui.wait_until(pilot, lambda: "step 11" in header(app), what="following")


async def test_pause_freezes_the_display_while_data_keeps_loading(tmp_path, tui):
    path = tmp_path / "live.wtui"
    log = tui.FixedLog(path)
    for s in range(3):
        log.snapshot(s)
    app = WeightApp(path, mode="watch", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 3)
        await pilot.pause(0.15)
        table = app.screen.query_one(LayerTable)
        shown = table.get_cell("t:head.weight", "norm").plain
        await pilot.press("p")
        assert app.display_paused and "PAUSED" in header(app)
        for s in range(3, 8):
            log.snapshot(s)
        await tui.wait_until(pilot, lambda: app.data.n == 8, what="data loading while paused")
        await pilot.pause(0.25)
        assert table.get_cell("t:head.weight", "norm").plain == shown
        assert app.row == 2  # the frozen snapshot
        assert "+5 new" in header(app) and "step 2" in header(app)
        await pilot.press("p")
        assert not app.display_paused and app.position is None
        assert "step 7" in header(app)
        assert table.get_cell("t:head.weight", "norm").plain != shown


async def test_enter_opens_the_tensor_and_help_lists_the_keys(tmp_path, tui):
    app, ctx = await loaded(tui, tmp_path, mode="watch")
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        table = app.screen.query_one(LayerTable)
        table.move_cursor(row=keys(table).index("t:head.weight"))
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.tensor == "head.weight"
        # `g` here shows the gradients; `:` goes to a step, as its help says
        await pilot.press("g")
        assert isinstance(app.screen, DetailScreen) and app.screen.kind == "grad"
        await pilot.press("colon")
        assert isinstance(app.screen, GotoScreen)
        await pilot.press(*"100", "enter")
        assert isinstance(app.screen, DetailScreen) and int(app.data.steps[app.position]) == 100
        await pilot.press("question_mark")
        assert "on the tensor screen, where g shows gradients: `:`" in str(
            app.screen.query_one("Static").content.columns[1]._cells)
        await pilot.press("question_mark", "escape")
        assert app.screen.query_one(LayerTable)

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("Static").content.columns[1]._cells)
        for what in ("filter", "sort", "pause", "go to", "play"):
            assert what in text
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_mouse_click_on_the_timeline_moves_the_position(tmp_path, tui):
    app, ctx = await loaded(tui, tmp_path, mode="replay", size=(100, 30))
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        await pilot.pause(0.1)
        timeline = app.screen.query_one(Timeline)
        plain = timeline.content.plain
        end = plain.rfind("─")
        await pilot.click(Timeline, offset=(end + 1, 0))
        assert app.position == 29
        # Clicking a row selects it; a second click opens it.
        table = app.screen.query_one(LayerTable)
        await pilot.click(LayerTable, offset=(5, 3))
        assert table.cursor_row == 2


async def test_footer_and_narrow_terminal(tmp_path, tui):
    """80x24: every metric column still fits next to a readable name column."""
    app, ctx = await loaded(tui, tmp_path, mode="watch", size=(80, 24))
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        await pilot.pause(0.1)
        table = app.screen.query_one(LayerTable)
        total = sum(c.width for c in table.columns.values())
        assert total <= 78
        assert table.columns[next(k for k in table.columns if k.value == "name")].width >= 20


async def test_ctrl_s_saves_the_current_screen_as_svg(tmp_path, tui, monkeypatch):
    shots = tmp_path / "shots"
    shots.mkdir()
    monkeypatch.setenv("WEIGHTTUI_SCREENSHOT_DIR", str(shots))
    app, ctx = await loaded(tui, tmp_path, mode="replay")
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        await pilot.press("end")
        await pilot.press("ctrl+s")
        files = sorted(shots.iterdir())
        assert len(files) == 1 and files[0].name.startswith("weighttui-run-") and files[0].suffix == ".svg"
        svg = files[0].read_text()
        assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
        # What was on screen: the table's tensors and the step at the timeline position.
        assert "encoder.layers.0" in svg and "head" in svg
        assert "step&#160;290" in svg
        assert any(str(files[0]) in n.message for n in app._notifications)

        # The help screen on top: that is what gets saved; a second save never overwrites the first.
        await pilot.press("question_mark", "ctrl+s")
        new = set(shots.iterdir()) - set(files)
        assert len(new) == 1
        assert "filter&#160;tensors&#160;by&#160;substring" in new.pop().read_text()
        await pilot.press("escape")

        # A directory that cannot be written: an error notice, and the viewer goes on.
        monkeypatch.setenv("WEIGHTTUI_SCREENSHOT_DIR", str(tmp_path / "missing"))
        await pilot.press("ctrl+s")
        assert any("could not save" in n.message for n in app._notifications)
        await pilot.press("left")
        assert app.position == 28


def help_text(app) -> str:
    table = app.screen.query_one("Static").content
    return " ".join(str(c) for col in table.columns for c in col._cells)


def footer_text(app) -> str:
    from textual.widgets import Footer

    footer = app.screen.query_one(Footer)
    return " ".join(f"{k.key_display} {k.description}" for k in footer.query("FooterKey"))


@pytest.mark.parametrize("screen_key, screen_name, own, absent", [
    (None, "OverviewScreen", ("filter tensors", "fold or unfold"), ("previous / next tensor",)),
    ("enter", "DetailScreen", ("previous / next tensor", "histogram density"), ("fold or unfold",)),
    ("c", "ChangeTableScreen", ("mark the timeline position", "averaging window"), ("filter tensors",)),
    ("exclamation_mark", "AlertsScreen", ("open the alert's tensor",), ("averaging window",)),
])
async def test_each_screen_has_its_own_help_and_q_in_help_quits(tmp_path, tui, screen_key, screen_name, own,
                                                                absent):
    app, ctx = await loaded(tui, tmp_path, size=(80, 24))
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        if screen_key:
            await pilot.press(screen_key)
        await tui.wait_until(pilot, lambda: type(app.screen).__name__ == screen_name and app.screen.is_mounted)
        await pilot.pause()
        footer = footer_text(app)
        # At 80 columns the footer keeps what matters: back (on pushed screens), help and quit.
        for key in (("esc back",) if screen_key else ()) + ("? help", "q quit"):
            assert key in footer, (key, footer)
        assert sum(len(k.key_display) + len(k.description) + 2 for k in app.screen.query("FooterKey")) <= 80
        await pilot.press("question_mark")
        await tui.wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = help_text(app)
        for what in own + ("previous / next snapshot", "quit"):  # its own keys, then those of every screen
            assert what in text, what
        for what in absent:
            assert what not in text, what
        await pilot.press("q")  # q quits from the help too, as the footer says
        await tui.wait_until(pilot, lambda: app.return_code is not None, what="the app to quit")
    assert app.return_code == 0


async def test_replay_at_the_end_of_a_finished_run_says_ended_not_following(tmp_path, tui):
    """`replay` + End on a finished log said `⏸ 10/s following`; docs/tui.md: `■ ended latest` at the end of
    a finished run (as `watch` shows it)."""
    app, ctx = await loaded(tui, tmp_path)
    async with ctx as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30)
        await pilot.press("home", "end")
        await pilot.pause(0.1)
        timeline = app.screen.query_one(Timeline).content.plain
        assert app.position is None and timeline.startswith("■ ended latest"), timeline
        await pilot.press("left")
        assert app.screen.query_one(Timeline).content.plain.startswith("⏸")
