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
        assert screen.query_one("#inst0", LineChart).title_text == "spectral norm sigma_max · stable rank"
        await pilot.press("d")  # the updates view: the optimizer beside the update ratio
        screen._flush_charts()
        await pilot.pause()
        assert screen.query_one("#inst0", LineChart).title_text.startswith("cos(update, previous update)")
        assert screen.query_one("#inst2", LineChart).title_text.startswith("optimizer:")
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
    assert values["m_norm"][0][0] == pytest.approx(data.series("w", "m_norm", kind="optim")[1][-1])
    assert values["optim_bad"][0][0] == 0 and values["exploding"][0][0] == 0


def test_every_instrument_column_can_be_chosen_in_the_layer_table():
    from weighttui.log import schema
    from weighttui.tui.widgets.layer_rows import METRICS

    offered = {(kind, stat) for _key, kind, stat, _label, _log in METRICS}
    columns = ([("weights", s) for s in schema.WEIGHT_INSTRUMENTS + schema.UNIT_WEIGHT_STATS + schema.ALPHA_STATS]
               + [("delta", s) for s in schema.DELTA_INSTRUMENTS] + [("grad", s) for s in schema.UNIT_GRAD_STATS]
               + [("optim", s) for s in schema.OPTIM_STATS])
    assert set(columns) <= offered


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


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    """Two matrices of different scale trained with momentum, optimizer state and the instruments."""
    path = tmp_path_factory.mktemp("small") / "run.wtui"
    rng = np.random.default_rng(1)
    ws = {"a": rng.standard_normal((4, 12)) * 0.1, "b": rng.standard_normal((6, 12)) * 2.0}
    ms = {k: np.zeros_like(w) for k, w in ws.items()}
    with Recorder(path, instruments=True) as rec:
        for step in range(30):
            gs = {k: rng.standard_normal(w.shape) * 0.1 + 0.05 * w for k, w in ws.items()}
            for k in ws:
                ms[k] = 0.9 * ms[k] + gs[k]
                ws[k] = ws[k] - 0.05 * ms[k]
            rec.snapshot(step, dict(ws), grads=gs, optim={k: {"m": ms[k], "lr": 0.05} for k in ws})
    return path


def _chart(screen, i: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    chart = screen.query_one(f"#inst{i}", LineChart)
    return next((x, y) for name, x, y in chart.series_data if name == label)


async def test_instrument_key_on_a_small_terminal(two_layers, tui):
    """80x24 (an ssh terminal): the instrument row is off by default; `n` shows it in place of the
    chart rows, for the tensor and view shown, and stays on across tensors and views until `n` again."""
    from weighttui.tui.app import WeightApp

    data = weighttui.open(two_layers)
    app = WeightApp(two_layers, mode="replay", alerts=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 30 and app.data.end is not None, what="the run")
        await pilot.press("end")
        app.open_tensor("a")
        await tui.wait_until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.is_mounted,
                             what="the detail screen")
        screen = app.screen
        screen._flush_charts()
        await pilot.pause()
        row = screen.query_one("#instruments")
        assert not row.display and screen.query_one("#middle").display
        assert "sigma" not in app.export_screenshot()
        assert any(b.binding.key == "n" for b in screen.active_bindings.values())  # offered in the footer

        await pilot.press("n")
        await pilot.pause()
        assert row.display and not screen.query_one("#middle").display and not screen.query_one("#bottom").display
        for chart in screen.query("#inst0, #inst1").results(LineChart):
            assert chart.region.height >= 8 and chart.region.width >= 20  # room for a readable chart
        shot = app.export_screenshot()
        assert "sigma" in shot and "dist" in shot  # the legends are on the screen
        assert "spectral" in shot and "distance" in shot  # the titles (their start: too wide for plotext)
        steps, sigma = data.series("a", "sigma_max")
        x, y = _chart(screen, 0, "sigma")
        np.testing.assert_array_equal(x, steps)
        np.testing.assert_array_equal(y, sigma)

        await pilot.press("right_square_bracket")  # the other tensor: its own values, the row still on
        screen._flush_charts()
        await pilot.pause()
        assert screen.tensor == "b" and row.display
        steps, sigma_b = data.series("b", "sigma_max")
        np.testing.assert_array_equal(_chart(screen, 0, "sigma")[1], sigma_b)
        assert sigma_b[-1] > 3 * sigma[-1]  # a different tensor indeed
        np.testing.assert_array_equal(_chart(screen, 1, "dist")[1], data.series("b", "dist_init")[1])

        await pilot.press("d")  # the updates view: the cosines of b
        screen._flush_charts()
        await pilot.pause()
        assert row.display and screen.query_one("#inst0", LineChart).title_text.startswith("cos(update")
        np.testing.assert_array_equal(_chart(screen, 0, "prev")[1],
                                      data.series("b", "cos_prev", kind="delta")[1][_finite(data, "b")])
        # the optimizer's step size and moments, in the same (updates) view
        assert row.display and screen.query_one("#inst2", LineChart).title_text.startswith("optimizer:")
        np.testing.assert_allclose(_chart(screen, 2, "step")[1], 0.05)

        await pilot.press("n")  # off again: the chart rows come back
        await pilot.pause()
        assert not row.display and screen.query_one("#middle").display
        assert "sigma" not in app.export_screenshot()


