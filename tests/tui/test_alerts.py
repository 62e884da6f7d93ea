"""The alerts screen with Pilot: the list from diagnose, advice, jump to the tensor."""

from __future__ import annotations

import pytest
from screen_host import ScreenHost, tanh_neuron_log

from weighttui.analysis.diagnose import Alert, diagnose
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.detail import DetailScreen

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    return tanh_neuron_log(tmp_path_factory.mktemp("alerts") / "nan.wtui", nan_at=100)


def rows(table) -> list[list[str]]:
    return [[str(getattr(c, "plain", c)) for c in table.get_row(r.key)] for r in table.ordered_rows]


async def test_alerts_listed_with_advice_and_jump_to_tensor(nan_run):
    app = ScreenHost(nan_run, make_screen=AlertsScreen)
    app.alerts = diagnose(app.data)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        listed = rows(screen.table)
        assert listed[0][:4] == ["error", "nonfinite", "hidden.weight", "100"]
        assert "1 NaN" in listed[0][4]
        assert len(listed) == len(app.alerts)
        assert "red" in str(screen.table.get_cell_at((0, 0)).style)
        advice = screen.query_one("#advice").content.plain
        assert "hidden.weight, from step 100" in advice and "lower the learning rate" in advice
        head = screen.query_one("#ahead").content.plain
        assert head.startswith(f"{len(app.alerts)} alert") and "1 error" in head
        await pilot.press("enter")
        assert app.opened == ["hidden.weight"]
        detail = app.screen
        assert isinstance(detail, DetailScreen)
        assert "nan 1" in detail.query_one("#dhead").content.plain
        await pilot.press("escape")
        assert isinstance(app.screen, AlertsScreen)


async def test_advice_follows_the_cursor_and_run_level_alerts(nan_run):
    app = ScreenHost(nan_run, make_screen=AlertsScreen)
    app.alerts = [
        Alert("nonfinite", "hidden.weight", 100, "error", "non-finite values", "lower the learning rate"),
        Alert("stagnant", "neuron.bias", 4, "warning", "unchanged", "check requires_grad"),
        Alert("dropped", None, 7, "warning", "snapshots dropped", "a faster disk"),
    ]
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("down")
        assert "neuron.bias, from step 4" in screen.query_one("#advice").content.plain
        await pilot.press("down", "enter")  # an alert about the whole run has no tensor to open
        assert app.opened == [] and isinstance(app.screen, AlertsScreen)
        assert rows(screen.table)[2][2] == "(run)"
        await pilot.press("left")  # the timeline key still reaches the app
        assert app.position == app.data.n - 2


async def test_no_alerts_and_alerts_arriving_later(nan_run):
    app = ScreenHost(nan_run, make_screen=AlertsScreen)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert "0 alerts · nothing looks wrong so far" in screen.query_one("#ahead").content.plain
        app.alerts = diagnose(app.data)
        app.refresh_screen()
        await pilot.pause()
        assert screen.table.row_count == len(app.alerts) > 0
