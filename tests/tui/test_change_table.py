"""The change table screen with Pilot: values, sorting, marks, highlights, keys left to the timeline."""

from __future__ import annotations

import numpy as np
import pytest
from screen_host import ScreenHost

import weighttui
from weighttui import Recorder
from weighttui.analysis.changes import change_table
from weighttui.tui.screens.change_table import ChangeTableScreen
from weighttui.tui.screens.detail import DetailScreen

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

RATIOS = {"enc.weight": 2e-3, "enc.bias": 3e-2, "mid.weight": 5e-4, "head.weight": 4e-2, "frozen.weight": 0.0}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("changes") / "run.wtui"
    rng = np.random.default_rng(5)
    shapes = {"enc.weight": (12, 6), "enc.bias": (12,), "mid.weight": (8, 12), "head.weight": (3, 8),
              "frozen.weight": (4, 4)}
    w = {n: rng.normal(0, 0.3, s) for n, s in shapes.items()}
    with Recorder(path, bins=16, sample=6, full_every=20, queue_size=4096) as rec:  # never drops
        for step in range(41):
            rec.snapshot(step, w)
            for n, v in w.items():
                d = rng.normal(size=v.shape)
                v += d * (RATIOS[n] * np.linalg.norm(v) / np.linalg.norm(d))
    return path


def order(table) -> list[str]:
    return [row.key.value for row in table.ordered_rows]


def cell(table, row, col) -> str:
    return table.get_cell(row, col).plain


def head(screen) -> str:
    return screen.query_one("#chead").content.plain


async def test_values_flags_and_header(run_path):
    app = ScreenHost(run_path, make_screen=ChangeTableScreen)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.table
        expect = {r["tensor"]: r for r in change_table(app.data, window=10)}
        assert set(order(table)) == set(RATIOS)
        assert cell(table, "mid.weight", "ratio") == f"{expect['mid.weight']['ratio']:.3g}"
        assert float(cell(table, "mid.weight", "ratio_mean")) == pytest.approx(expect["mid.weight"]["ratio_mean"],
                                                                               rel=1e-2)
        assert cell(table, "frozen.weight", "changed_frac") == "0.0%"
        assert cell(table, "frozen.weight", "flag") == "stagnant"
        assert cell(table, "head.weight", "flag") == "fast"
        assert cell(table, "enc.bias", "flag") == ""  # biases move fast by nature
        assert "yellow" in str(table.get_cell("frozen.weight", "tensor").style)
        assert "red" in str(table.get_cell("head.weight", "tensor").style)
        assert "1 stagnant · 1 too fast" in head(screen)
        assert "at step 40 (snapshot 41/41)" in head(screen)
        # sorted by update ratio, largest first; NaN-free here
        ratios = [expect[name]["ratio"] for name in order(table)]
        assert ratios == sorted(ratios, reverse=True)


async def test_sort_keys_and_header_click(run_path):
    app = ScreenHost(run_path, make_screen=ChangeTableScreen)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.table
        await pilot.press("s")  # ratio -> ratio_mean
        assert screen.sort_key == "ratio_mean"
        expect = {r["tensor"]: r for r in change_table(app.data)}
        means = [expect[n]["ratio_mean"] for n in order(table)]
        assert means == sorted(means, reverse=True)
        await pilot.press("S")
        means = [expect[n]["ratio_mean"] for n in order(table)]
        assert means == sorted(means)
        await pilot.click("#changes", offset=(3, 0))  # the "tensor" header
        await pilot.pause()
        assert screen.sort_key == "tensor" and order(table) == sorted(RATIOS)


async def test_marks_from_the_timeline_and_timeline_keys_still_work(run_path):
    app = ScreenHost(run_path, make_screen=ChangeTableScreen)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.table
        await pilot.press("home")  # App-level: the focused table must not eat it
        assert app.position == 0
        await pilot.press("a")
        for _ in range(20):
            await pilot.press("right")
        assert app.position == 20
        assert "at step 20" in head(screen)
        await pilot.press("b")
        assert (screen.mark_a, screen.mark_b) == (0, 20)
        assert "a = step 0, b = step 20" in head(screen)
        assert "complete values" in head(screen)  # full weights were stored at steps 0, 20, 40
        run = weighttui.open(run_path)
        w0, w20 = run.weights(step=0), run.weights(step=20)
        exact = np.linalg.norm(w20["mid.weight"] - w0["mid.weight"]) / np.linalg.norm(w0["mid.weight"])
        assert cell(table, "mid.weight", "change_ab") == f"{exact:.2%}"
        assert cell(table, "frozen.weight", "change_ab") == "0.00%"
        await pilot.press("x")
        assert cell(table, "mid.weight", "change_ab") == "–"


async def test_enter_opens_the_tensor_and_escape_comes_back(run_path):
    app = ScreenHost(run_path, make_screen=lambda: ChangeTableScreen(sort="tensor", reverse=False))
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause()
        assert order(app.screen.table)[0] == "enc.bias"
        await pilot.press("down", "enter")
        assert app.opened == ["enc.weight"]
        assert isinstance(app.screen, DetailScreen) and app.screen.tensor == "enc.weight"
        await pilot.press("escape")
        assert isinstance(app.screen, ChangeTableScreen)
        await pilot.press("w")
        assert app.screen.window == 20 and "mean over 20 snapshots" in head(app.screen)


def test_zero_initialised_tensors_read_from_0_not_inf():
    from weighttui.tui.formatting import fmt_change

    assert fmt_change("norm_change", float("nan"), from_zero=True) == "from 0"
    assert fmt_change("norm_change", float("nan")) == "–"
    assert fmt_change("norm_change", 0.5) == "+50.00%"
    assert fmt_change("change_ab", float("inf")) == "from 0"
    assert fmt_change("change_ab", 0.25) == "25.00%"
    assert fmt_change("changed_frac", float("nan")) == "–"
    assert fmt_change("ratio", float("inf")) == "inf"
    assert fmt_change("ratio", None) == "–"
    # NaN is "no value" (a first update) unless the weights are NaN/Inf there: then it is what they made
    assert fmt_change("ratio", float("nan")) == "–"
    assert fmt_change("ratio", float("nan"), nonfinite=True) == "nan"
    assert fmt_change("norm_change", float("nan"), from_zero=True, nonfinite=True) == "nan"


async def test_c_and_bang_toggle_and_swap_rather_than_stack(run_path, tui):
    """`c` on the change table closes it, `!` there puts the alerts in its place (and back): one escape
    always returns to the overview, however often the keys were pressed."""
    from weighttui.tui.app import WeightApp
    from weighttui.tui.screens.alerts import AlertsScreen

    app = WeightApp(run_path, mode="replay", alerts=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.end is not None, what="the run")
        base = len(app.screen_stack)
        await pilot.press("c")
        await tui.wait_until(pilot, lambda: isinstance(app.screen, ChangeTableScreen))
        await pilot.press("c")
        await tui.wait_until(pilot, lambda: len(app.screen_stack) == base)
        for _ in range(3):
            await pilot.press("c", "exclamation_mark")
            await tui.wait_until(pilot, lambda: isinstance(app.screen, AlertsScreen))
            assert len(app.screen_stack) == base + 1
        await pilot.press("escape")
        await tui.wait_until(pilot, lambda: len(app.screen_stack) == base)
