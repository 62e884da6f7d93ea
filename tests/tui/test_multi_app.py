"""The multi-run viewer driven by Pilot: a learning-rate sweep written by the real Recorder."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pytest
from logbuilder import sgd_run
from textual import events

from weighttui.tui.multi_app import MultiRunApp
from weighttui.tui.screens.runs_compare import CompareScreen
from weighttui.tui.screens.runs_help import RunsHelpScreen
from weighttui.tui.screens.runs_list import RunListScreen, RunTable
from weighttui.tui.widgets.runs_chart import RunsChart

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LRS = (0.001, 0.01, 0.1)
STEPS = 30


def sweep(tmp_path, statuses=("finished", "finished", "finished")):
    """Three SGD runs (lr 0.001, 0.01, 0.1); a None status leaves that run live (the Recorder is returned)."""
    out = {}
    for lr, status in zip(LRS, statuses, strict=True):
        out[lr] = sgd_run(tmp_path / f"lr{lr}.sock", lr, STEPS, status=status)
    return out


def loaded(app, n_runs, steps=STEPS):
    return lambda: (len(app.slots) == n_runs and all(s.data.n == steps for s in app.slots)
                    and app.refreshes > 0)


def cell(table, row_key, col) -> str:
    return table.get_cell(row_key, col).plain


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_run_list_statuses_ignored_files_and_a_new_log(tmp_path, tui):
    runs = sweep(tmp_path, statuses=("finished", "failed", None))
    live = runs[0.1]
    (tmp_path / "notes.txt").write_text("lr sweep, see wiki")
    app = MultiRunApp(directory=tmp_path, scan_interval=0.05)
    try:
        async with app.run_test(size=(140, 30)) as pilot:
            await tui.wait_until(pilot, loaded(app, 3), what="three runs loaded")
            await pilot.pause(0.3)
            assert isinstance(app.screen, RunListScreen)
            table = app.screen.query_one(RunTable)
            paths = [str(tmp_path / f"lr{lr}.sock") for lr in LRS]
            assert [k.value for k in table.rows] == paths
            assert [cell(table, p, "status") for p in paths] == ["finished", "failed", "live"]
            assert [cell(table, p, "run") for p in paths] == ["lr0.001.sock", "lr0.01.sock", "lr0.1.sock"]
            assert cell(table, paths[0], "meta") == "lr=0.001 optimizer=sgd"
            assert cell(table, paths[2], "last_step") == str(STEPS - 1)
            loss = app.slots[2].data.scalars("loss")[1][-1]
            assert float(cell(table, paths[2], "loss")) == pytest.approx(loss, rel=1e-3)
            assert len(cell(table, paths[0], "trend").strip()) > 0
            note = tui.static_text(app.screen.query_one("#runs-note"))
            assert "notes.txt" in note and "not a weighttui log" in note
            assert f"weighttui watch {paths[0]}" in note  # the highlighted run, to open alone
            assert "3 runs" in tui.static_text(app.screen.query_one("#runs-title"))

            # A fourth run starts in the directory while we watch.
            sgd_run(tmp_path / "lr0.3.sock", 0.3, 5)
            new = str(tmp_path / "lr0.3.sock")
            await tui.wait_until(pilot, lambda: table.row_count == 4 and cell(table, new, "status") == "finished",
                                 what="the new log in the list")
            assert cell(table, new, "snapshots") == "5"
            # The live run ends: its row follows.
            live.close(status="interrupted")
            await tui.wait_until(pilot, lambda: cell(table, paths[2], "status") == "interrupted",
                                 what="live run ended")
            # Another file that is not a log appears: a note, not a crash.
            (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04" + bytes(100))
            await tui.wait_until(pilot, lambda: any("checkpoint.pt" in m for m in notes(app)),
                                 what="note about the new non-log")
            assert table.row_count == 4

            await pilot.press("j", "j")
            assert app.screen.current_path() == paths[2]
            await pilot.press("k")
            assert app.screen.current_path() == paths[1]
    finally:
        if not isinstance(live, str):
            live.close()


async def test_compare_update_ratio_has_one_series_per_run(tmp_path, tui):
    sweep(tmp_path)
    paths = [str(tmp_path / f"lr{lr}.sock") for lr in LRS]
    app = MultiRunApp(paths)
    async with app.run_test(size=(140, 40)) as pilot:
        await tui.wait_until(pilot, loaded(app, 3), what="three runs loaded")
        await pilot.press("tab")
        assert isinstance(app.screen, CompareScreen)
        screen = app.screen
        await pilot.pause(0.1)
        assert screen.tensor_list.has_focus  # keys go to the list, not into the (hidden) filter box
        assert [o.id for o in screen.tensor_list.options] == ["fc1.weight", "fc1.bias", "fc2.weight"]
        assert app.tensor == "fc1.weight" and app.metric.label == "weights norm"
        await pilot.press("s", "s")
        assert app.metric.label == "update ratio"
        await pilot.pause(0.1)
        chart = screen.query_one(RunsChart)
        assert chart.drawn == ["lr0.001.sock", "lr0.01.sock", "lr0.1.sock"]
        for (_label, x, y), slot in zip(chart.series_data, app.slots, strict=True):
            steps, ratio = slot.data.series("fc1.weight", "ratio", kind="delta")
            ok = np.isfinite(ratio) & (ratio > 0)
            np.testing.assert_array_equal(x, steps[ok])
            np.testing.assert_allclose(y, np.log10(ratio[ok]))  # the log axis: log10 values, decade labels
        table = screen.query_one("#cmp-values")
        assert table.row_count == 3
        latest = [float(cell(table, p, "latest")) for p in paths]
        assert latest[0] < latest[1] < latest[2]  # the bigger the learning rate, the bigger the step
        assert str(table.columns["common"].label) == f"at step {STEPS - 1}"
        assert "fc1.weight · update ratio" in tui.static_text(screen.query_one("#cmp-title"))

        # Another tensor: j moves down the list, the chart follows.
        await pilot.press("j")
        assert app.tensor == "fc1.bias"
        await pilot.pause(0.05)
        steps, ratio = app.slots[1].data.series("fc1.bias", "ratio", kind="delta")
        assert chart.series_data[1][2][-1] == pytest.approx(np.log10(ratio[-1]))

        # Filter the tensors; esc clears.
        await pilot.press("slash", *"fc2")
        assert [o.id for o in screen.tensor_list.options] == ["fc2.weight"]
        assert app.tensor == "fc2.weight"
        await pilot.press("enter")
        assert screen.tensor_list.has_focus
        await pilot.press("slash", "escape")
        assert len(screen.tensor_list.options) == 3 and app.tensor == "fc2.weight"

        # Statistics cycle forward to the scalars and back; l toggles the log axis.
        await pilot.press("s", "s")
        assert app.metric.label == "loss"
        await pilot.pause(0.05)
        assert len(chart.drawn) == 3
        assert "a scalar" in tui.static_text(screen.query_one("#cmp-title"))
        await pilot.press("s")
        assert app.metric.label == "weights norm"  # wraps around
        await pilot.press("S", "S", "S")
        assert app.metric.label == "update ratio"
        assert app.log_y
        await pilot.press("l")
        assert not app.log_y
        await pilot.pause(0.05)
        linear = app.slots[0].data.series("fc2.weight", "ratio", kind="delta")[1][1:]  # step 0 has no delta
        np.testing.assert_array_equal(chart.series_data[0][2], linear)

        await pilot.press("question_mark")
        assert isinstance(app.screen, RunsHelpScreen)
        await pilot.press("tab")  # no switching under the help
        assert isinstance(app.screen, RunsHelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("tab")
        assert isinstance(app.screen, RunListScreen)
        await pilot.press("tab")
        assert app.screen is screen and app.tensor == "fc2.weight"  # the comparison kept its state
        await pilot.press("q")
    assert app.return_code == 0


async def test_comparison_follows_a_live_run(tmp_path, tui):
    runs = sweep(tmp_path, statuses=("finished", "finished", None))
    live = runs[0.1]
    try:
        app = MultiRunApp([str(tmp_path / f"lr{lr}.sock") for lr in LRS])
        async with app.run_test(size=(120, 30)) as pilot:
            await tui.wait_until(pilot, loaded(app, 3), what="three runs loaded")
            await pilot.press("tab")
            chart = app.screen.query_one(RunsChart)
            await tui.wait_until(pilot, lambda: len(chart.series_data) == 3, what="first chart")
            assert chart.series_data[2][1][-1] == STEPS - 1
            params = {"fc1.weight": np.ones((8, 16)), "fc1.bias": np.zeros(16), "fc2.weight": np.ones((16, 4))}
            for step in (STEPS + 10, STEPS + 20):
                live.snapshot(step, params)
            # Live data is redrawn at most once a second: give it a few.
            await tui.wait_until(pilot, lambda: chart.series_data[2][1][-1] == STEPS + 20, timeout=10,
                                 what="the live run's new snapshots on the chart")
            assert chart.series_data[0][1][-1] == STEPS - 1  # the finished runs did not move
            assert int(tui.cell_text(app.screen.query_one("#cmp-values"), str(tmp_path / "lr0.1.sock"),
                                     "last")) == STEPS + 20
    finally:
        live.close()


async def test_keys_typed_in_one_burst_land_where_they_were_meant(tmp_path, tui):
    """A terminal delivers fast typing or a paste as one read: keys queue before focus moves."""
    sweep(tmp_path)
    app = MultiRunApp([str(tmp_path / f"lr{lr}.sock") for lr in LRS])
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, loaded(app, 3), what="three runs loaded")

        def burst(*keys):
            for key in keys:
                app.post_message(events.Key(key, {"slash": "/", "enter": "\r", "tab": "\t"}.get(key, key)))

        burst("tab", "s", "s")  # the comparison's list must have the focus before it is mounted
        await tui.wait_until(pilot, lambda: app.metric.label == "update ratio", what="two statistics on")
        screen = app.screen
        assert screen.pattern == "" and len(screen.tensor_list.options) == 3
        burst("slash", "f", "c", "2", "enter")  # the box opens at once, before "fc2" is handled
        await tui.wait_until(pilot, lambda: screen.pattern == "fc2" and screen.focused is screen.tensor_list,
                             what="filter typed in a burst")
        assert [o.id for o in screen.tensor_list.options] == ["fc2.weight"]
        await pilot.press("s")
        assert app.metric.label == "grad norm" and screen.pattern == "fc2"
        burst("slash", "x", "escape")
        await tui.wait_until(pilot, lambda: screen.pattern == "" and len(screen.tensor_list.options) == 3
                             and screen.focused is screen.tensor_list, what="filter cleared in a burst")


async def test_enter_hands_the_terminal_to_the_single_run_viewer(tmp_path, tui, monkeypatch):
    sweep(tmp_path)
    paths = [str(tmp_path / f"lr{lr}.sock") for lr in LRS]
    out = tmp_path / "viewer-argv.txt"
    app = MultiRunApp(paths, mode="replay")
    async with app.run_test(size=(120, 24)) as pilot:
        await tui.wait_until(pilot, loaded(app, 3), what="three runs loaded")
        # Headless: no terminal to hand over, so the command is shown instead.
        await pilot.press("j", "enter")
        assert app.opened == [paths[1]]
        await tui.wait_until(pilot, lambda: any(f"weighttui replay {paths[1]}" in m for m in notes(app)),
                             what="the command to run")
        # With a terminal: suspend and run the viewer (a stand-in records its argv).
        monkeypatch.setattr(app, "suspend", contextlib.nullcontext)
        monkeypatch.setattr(app, "viewer_command", lambda p: [
            sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(repr(sys.argv[1:]))", "replay", p])
        await pilot.press("j", "enter")
        assert app.opened == [paths[1], paths[2]]
        assert out.read_text() == repr(["replay", paths[2]])
    # The real command line is the CLI's own replay of that one log.
    assert MultiRunApp(paths, mode="replay").viewer_command(paths[0])[-3:] == ["weighttui.cli", "replay",
                                                                               paths[0]]


async def test_a_log_replaced_by_garbage_shows_an_error_and_the_others_go_on(tmp_path, tui):
    sweep(tmp_path)
    paths = [str(tmp_path / f"lr{lr}.sock") for lr in LRS]
    missing = str(tmp_path / "later.sock")
    app = MultiRunApp(paths + [missing])
    async with app.run_test(size=(140, 24)) as pilot:
        await tui.wait_until(pilot, lambda: all(s.data.n == STEPS for s in app.slots[:3]), what="loaded")
        table = app.screen.query_one(RunTable)
        await tui.wait_until(pilot, lambda: cell(table, missing, "status") == "waiting", what="waiting row")
        os.remove(paths[1])
        with open(paths[1], "wb") as fh:
            fh.write(b"this is not a weighttui log any more")
        await tui.wait_until(pilot, lambda: cell(table, paths[1], "status") == "error", what="error status")
        note = tui.static_text(app.screen.query_one("#runs-note"))
        assert "lr0.01.sock: not a weighttui run log" in note
        # The run that was awaited starts; the others are untouched.
        sgd_run(missing, 0.05, 4)
        await tui.wait_until(pilot, lambda: cell(table, missing, "status") == "finished", what="late run")
        assert cell(table, paths[0], "status") == "finished"
        assert app.slots[0].data.n == STEPS
        await pilot.press("q")
    assert app.return_code == 0  # one bad log is not a bad exit


def test_log_ticks_are_decades_or_plain_numbers():
    from weighttui.tui.widgets.runs_chart import log_ticks

    assert log_ticks(-3.2, 0.1) == ([-3.0, -2.0, -1.0, 0.0], ["1e-3", "1e-2", "1e-1", "1e0"])
    ticks, labels = log_ticks(-12.5, 1.5)  # 14 decades: thinned to about six labels
    assert 2 <= len(ticks) <= 7 and labels[0] == "1e-12"
    ticks, labels = log_ticks(np.log10(0.02), np.log10(0.05))  # inside one decade: plain numbers
    assert labels == ["0.02", "0.03162", "0.05"] and ticks[0] == pytest.approx(np.log10(0.02))


async def test_the_title_counts_a_diverged_run_as_the_list_shows_it(tmp_path, tui):
    """The title said `finished 3` while the list marked one run `diverged`."""
    import weighttui

    for name, last in (("a", 1.0), ("b", 2.0), ("nan", float("nan"))):
        with weighttui.Recorder(tmp_path / f"{name}.wtui") as rec:
            for step in range(4):
                rec.snapshot(step, {"w": np.ones(3, np.float32) * step},
                             scalars={"loss": last if step == 3 else 3.0 - step})
    app = MultiRunApp(directory=tmp_path, scan_interval=0.05)
    async with app.run_test(size=(140, 30)) as pilot:
        await tui.wait_until(pilot, loaded(app, 3, steps=4), what="three runs loaded")
        await pilot.pause(0.3)
        table = app.screen.query_one(RunTable)
        assert cell(table, str(tmp_path / "nan.wtui"), "status") == "diverged"
        title = tui.static_text(app.screen.query_one("#runs-title"))
        assert "diverged 1 · finished 2" in title, title
