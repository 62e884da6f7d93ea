"""Alerts in the multi-run viewer: the run list's column and the highlighted run's alerts, under the
same `--threshold` options as a single run, and passed on to the run opened from the list."""

from __future__ import annotations

import pytest
from logbuilder import sgd_run

import weighttui
from weighttui.analysis.diagnose import DiagnoseConfig, diagnose
from weighttui.tui.multi_app import MultiRunApp
from weighttui.tui.screens.runs_list import RunTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LRS = (0.001, 0.01, 0.1)
STEPS = 30
STRICT = ["ratio_high=0.003", "ratio_window=5"]  # flags more of the sweep than the defaults
LAX = ["ratio_high=0.5"]  # flags nothing


def sweep(tmp_path):
    return [sgd_run(tmp_path / f"lr{lr}.sock", lr, STEPS, seed=i) for i, lr in enumerate(LRS)]


def expected_cell(path, config) -> str:
    """What the alerts column must say, from diagnose over an independent read of the log."""
    alerts = diagnose(weighttui.open(path, max_rows=1024, cache=False), config)
    if not alerts:
        return "ok"
    return alerts[0].rule + (f" +{len(alerts) - 1}" if len(alerts) > 1 else "")


async def alert_cells(app, tui, paths) -> list[str]:
    table = app.screen.query_one(RunTable)
    return [tui.cell_text(table, p, "alerts") for p in paths]


async def run_list(tmp_path, tui, paths, config):
    app = MultiRunApp(directory=tmp_path, mode="replay", diagnose_config=config)
    async with app.run_test(size=(160, 30)) as pilot:
        await tui.wait_until(pilot, lambda: len(app.slots) == len(paths)
                             and all(s.alerts is not None for s in app.slots), what="every run's alerts")
        await pilot.pause(0.3)
        cells = await alert_cells(app, tui, paths)
        note = tui.static_text(app.screen.query_one("#runs-note"))
        commands = [app.viewer_command(p) for p in paths]
        shown_alerts = [list(s.alerts or []) for s in app.slots]
    return cells, note, commands, shown_alerts


@pytest.mark.parametrize("options", [None, STRICT, LAX], ids=["defaults", "strict", "lax"])
async def test_alerts_column_follows_the_thresholds(tmp_path, tui, options):
    paths = sweep(tmp_path)
    config = None if options is None else DiagnoseConfig.from_options(options)
    cells, note, commands, _ = await run_list(tmp_path, tui, paths, config)
    assert cells == [expected_cell(p, config) for p in paths]
    if options is None:
        assert cells[0] == "ok" and cells[2].startswith("ratio_high")  # lr 0.1 moves too fast for the defaults
    elif options is STRICT:
        assert cells[1].startswith("ratio_high")  # lr 0.01 too, under the stricter band
    else:
        assert cells == ["ok"] * len(paths)
    # the run opened from the list (enter) gets the same thresholds, and the command shown says so
    for cmd in commands:
        given = cmd[cmd.index("--threshold"):] if "--threshold" in cmd else []
        assert given[::2] == ["--threshold"] * (len(given) // 2)
        assert DiagnoseConfig.from_options(given[1::2]) == (config or DiagnoseConfig())
    if options is not None:
        assert "--threshold" in note


async def test_the_highlighted_runs_alerts_are_listed_under_the_table(tmp_path, tui):
    paths = sweep(tmp_path)
    app = MultiRunApp(directory=tmp_path, mode="replay", diagnose_config=DiagnoseConfig.from_options(STRICT))
    async with app.run_test(size=(160, 30)) as pilot:
        await tui.wait_until(pilot, lambda: len(app.slots) == len(paths)
                             and all(s.alerts is not None for s in app.slots), what="every run's alerts")
        table = app.screen.query_one(RunTable)
        table.focus()
        await pilot.press("down", "down")  # lr 0.1
        await pilot.pause(0.3)
        slot = app.slots[-1]
        assert slot.alerts
        note = tui.static_text(app.screen.query_one("#runs-note"))
        first = slot.alerts[0]
        assert f"lr0.1.sock: {first.rule} {first.tensor}: " in note and f"(from step {first.step})" in note


async def test_alerts_off_and_a_failing_rule_leave_the_runs_on_screen(tmp_path, tui, monkeypatch):
    paths = sweep(tmp_path)
    app = MultiRunApp(directory=tmp_path, mode="replay", alerts=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await tui.wait_until(pilot, lambda: all(s.caught_up for s in app.slots) and len(app.slots) == 3,
                             what="every run read")
        await pilot.pause(0.8)
        assert await alert_cells(app, tui, paths) == ["…"] * 3

    import weighttui.analysis.diagnose as diagnose_module

    def broken(*_a, **_k):
        raise RuntimeError("a rule broke")

    monkeypatch.setattr(diagnose_module, "diagnose", broken)
    app = MultiRunApp(directory=tmp_path, mode="replay")
    async with app.run_test(size=(160, 30)) as pilot:
        await tui.wait_until(pilot, lambda: not app.alerts_enabled, what="alerts disabled")
        await pilot.pause(0.3)
        assert any("alerts disabled: RuntimeError: a rule broke" in n.message for n in app._notifications)
        table = app.screen.query_one(RunTable)
        assert [tui.cell_text(table, p, "last_step") for p in paths] == [str(STEPS - 1)] * 3
