"""An appended log (mode="a") holds several runs: the viewer says which one it shows ("run 2 of 2"),
and `--run N` picks another (issue 18, item 14)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from weighttui import Recorder
from weighttui.tui.app import WeightApp
from weighttui.tui.widgets.header import RunHeader

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def two_runs(path) -> str:
    for run, steps in ((0, range(0, 5)), (1, range(100, 103))):
        with Recorder(path, mode="a") as rec:
            for s in steps:
                rec.snapshot(s, {"w": np.full(4, float(run + s))})
    return str(path)


async def shown(run):
    app = WeightApp(run[0], mode="replay", alerts=False, run=run[1])
    async with app.run_test(size=(120, 20)) as pilot:
        for _ in range(400):
            if app.data.end is not None and app.refreshes:
                break
            await pilot.pause(0.02)
        await pilot.pause(0.05)
        header = app.screen.query_one(RunHeader).content.plain
        steps = app.data.steps.tolist()
    return header, steps


async def test_the_header_says_which_run_and_run_picks_one(tmp_path):
    path = two_runs(tmp_path / "appended.wtui")
    header, steps = await shown((path, None))
    assert "run 2 of 2" in header and steps == [100, 101, 102]
    header, steps = await shown((path, 0))
    assert "run 1 of 2" in header and steps == [0, 1, 2, 3, 4]


async def test_a_single_run_log_says_nothing_about_runs(tmp_path):
    path = tmp_path / "one.wtui"
    with Recorder(path) as rec:
        rec.snapshot(0, {"w": np.ones(3)})
    header, _steps = await shown((str(path), None))
    assert "run 1 of" not in header


@pytest.mark.parametrize("argv, message", [
    (["--run", "-1"], "must be 0 or more"),
    (["--run", "x"], "invalid"),
])
def test_run_option_bad_values(tmp_path, argv, message):
    path = two_runs(tmp_path / "appended.wtui")
    for command in ("watch", "replay"):
        proc = subprocess.run([sys.executable, "-m", "weighttui.cli", command, path, *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_run_option_with_several_logs_is_refused(tmp_path):
    a, b = two_runs(tmp_path / "a.wtui"), two_runs(tmp_path / "b.wtui")
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", "watch", a, b, "--run", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--run picks a run of one appended log" in proc.stderr, proc.stderr


def test_watch_and_replay_hand_run_to_the_viewer(tmp_path, monkeypatch):
    import weighttui.tui.app as app_module
    from weighttui.cli.main import main

    path = two_runs(tmp_path / "appended.wtui")
    seen = []
    monkeypatch.setattr(app_module, "run_app", lambda p, **kw: seen.append((p, kw.get("run"))) or 0)
    for command in ("watch", "replay"):
        assert main([command, path, "--run", "0"]) == 0
        assert main([command, path]) == 0
    assert seen == [(path, 0), (path, None)] * 2
