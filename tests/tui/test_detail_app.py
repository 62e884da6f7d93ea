"""The part-2 screens inside the real WeightApp: enter on a row, `c`, `!`, timeline moves."""

from __future__ import annotations

import pytest
from screen_host import tanh_neuron_log

from weighttui.tui.app import WeightApp
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.layer_table import LayerTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_screens_in_the_real_app(tmp_path, tui):
    path = tanh_neuron_log(tmp_path / "nan.wtui", nan_at=100)
    app = WeightApp(path, mode="replay")
    async with app.run_test(size=(130, 40)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 80, what="the log to load")
        await pilot.press("end")
        await tui.wait_until(pilot, lambda: any(a.rule == "nonfinite" for a in app.alerts), what="the NaN alert")

        table = app.screen.query_one(LayerTable)
        keys = [k.value for k in table.rows]
        table.move_cursor(row=keys.index("t:neuron.weight"))
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, DetailScreen) and detail.tensor == "neuron.weight"
        assert "step 158" in detail.query_one("#dhead").content.plain
        await pilot.press("left")  # the app's timeline moves, the screen follows
        await tui.wait_until(pilot, lambda: "step 156" in detail.query_one("#dhead").content.plain,
                             what="the detail screen to follow the timeline")
        await pilot.press("d")
        assert detail.kind == "delta"
        await pilot.press("g")  # on this screen g is the gradient view (the w/d/g), not "go to"
        assert detail.kind == "grad" and app.screen is detail
        await pilot.press("right_square_bracket")
        assert detail.tensor == app.tensor_order[(app.tensor_order.index("neuron.weight") + 1) % 3]
        await pilot.press("escape")
        assert app.screen.query_one(LayerTable)

        await pilot.press("c")
        assert isinstance(app.screen, ChangeTableScreen)
        assert app.screen.table.row_count == 3
        await pilot.press("escape")

        await pilot.press("exclamation_mark")
        alerts = app.screen
        assert isinstance(alerts, AlertsScreen)
        assert alerts.table.row_count == len(app.alerts)
        first = app.alerts[0]
        assert (first.rule, first.tensor, first.step) == ("nonfinite", "hidden.weight", 100)
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.tensor == "hidden.weight"
