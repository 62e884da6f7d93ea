"""Strings from a log are shown as inert text on every screen and panel: never Rich markup, never a
terminal control sequence (issue 19, items 1 and 2). Alerts are on, so the alert rules name the
hostile tensors too."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hostile_log import FORBIDDEN, HOST, NAMES, NAN_TENSOR, SCALAR, write_hostile_log

import weighttui
from weighttui.log.text import inert
from weighttui.tui.app import WeightApp
from weighttui.tui.multi_app import MultiRunApp
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.screens.help import HelpScreen
from weighttui.tui.screens.runs_compare import CompareScreen

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

MARKUP = ["[bold red]evil", "attn[q].weight", "x[/]", "[link=x]click"]


def screen_text(app) -> str:
    svg = app.export_screenshot()
    parts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    return "".join(p.replace("&#160;", " ").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
                   for p in parts)


def check_screen(app, what: str) -> str:
    """The screen holds none of the raw control characters, and no link."""
    svg = app.export_screenshot()
    for ch in FORBIDDEN:
        assert ch not in svg, f"{what}: {ch!r} reached the screen"
    assert "evil.example" not in svg or "href" not in svg, f"{what}: a log string became a link"
    return screen_text(app)


async def wait_for(pilot, condition, what: str, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_inert_shows_what_a_terminal_would_obey():
    assert inert("layers.0.weight") == "layers.0.weight"
    assert inert("ünïcode·名前 ✓") == "ünïcode·名前 ✓"  # printable text of any script stays
    assert inert("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
    assert inert("a\nstatus: x") == "a\\x0astatus: x"
    assert inert("c1\x9b31m") == "c1\\x9b31m"
    assert inert("rtl\u202eabc\u2066") == "rtl\\u202eabc\\u2066"
    assert inert("zw\u200b\u200c\u200d\ufeff\u2060") == "zw\\u200b\\u200c\\u200d\\ufeff\\u2060"
    assert inert("ls\u2028ps\u2029") == "ls\\u2028ps\\u2029"
    assert inert(3) == "3"
    for name in NAMES + [HOST, SCALAR]:
        out = inert(name)
        assert out.isprintable() and not any(ch in out for ch in FORBIDDEN), out


async def test_markup_names_render_literally(tmp_path):
    path = tmp_path / "markup.wtui"
    with weighttui.Recorder(path) as rec:
        for step in range(3):
            rec.snapshot(step, {name: np.arange(4.0) + step for name in MARKUP},
                         scalars={"[b]loss": 1.0 / (step + 1)})
    app = WeightApp(str(path), mode="replay", alerts=True)
    async with app.run_test(size=(160, 30)) as pilot:
        await wait_for(pilot, lambda: app.data.n == 3, "the snapshots")
        await pilot.press("end")
        await pilot.pause()
        text = screen_text(app)
        for name in ("[bold red]evil", "[link=x]click", "[b]loss", "attn[q]"):
            assert name in text, name
        app.open_tensor("[bold red]evil")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.is_mounted, "detail")
        assert "[bold red]evil" in screen_text(app)
        await pilot.press("escape", "c")
        await wait_for(pilot, lambda: isinstance(app.screen, ChangeTableScreen) and app.screen.is_mounted, "changes")
        text = screen_text(app)
        assert "[bold red]evil" in text and "[link=x]click" in text


async def test_hostile_log_on_every_screen_of_the_viewer(tmp_path):
    path = write_hostile_log(tmp_path / "hostile.wtui")
    app = WeightApp(path, mode="watch", alerts=True, clock=lambda: 1_700_000_100.0)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.data.end is not None and app.data.n == 12, "the log")
        await wait_for(pilot, lambda: any(a.tensor == NAN_TENSOR for a in app.alerts), "the NaN alert")
        await pilot.pause()
        text = check_screen(app, "overview")
        assert inert(HOST) in text and "\\x1b]0;PWNED-TITLE\\x07" in text
        assert inert(SCALAR)[:9] in text  # the scalars strip (names cut at 10 cells)
        for name in ("x[/]", "[bold red]evil", "attn[q]"):  # (grouped: attn[q] is a layer)
            assert name in text, name

        await pilot.press("exclamation_mark")  # the alerts panel: a "[/]" name must not end the app
        await wait_for(pilot, lambda: isinstance(app.screen, AlertsScreen) and app.screen.is_mounted, "alerts")
        await pilot.pause()
        assert app.is_running and app.return_code is None
        text = check_screen(app, "alerts")
        assert "x[/]" in text
        await pilot.press("enter")  # opens the alert's tensor
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.is_mounted, "detail")
        assert app.screen.tensor == NAN_TENSOR
        await pilot.press("escape", "escape")

        for name in NAMES:
            app.open_tensor(name)
            await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.is_mounted, "detail")
            for kind in ("w", "d"):
                await pilot.press(kind)
                await pilot.pause()
                text = check_screen(app, f"detail of {name!r}")
                assert inert(name) in text, name
            await pilot.press("escape")

        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ChangeTableScreen) and app.screen.is_mounted, "changes")
        await pilot.press("s", "s")  # sorting uses the shown names
        text = check_screen(app, "change table")
        assert "[link=http://evil.example/]click" in text and inert(NAMES[6]) in text
        await pilot.press("escape", "question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        check_screen(app, "help")
        await pilot.press("escape", "g")
        await pilot.pause()
        check_screen(app, "go to")
        await pilot.press("escape")
        assert app.return_code is None


async def test_hostile_log_on_the_multi_run_screens(tmp_path):
    paths = [write_hostile_log(tmp_path / "a.wtui"), write_hostile_log(tmp_path / "b.wtui", steps=8)]
    app = MultiRunApp(paths, mode="replay", clock=lambda: 1_700_000_100.0)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: all(s.data.end is not None for s in app.slots), "the logs")
        await pilot.pause(0.3)
        text = check_screen(app, "run list")
        assert inert("torch\x1b[2J\x1b[H") in text  # the framework column
        await pilot.press("tab")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.is_mounted, "compare")
        for _ in range(len(NAMES)):  # every tensor in the list, chart title and legend
            await pilot.press("down")
            await pilot.pause(0.05)
            text = check_screen(app, f"compare {app.tensor!r}")
            assert inert(app.tensor) in text
        assert app.return_code is None
