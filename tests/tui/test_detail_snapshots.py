"""Snapshot (SVG) tests of the part-2 screens over deterministic logs (pytest-textual-snapshot)."""

from __future__ import annotations

import numpy as np
import pytest
from screen_host import ScreenHost, tanh_neuron_log

import weighttui
from weighttui.analysis.diagnose import diagnose
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.screens.detail import DetailScreen

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def neuron(tmp_path_factory):
    return tanh_neuron_log(tmp_path_factory.mktemp("snap") / "neuron.wtui", nan_at=100)


@pytest.fixture(scope="module")
def units_log(tmp_path_factory):
    """A 24-unit layer over 120 snapshots: unit 5 dead (gradient 0), unit 9 exploding from about step 90."""
    from weighttui import Recorder

    path = tmp_path_factory.mktemp("snap") / "units.wtui"
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.3, (24, 12))
    with Recorder(path, every=1, bins=16, sample=4, queue_size=4096) as rec:
        for s in range(120):
            g = rng.normal(0, 0.01, w.shape)
            g[5] = 0.0
            rec.snapshot(s, {"fc.weight": w}, grads={"fc.weight": g})
            w = w - 0.5 * g
            if s >= 60:
                w[9] *= 1.08
    return str(path)


def test_detail_weights(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=lambda: DetailScreen("neuron.weight"))
    assert snap_compare(app, terminal_size=(120, 40))


def test_detail_delta_recent_window(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=lambda: DetailScreen("neuron.weight"))

    async def run_before(pilot):
        await pilot.press("d", "z", "r", "left", "left")
        # the charts follow the timeline after CHART_DELAY; flush them now rather
        # than racing that timer (a fixed pause was flaky on a loaded machine)
        pilot.app.screen._flush_charts()
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))


def test_detail_grad_log_density(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=lambda: DetailScreen("hidden.weight"))
    assert snap_compare(app, press=["g", "l"], terminal_size=(100, 32))


def test_detail_zoomed_at_full_resolution(snap_compare, units_log):
    # the row view keeps 16 rows of 120 snapshots; zoomed in, every snapshot of the range is drawn
    app = ScreenHost(data=weighttui.open(units_log, max_rows=16), make_screen=lambda: DetailScreen("fc.weight"))

    async def run_before(pilot):
        await pilot.press("i", "i", "left", "left", "left")
        pilot.app.screen._flush_charts()
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))


def test_detail_unit_strip(snap_compare, units_log):
    app = ScreenHost(data=weighttui.open(units_log, max_rows=16), make_screen=lambda: DetailScreen("fc.weight"))

    async def run_before(pilot):
        await pilot.press("u")
        await pilot.pause()
        await pilot.pause()
        pilot.app.screen._flush_charts()
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))


def test_change_table_with_marks(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=ChangeTableScreen)
    assert snap_compare(app, press=["home", "a", "end", "b"], terminal_size=(120, 16))


def test_alerts_panel(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=AlertsScreen)
    app.alerts = diagnose(app.data)
    assert snap_compare(app, terminal_size=(120, 16))
