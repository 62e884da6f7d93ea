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


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 32x48 matrix trained 40 steps with the instruments: alpha is fitted every 10th snapshot."""
    path = tmp_path_factory.mktemp("alpha") / "run.wtui"
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 48)) * 0.1
    with Recorder(path, instruments=True) as rec:
        for step in range(40):
            g = rng.standard_normal(w.shape) * 0.01
            w = w - (0.1 if step < 25 else 3.0) * g  # the spectrum moves: the later fits differ
            rec.snapshot(step, {"w": w}, grads={"w": g})
    return path


def test_layer_table_alpha_is_the_latest_fit(fitted):
    data = weighttui.open(fitted)
    steps, alpha = data.series("w", "alpha")
    fits = np.isfinite(alpha)
    assert 3 <= fits.sum() < steps.size  # fitted now and then, NaN between
    col = data.column("w")
    for row in (data.n - 1, 15):  # after the last fit; between two fits
        now, hist = metric_values(data, [col], row)["alpha"]
        upto = fits & (steps <= data.steps[row])
        assert now[0] == alpha[upto][-1]  # the latest fit at or before the row, not NaN
        np.testing.assert_array_equal(hist[0], alpha[upto])  # the sparkline: the fits


async def test_alpha_chart_and_column(fitted, tui):
    from weighttui.tui.app import WeightApp
    from weighttui.tui.formatting import fmt
    from weighttui.tui.widgets.layer_table import LayerTable

    data = weighttui.open(fitted)
    steps, alpha = data.series("w", "alpha")
    fits = np.isfinite(alpha)
    app = WeightApp(fitted, mode="replay", alerts=False)
    async with app.run_test(size=(120, 50)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 40 and app.data.end is not None, what="the run")
        await pilot.press("end")
        table = app.screen.query_one(LayerTable)
        table.chosen_metrics = ("norm", "alpha")  # what `m` offers: alpha among the instruments
        table.set_layout(120)
        app.screen.refresh_view()
        await pilot.pause()
        cell = table.get_cell("t:w", "alpha").plain
        assert cell.split()[-1] == fmt(alpha[fits][-1], table._lay["value"]).strip()

        app.open_tensor("w")
        await pilot.pause()
        screen = app.screen
        screen._flush_charts()
        await pilot.pause()
        chart = screen.query_one("#inst2", LineChart)
        assert chart.display and chart.title_text.startswith("WeightWatcher alpha")
        np.testing.assert_array_equal(chart.series_data[0][1], steps[fits])  # drawn through its fits
        np.testing.assert_array_equal(chart.series_data[0][2], alpha[fits])
        await pilot.press("d")
        screen._flush_charts()
        await pilot.pause()
        assert not screen.query_one("#inst2", LineChart).display  # two charts in the updates view
