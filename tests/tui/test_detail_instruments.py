"""The detail screen's instrument row (docs/instruments.md) and the layer table's instrument columns."""

from __future__ import annotations

import numpy as np
import pytest
from screen_host import ScreenHost

import weighttui
from weighttui import Recorder
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.charts import LineChart
from weighttui.tui.widgets.layer_rows import metric_values

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Gradient descent with momentum on a least-squares problem, optimizer state included."""
    path = tmp_path_factory.mktemp("inst") / "run.wtui"
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 12)), rng.standard_normal((64, 4))
    w = rng.standard_normal((4, 12)) * 0.1
    m = np.zeros_like(w)
    with Recorder(path, instruments=True) as rec:
        for step in range(30):
            g = (x @ w.T - y).T @ x / len(x)
            m = 0.9 * m + g
            w = w - 0.05 * m
            rec.snapshot(step, {"w": w}, grads={"w": g}, optim={"w": {"m": m, "lr": 0.05}})
    return path


async def test_instrument_row_on_tall_terminals(trained):
    data = weighttui.open(trained)
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("w"))
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen._flush_charts()
        await pilot.pause()
        row = screen.query_one("#instruments")
        assert row.display
        assert screen.query_one("#inst0", LineChart).title_text == "spectral norm sigma_max"
        await pilot.press("d")
        screen._flush_charts()
        await pilot.pause()
        assert screen.query_one("#inst0", LineChart).title_text.startswith("cos(update, previous update)")
        await pilot.press("g")
        screen._flush_charts()
        await pilot.pause()
        assert screen.query_one("#inst1", LineChart).title_text.startswith("optimizer:")
    # a short terminal keeps its room for the other charts
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("w"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen._flush_charts()
        await pilot.pause()
        assert not app.screen.query_one("#instruments").display


def test_layer_table_instrument_metrics(trained):
    data = weighttui.open(trained)
    col = data.column("w")
    values = metric_values(data, [col], data.n - 1)
    assert values["sigma"][0][0] == pytest.approx(data.series("w", "sigma_max")[1][-1])
    assert values["cos_grad"][0][0] == pytest.approx(data.series("w", "cos_grad", kind="delta")[1][-1])
    assert values["eff_lr"][0][0] == 0.05
    assert len(values["dist"][1][0]) == data.n
