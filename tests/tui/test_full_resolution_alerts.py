"""Every alert rule reads every snapshot: a short event is never lost to, or misdated by, thinning.

The viewer's row view (max_rows) and `info` (4,096 rows) keep a thinned selection of a long run's
snapshots. An event a few snapshots long (an exploding gradient, a burst of zero weights, a
weight-norm jump) between two of its rows used to be no alert at all, or an alert dated at the
next row. The rules now evaluate every snapshot from the store (analysis/diagnose), so the
alerts name them at their own step: at the end of a run, at a replay position, while following
a log as it is written, and in `info`. The logs are written by the real Recorder.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import weighttui
from weighttui import Recorder, cli
from weighttui.analysis.diagnose import diagnose
from weighttui.data.run import RunData
from weighttui.tui.app import WeightApp

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

STEPS = 4500  # more than info's 4,096 rows: info's row view is thinned too
MAX_ROWS = 64
GRAD_AT = 2101  # a.weight's gradient x1e4 for 3 snapshots: grad_explode (persist 2)
ZERO_AT = 2901  # half of b.weight's rows zero for 3 snapshots: dead_units (persist 3)
JUMP_AT = 3701  # c.weight x1000 for 3 snapshots: norm_jump
EVENTS = {("grad_explode", "a.weight", GRAD_AT), ("dead_units", "b.weight", ZERO_AT),
          ("norm_jump", "c.weight", JUMP_AT)}
RULES = {r for r, _t, _s in EVENTS}


def write(path, steps: int, events: dict, *, rec: Recorder | None = None, start: int = 0) -> None:
    """Healthy weights (a random walk of 1e-3 per step) with the events planted: {kind: first step}."""
    rng = np.random.default_rng(5)
    w = {"a.weight": rng.normal(size=(8, 8)), "b.weight": rng.normal(size=(8, 8)),
         "c.weight": rng.normal(size=(8, 8))}
    own = rec is None
    if own:
        rec = Recorder(path, every=1, bins=8, sample=0, instruments=False, queue_size=1 << 16)  # (never drops)
    try:
        for step in range(steps):
            params = {n: v.copy() for n, v in w.items()}
            grads = {n: rng.normal(0, 1e-2, v.shape) for n, v in w.items()}
            if "grad" in events and 0 <= step - events["grad"] < 3:
                grads["a.weight"] *= 1e4
            if "zero" in events and 0 <= step - events["zero"] < 3:
                params["b.weight"][:4] = 0.0
            if "jump" in events and 0 <= step - events["jump"] < 3:
                params["c.weight"] *= 1000.0
            rec.snapshot(step, params, grads=grads)
            for v in w.values():
                d = rng.normal(size=v.shape)
                v += d * (1e-3 * np.linalg.norm(v) / np.linalg.norm(d))
    finally:
        if own:
            rec.close()


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    path = tmp_path_factory.mktemp("bursts") / "bursts.wtui"
    write(path, STEPS, {"grad": GRAD_AT, "zero": ZERO_AT, "jump": JUMP_AT})
    return str(path)


def named(alerts) -> set:
    return {(a.rule, a.tensor, a.step) for a in alerts if a.rule in RULES}


def test_the_row_view_misses_them_and_diagnose_names_them(burst):
    data = RunData(burst, max_rows=MAX_ROWS)
    data.refresh()
    assert data.snapshot_count == STEPS and data.n <= MAX_ROWS
    shown = set(data.snapshot_index.tolist())
    assert not shown & {at + k for at in (GRAD_AT, ZERO_AT, JUMP_AT) for k in range(3)}
    assert named(diagnose(data)) == EVENTS
    # and exactly what a reader of every row finds
    full = RunData(burst)
    full.refresh()
    assert named(diagnose(full)) == EVENTS
    # as of an earlier snapshot (a replay position): only what happened up to it, at its own step
    assert named(diagnose(data.upto_snapshot(ZERO_AT + 10))) == {e for e in EVENTS if e[2] <= ZERO_AT}
    assert named(diagnose(data.upto_snapshot(ZERO_AT + 1))) == {e for e in EVENTS if e[2] < ZERO_AT}
    assert named(diagnose(data.upto_snapshot(ZERO_AT + 2))) == {e for e in EVENTS if e[2] <= ZERO_AT}


@pytest.mark.parametrize("cache", [True, False], ids=["indexed", "no-cache"])
def test_info_names_them_at_their_steps(burst, capsys, cache):
    args = ["info", burst, "--json"] + ([] if cache else ["--no-cache"])
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {(a["rule"], a["tensor"], a["step"]) for a in out["alerts"] if a["rule"] in RULES} == EVENTS


@pytest.mark.parametrize("budget", [None, 0.0], ids=["one-call", "a-block-a-call"])
async def test_the_app_names_them_at_the_end_and_at_a_replay_position(burst, tui, monkeypatch, budget):
    """budget 0: the UI thread reads one block of 256 snapshots per rule per call (a log of many GiB
    with the default budget): the alerts come in over several calls and end the same."""
    if budget is not None:
        import weighttui.analysis.diagnose as diagnose_module
        import weighttui.tui.app as appmod

        monkeypatch.setattr(appmod, "ALERTS_BUDGET_S", budget)
        monkeypatch.setattr(diagnose_module, "_BLOCK", 256)
    app = WeightApp(burst, mode="replay", max_rows=MAX_ROWS)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                             timeout=60, what="the whole log")
        await pilot.press("end")
        await tui.wait_until(pilot, lambda: not app._alerts_dirty and named(app.alerts) == EVENTS,
                             timeout=30, what="the alerts at the end")
        await pilot.press("g", *str(ZERO_AT + 40), "enter")  # between the zero burst and the jump
        await tui.wait_until(pilot, lambda: app.alerts_as_of == ZERO_AT + 40 and not app._alerts_dirty,
                             timeout=30, what="the alerts at the position")
        await pilot.pause()
        assert named(app.alerts) == {e for e in EVENTS if e[2] <= ZERO_AT}
        assert app.data.n <= MAX_ROWS


@pytest.mark.parametrize("indexed", [False, True], ids=["read-from-the-log", "from-its-index"])
async def test_the_app_names_them_following_a_finished_log(burst, tui, tmp_path, indexed):
    path = burst
    if not indexed:  # a copy no index covers: the follower reads it, the row view thins as it goes
        path = str(tmp_path / "copy.wtui")
        shutil.copyfile(burst, path)
    else:
        assert weighttui.open(burst, max_rows=MAX_ROWS).index_path is not None
    app = WeightApp(path, mode="watch", max_rows=MAX_ROWS)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                             timeout=60, what="the whole log")
        await tui.wait_until(pilot, lambda: named(app.alerts) == EVENTS, timeout=30, what="the alerts, following")
        assert app.data.n <= MAX_ROWS


async def test_a_live_run_names_a_burst_the_row_view_thinned_away(tmp_path, tui):
    """While the run is being written: a 3-snapshot gradient burst, then enough snapshots that the row
    view (16 rows) halves past it, the run still live (no end record): the alert is there, dated at it."""
    path = tmp_path / "live.wtui"
    rec = Recorder(path, every=1, bins=8, sample=0, instruments=False, queue_size=1 << 14)
    app = WeightApp(str(path), mode="watch", max_rows=16)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            rng = np.random.default_rng(9)
            w = rng.normal(size=(8, 8))
            for step in range(400):
                grads = rng.normal(0, 1e-2, w.shape)
                if 201 <= step < 204:
                    grads *= 1e4
                rec.snapshot(step, {"a.weight": w.copy()}, grads={"a.weight": grads})
                d = rng.normal(size=w.shape)
                w += d * (1e-3 * np.linalg.norm(w) / np.linalg.norm(d))
                if step % 50 == 49:
                    assert rec.drain(10)
                    await pilot.pause(0.05)
            assert rec.drain(10)
            await tui.wait_until(pilot, lambda: app.data.snapshot_count == 400, timeout=30, what="every snapshot")
            assert app.data.end is None and not {201, 202, 203} & set(app.data.snapshot_index.tolist())
            want = {("grad_explode", "a.weight", 201)}
            await tui.wait_until(pilot, lambda: {(a.rule, a.tensor, a.step) for a in app.alerts} == want,
                                 timeout=30, what="the alert, live")
    finally:
        rec.close()
