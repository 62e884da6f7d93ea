"""The tensor detail screen driven with Pilot over real logs (a tanh neuron, the numpy demo)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from screen_host import ScreenHost, tanh_neuron_log

import weighttui
from weighttui import Recorder
from weighttui.analysis import heatmap
from weighttui.log.tail import LogTail
from weighttui.tui.screens.detail import DetailScreen
from weighttui.tui.widgets.charts import LineChart
from weighttui.tui.widgets.heatmap_view import HeatmapView, HistogramBars

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def neuron(tmp_path_factory):
    return tanh_neuron_log(tmp_path_factory.mktemp("detail") / "neuron.wtui")


def header(screen) -> str:
    return screen.query_one("#dhead").content.plain


def lines(widget) -> list[str]:
    return [widget.render_line(y).text for y in range(widget.size.height)]


def styled(widget) -> list:
    return [[(seg.text, seg.style) for seg in widget.render_line(y)] for y in range(widget.size.height)]


def detail_app(path, name="neuron.weight", **kw):
    return ScreenHost(path, make_screen=lambda: DetailScreen(name), **kw)


async def test_weights_view_heatmap_bars_and_sample_traces(neuron):
    app = detail_app(neuron)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        assert "neuron.weight  1x2  float64" in header(screen)
        assert "step 158 epoch 3 (snapshot 80/80, following)" in header(screen)
        heat = screen.query_one(HeatmapView)
        drawn = lines(heat)
        assert sum(line.count("▀") + line.count("▄") for line in drawn) > 50
        assert "step 0" in drawn[-1] and "step 158" in drawn[-1] and "▲" in drawn[-1]
        assert heat.position_column == heat.size.width - HeatmapView.GUTTER - 1  # following: at the end
        steps, lo, hi, counts = app.data.histograms("neuron.weight")
        assert heat.vrange == heatmap.value_range(lo, hi)
        bars = lines(screen.query_one(HistogramBars))
        assert bars[0].startswith("weights at step 158: 2 values")
        assert "◆" in bars[-2]  # the mean is marked
        # the two sampled weights of the neuron climb from 0.1 and -0.2 to 1.0
        traces = screen.query_one("#samples", LineChart).series_data
        assert len(traces) == 2
        starts = sorted(round(float(y[0]), 3) for _l, _x, y in traces)
        assert starts == [-0.2, 0.1]
        assert all(abs(float(y[-1]) - 1.0) < 1e-3 for _l, _x, y in traces)
        assert "1.0" in screen.query_one("#samples", LineChart).plt.build()
        bands = screen.query_one("#bands", LineChart)
        assert len(bands.series_data) == 9
        stats = [screen.query_one(f"#stat{i}", LineChart).title_text for i in range(4)]
        assert stats == ["mean ± std", "norm", "min / max", "zero fraction"]


async def test_delta_and_grad_views(neuron):
    app = detail_app(neuron)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("d")
        assert screen.kind == "delta"
        assert "ratio/step" in header(screen)
        heat = screen.query_one(HeatmapView)
        _s, lo, hi, _c = app.data.histograms("neuron.weight", "delta")
        assert heat.vrange == heatmap.value_range(lo, hi)
        assert screen.query_one("#stat0", LineChart).title_text == "update ratio per step"
        assert lines(screen.query_one(HistogramBars))[0].startswith("updates at step 158: 2 values · μ,σ from")
        await pilot.press("g")
        assert screen.kind == "grad"
        _s, lo, hi, _c = app.data.histograms("neuron.weight", "grad")
        await pilot.pause()
        assert heat.vrange == heatmap.value_range(lo, hi)
        assert lines(screen.query_one(HistogramBars))[0].startswith("gradients at step 158")
        await pilot.press("w")
        assert screen.kind == "weights"


async def test_log_density_range_and_zoom(neuron):
    app = detail_app(neuron)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        heat = screen.query_one(HeatmapView)
        linear = styled(heat)
        await pilot.press("l")
        assert "density log" in header(screen)
        assert styled(heat) != linear  # same cells, other colours
        await pilot.press("d", "z")  # updates, only the most recent snapshots (one per column)
        await pilot.pause()
        plot_w = heat.size.width - HeatmapView.GUTTER
        steps, lo, hi, _c = app.data.histograms("neuron.weight", "delta")
        assert heat.shown_rows == slice(steps.size - plot_w, steps.size)
        whole = heatmap.value_range(lo, hi)
        assert heat.vrange == whole  # still the whole run's range: early big updates dominate it
        await pilot.press("r")
        await pilot.pause()
        sel = heat.shown_rows
        assert heat.vrange == heatmap.value_range(lo[sel], hi[sel])
        assert (heat.vrange[1] - heat.vrange[0]) < 0.1 * (whole[1] - whole[0])  # late small updates resolved
        assert "range window · most recent" in header(screen)


async def test_timeline_keys_move_the_screen(neuron):
    app = detail_app(neuron)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        heat = screen.query_one(HeatmapView)
        end_col = heat.position_column
        await pilot.press("left", "left")  # App-level timeline keys still reach the app
        assert app.position == 77
        assert "step 154 epoch 3 (snapshot 78/80, at timeline position)" in header(screen)
        assert lines(screen.query_one(HistogramBars))[0].startswith("weights at step 154")
        await pilot.press("home")
        assert "step 0 epoch 0" in header(screen)
        assert heat.position_column == 0 < end_col
        await pilot.press("end")
        assert app.position is None and "following" in header(screen)


async def test_brackets_follow_the_app_tensor_order(neuron):
    order = ["hidden.weight", "neuron.bias", "neuron.weight"]
    app = detail_app(neuron, tensor_order=order)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("right_square_bracket")
        assert screen.tensor == "hidden.weight" and header(screen).startswith("hidden.weight  16x8")
        await pilot.press("right_square_bracket")
        assert screen.tensor == "neuron.bias"
        await pilot.press("left_square_bracket", "left_square_bracket")  # wraps around
        assert screen.tensor == "neuron.weight"


async def test_missing_kinds_and_unknown_tensor(tmp_path):
    path = tmp_path / "nograd.wtui"
    with Recorder(path, delta=False, queue_size=64) as rec:
        for s in range(5):
            rec.snapshot(s, {"w": np.arange(6.0).reshape(2, 3) * (s + 1)})
    app = detail_app(path, "w")
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("g")
        await pilot.press("d")
        assert screen.kind == "weights"
        assert "this log has no gradients statistics" in [n.message for n in app._notifications]
        screen.tensor = "nope"
        screen.refresh_data()
        assert "nope: not in this run" in header(screen)
        await pilot.press("escape")


async def test_new_snapshots_appear_while_open(tmp_path):
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=8, queue_size=64)
    for s in range(3):
        rec.snapshot(s, {"w": np.full((4, 4), float(s))})
    import time

    deadline = time.monotonic() + 5
    while rec.written < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    tail = LogTail(path)
    data = weighttui.RunData(path)
    data.ingest(tail.poll())
    app = detail_app(path, "w", data=data)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.pause()
        assert "step 2 " in header(app.screen)
        for s in range(3, 6):
            rec.snapshot(s, {"w": np.full((4, 4), float(s))})
        rec.close()
        assert app.feed(tail)
        await pilot.pause()
        assert "step 5 " in header(app.screen)
        assert lines(app.screen.query_one(HistogramBars))[0].startswith("weights at step 5: 16 values")
    tail.close()


async def test_click_on_the_heatmap_moves_the_timeline(neuron):
    app = detail_app(neuron)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        heat = screen.query_one(HeatmapView)
        await pilot.click("#heat", offset=(HeatmapView.GUTTER, 3))  # the first plot column
        assert app.position == 0 and "step 0 epoch 0" in header(screen)
        plot_w = heat.size.width - HeatmapView.GUTTER
        await pilot.click("#heat", offset=(HeatmapView.GUTTER + plot_w // 2, 3))
        step = int(app.data.steps[app.position])
        assert abs(step - 79) <= 158 / plot_w + 2  # the middle of steps 0..158
        assert heat.position_column in (plot_w // 2 - 1, plot_w // 2, plot_w // 2 + 1)
        await pilot.click("#heat", offset=(2, 3))  # the value labels: nothing happens
        assert int(app.data.steps[app.position]) == step


async def test_screens_on_a_run_without_snapshots(tmp_path):
    from weighttui.tui.screens.alerts import AlertsScreen
    from weighttui.tui.screens.change_table import ChangeTableScreen

    path = tmp_path / "empty.wtui"
    Recorder(path).close()
    shown = {}
    for make in (lambda: DetailScreen("w"), ChangeTableScreen, AlertsScreen):
        app = ScreenHost(path, make_screen=make)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("left", "a", "d", "l", "enter")  # nothing to move, mark or open: no crash
            screen = app.screen
            assert app.row == -1
            if isinstance(screen, DetailScreen):
                shown["detail"] = header(screen)
            elif isinstance(screen, ChangeTableScreen):
                shown["changes"] = screen.table.row_count
            else:
                shown["alerts"] = screen.query_one("#ahead").content.plain
    assert shown == {"detail": "w: not in this run (yet)", "changes": 0,
                     "alerts": "0 alerts · nothing looks wrong so far"}


async def test_log_axis_chart_survives_repeated_renders():
    """plotext's yscale("log") re-logged its data on every render and raised on the second."""
    from textual.app import App

    from weighttui.tui.widgets.charts import LineChart

    class Host(App):
        def compose(self):
            yield LineChart()

    app = Host()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(LineChart)
        chart.show("ratio", [1, 2, 3], [("a", [1e-3, 2e-3, 5e-3], "cyan")], log_y=True)
        for _ in range(3):
            chart.refresh()
            await pilot.pause(0.1)
        assert chart.drawn == ["a"]
        assert chart.series_data[0][2].tolist() == [1e-3, 2e-3, 5e-3]