def _finite(data, name: str) -> np.ndarray:
    return np.isfinite(data.series(name, "cos_prev", kind="delta")[1])


async def test_instrument_key_hides_the_row_on_a_tall_terminal(two_layers):
    data = weighttui.open(two_layers)
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("a"))
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen._flush_charts()
        await pilot.pause()
        row = screen.query_one("#instruments")
        assert row.display and screen.query_one("#bottom").display
        await pilot.press("n")
        await pilot.pause()
        assert not row.display and screen.query_one("#bottom").display
        await pilot.press("n")
        await pilot.pause()
        assert row.display and screen.query_one("#bottom").display  # tall: beside the other rows


async def test_instrument_key_points_to_the_views_that_have_them(tmp_path):
    """A log whose only instrument column is the gradients' dead_units: `n` is offered in the weights
    view too; pressed there it says where the charts are, and `g` then shows them (the choice holds)."""
    from screen_host import tanh_neuron_log

    data = weighttui.open(tanh_neuron_log(tmp_path / "neuron.wtui"))
    assert "dead_units" in data.columns("grad") and "sigma_max" not in data.columns("weights")
    app = ScreenHost(data=data, make_screen=lambda: DetailScreen("hidden.weight"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        screen._flush_charts()
        await pilot.pause()
        assert any(b.binding.key == "n" for b in screen.active_bindings.values())
        await pilot.press("n")
        await pilot.pause()
        row = screen.query_one("#instruments")
        assert not row.display and screen.query_one("#middle").display  # nothing to show here
        assert any("gradients (g)" in n.message for n in app._notifications)
        await pilot.press("g")
        screen._flush_charts()
        await pilot.pause()
        assert row.display and not screen.query_one("#middle").display
        chart = screen.query_one("#inst0", LineChart)
        assert chart.title_text.startswith("dead units") and chart.region.height >= 8
        steps, dead = data.series("hidden.weight", "dead_units", kind="grad")
        np.testing.assert_array_equal(_chart(screen, 0, "dead")[1], dead[np.isfinite(dead)])


async def test_the_columns_menu_offers_what_the_log_has_the_optimizer_beside_the_update_ratio(two_layers, tmp_path,
                                                                                              tui):
    from textual.widgets import SelectionList

    from weighttui.tui.app import WeightApp

    plain = tmp_path / "plain.wtui"
    with Recorder(plain, instruments=False) as rec:
        for step in range(3):
            rec.snapshot(step, {"w": np.full((4, 4), float(step))})
    for path, want in ((two_layers, True), (plain, False)):
        app = WeightApp(path, mode="replay", alerts=False)
        async with app.run_test(size=(160, 40)) as pilot:
            await tui.wait_until(pilot, lambda: app.data.end is not None, what="the run")  # noqa: B023
            await pilot.press("m")
            await tui.wait_until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen")  # noqa: B023
            options = app.screen.query_one(SelectionList)
            keys = [options.get_option_at_index(i).value for i in range(options.option_count)]
            if want:  # every instrument column of this log, the optimizer's next to the update ratio
                assert keys[:8] == ["norm", "std", "ratio", "eff_lr", "m_norm", "v_norm", "optim_bad", "grad"]
                assert {"sigma", "srank", "dist", "cos_prev", "cos_grad", "sratio", "alpha"} <= set(keys)
            else:
                assert keys == ["norm", "std", "ratio", "grad"]
            await pilot.press("escape")
