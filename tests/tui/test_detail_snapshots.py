"""Snapshot (SVG) tests of the part-2 screens over deterministic logs (pytest-textual-snapshot)."""

from __future__ import annotations

import pytest
from screen_host import ScreenHost, tanh_neuron_log

from weighttui.analysis.diagnose import diagnose
from weighttui.tui.screens.alerts import AlertsScreen
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.screens.detail import DetailScreen

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def neuron(tmp_path_factory):
    return tanh_neuron_log(tmp_path_factory.mktemp("snap") / "neuron.wtui", nan_at=100)


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


def test_change_table_with_marks(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=ChangeTableScreen)
    assert snap_compare(app, press=["home", "a", "end", "b"], terminal_size=(120, 16))


def test_alerts_panel(snap_compare, neuron):
    app = ScreenHost(neuron, make_screen=AlertsScreen)
    app.alerts = diagnose(app.data)
    assert snap_compare(app, terminal_size=(120, 16))