async def test_header_shows_no_value_as_a_dash_and_a_diverged_one_as_nan(tmp_path):
    """The header printed `mean nan ... nan nan` for the gradient and update of a snapshot that has none
    (the first one): "–" is what the log does not have (docs/tui.md); nan is kept for a diverged tensor."""
    path = tmp_path / "nan.wtui"
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    with Recorder(path) as rec:
        for step in range(4):
            if step == 3:
                w = np.full_like(w, np.nan)
            rec.snapshot(step, {"fc.weight": w}, grads={"fc.weight": w * 0.1} if step else None)
            w = w + 0.01
    app = detail_app(path, "fc.weight")
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("home")
        await pilot.pause()
        assert "step 0 " in header(screen)
        assert "nan 0  inf 0" in header(screen)
        await pilot.press("g")
        await pilot.pause()
        head = header(screen)
        assert "mean –  std –" in head and "nan –  inf –" in head and not re.search(r"\w+ nan\b", head), head
        await pilot.press("d")
        await pilot.pause()
        head = header(screen)
        assert "norm –" in head and not re.search(r"\w+ nan\b", head), head
        await pilot.press("end")
        await pilot.pause()
        head = header(screen)
        assert "step 3 " in head and "norm nan" in head, head  # the update of a tensor gone NaN
        await pilot.press("w")
        await pilot.pause()
        assert "nan 12" in header(screen)  # a count, as a whole number
        # nothing to draw at step 3: the histogram says so, and the heatmap puts no marker on step 2
        bars = lines(screen.query_one(HistogramBars))
        assert bars[0].startswith("weights at step 3: NaN/Inf · shown: step 2"), bars[0]
        assert screen.query_one(HeatmapView).position_column is None
