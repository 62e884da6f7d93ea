"""A NaN at one snapshot of a long run, finite again by the next, is never lost to thinning.

The viewer's row view (max_rows) and `info` (4,096 rows) keep a thinned selection of a long run's
snapshots; one that held a NaN or an Inf may not be among them. The alerts still name it, dated
at its own step: at the end of the run, while following it live, and at a replay position any
distance after it (analysis/diagnose reads RunData.first_nonfinite, every snapshot). The log is
written by the real Recorder, without the nan_origin instrument so that the non-finite rule alone
has to find it (with it, the nonfinite alert is the one the user acts on).
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

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

STEPS = 4500  # more than info's 4,096 rows: info's row view is thinned too
MAX_ROWS = 64
NAN_AT = 2501  # a.weight holds a NaN at this snapshot only (odd: no row of a halving row view)
INF_AT = 3333  # b.weight's gradient holds an Inf at this snapshot only


@pytest.fixture(scope="module")
def nan_once(tmp_path_factory):
    path = tmp_path_factory.mktemp("thinned_nan") / "once.wtui"
    rng = np.random.default_rng(3)
    w = {"a.weight": rng.normal(size=(4, 4)), "b.weight": rng.normal(size=(4, 4))}
    with Recorder(path, every=1, bins=8, sample=0, instruments=False, queue_size=1 << 16) as rec:  # (never drops)
        for step in range(STEPS):
            grads = {n: rng.normal(0, 1e-2, v.shape) for n, v in w.items()}
            params = {n: v.copy() for n, v in w.items()}
            if step == NAN_AT:
                params["a.weight"][1, 1] = np.nan
            if step == INF_AT:
                grads["b.weight"][0, 0] = np.inf
            rec.snapshot(step, params, grads=grads)
            for n in w:
                w[n] -= 0.1 * np.nan_to_num(grads[n], posinf=0.0)
    return str(path)


def named(alerts) -> set:
    return {(a.rule, a.tensor, a.step) for a in alerts if a.rule.startswith("nonfinite")}


EXPECTED = {("nonfinite", "a.weight", NAN_AT), ("nonfinite_grad", "b.weight", INF_AT)}


def test_the_row_view_lacks_them_and_diagnose_names_them(nan_once):
    data = RunData(nan_once, max_rows=MAX_ROWS)
    data.refresh()
    assert data.snapshot_count == STEPS and data.n <= MAX_ROWS
    assert not {NAN_AT, INF_AT} & set(data.snapshot_index.tolist())
    assert not np.isnan(data.stat_matrix("weights", "nan")).all()  # (the row view is exact: no NaN in it)
    assert not (data.stat_matrix("weights", "nan") > 0).any()
    alerts = diagnose(data)
    assert named(alerts) == EXPECTED
    [a] = [a for a in alerts if a.rule == "nonfinite"]
    assert "1 NaN, 0 Inf when first seen; finite again by step 4499" in a.message
    first, nan, _inf = data.first_nonfinite("weights")
    assert first[data.column("a.weight")] == NAN_AT and nan[data.column("a.weight")] == 1
    assert first[data.column("b.weight")] == -1
    # the same as every row: the rule's answer does not depend on the thinning
    assert named(diagnose(_full(nan_once))) == EXPECTED


def _full(path) -> RunData:
    data = RunData(path)
    data.refresh()
    return data


def test_info_names_them(nan_once, capsys):
    assert cli.main(["info", nan_once, "--json", "--no-cache"]) == 0
    out = json.loads(capsys.readouterr().out)
    alerts = out["alerts"]
    assert {(a["rule"], a["tensor"], a["step"]) for a in alerts if a["rule"].startswith("nonfinite")} == EXPECTED
    assert cli.main(["info", nan_once, "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert f"a.weight from step {NAN_AT}: non-finite values" in text


@pytest.mark.parametrize("indexed", [False, True], ids=["read-from-the-log", "from-its-index"])
async def test_the_app_names_them_following(nan_once, tui, tmp_path, indexed):
    path = nan_once
    if not indexed:  # a copy no index covers: the follower reads it, the row view thins as it goes
        path = str(tmp_path / "copy.wtui")
        shutil.copyfile(nan_once, path)
    else:
        assert weighttui.open(nan_once, max_rows=MAX_ROWS).index_path is not None
    app = WeightApp(path, mode="watch", max_rows=MAX_ROWS)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                             timeout=60, what="the whole log")
        await tui.wait_until(pilot, lambda: named(app.alerts) == EXPECTED, timeout=30, what="the alerts, following")
        assert app.data.n <= MAX_ROWS and (app.data.index_path is not None) == indexed


async def test_the_app_names_them_at_the_end_and_after_them_in_replay(nan_once, tui):
    app = WeightApp(nan_once, mode="replay", max_rows=MAX_ROWS)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.row_count == STEPS and app.data.end is not None,
                             timeout=60, what="the whole log")
        await pilot.press("end")
        await tui.wait_until(pilot, lambda: not app._alerts_dirty and named(app.alerts) == EXPECTED,
                             timeout=30, what="the alerts at the end")
        await pilot.press("left")  # a replay position (a RowsUpTo) 1,000 snapshots after the Inf
        assert app.view().snapshot is not None or app.view().step == STEPS - 2
        await tui.wait_until(pilot, lambda: not app._alerts_dirty, what="the alerts at the position")
        await pilot.pause()
        assert named(app.alerts) == EXPECTED


async def test_a_live_run_names_it_after_the_row_view_thinned_it_away(tmp_path, tui):
    """While the run is being written: a NaN at one snapshot, then enough snapshots that the row view
    (16 rows) halves past it, the run still live (no end record): the alert is there, dated at it."""
    path = tmp_path / "live.wtui"
    rng = np.random.default_rng(9)
    w = rng.normal(size=(4, 4))
    rec = Recorder(path, every=1, bins=8, sample=0, instruments=False, queue_size=1 << 14)
    app = WeightApp(str(path), mode="watch", max_rows=16)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            for step in range(400):
                shown = w + step * 1e-3
                if step == 201:
                    shown = shown.copy()
                    shown[2, 2] = np.nan
                rec.snapshot(step, {"a.weight": shown})
                if step % 100 == 99:
                    assert rec.drain(10)
                    await pilot.pause(0.05)
            assert rec.drain(10)
            await tui.wait_until(pilot, lambda: app.data.snapshot_count == 400, timeout=30, what="every snapshot")
            assert app.data.end is None and 201 not in app.data.snapshot_index.tolist()
            want = {("nonfinite", "a.weight", 201)}
            await tui.wait_until(pilot, lambda: named(app.alerts) == want, timeout=30, what="the alert, live")
            [alert] = [a for a in app.alerts if a.rule == "nonfinite"]
            assert "finite again by step 399" in alert.message  # (the NaN lies before the rows read)
    finally:
        rec.close()


async def test_a_diverged_tensors_gradient_update_and_moments_read_nan_not_a_dash(tmp_path, tui):
    """`–` is "no value" (a first update); beside weights gone NaN the gradient norm, update ratio and
    moment norms that went with them read nan."""
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.layer_table import LayerTable

    path = tmp_path / "gone.wtui"
    with weighttui.Recorder(path, instruments=["optim"]) as rec:
        for s in range(4):
            w = np.full(6, np.nan) if s == 3 else np.ones(6) * (s + 1)
            rec.snapshot(s, {"w": w}, grads={"w": w * 0.1},
                         optim={"w": {"m": w, "v": w * w, "lr": 0.1, "step": s + 1, "beta2": 0.999, "eps": 1e-8}})
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(200, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.end is not None, what="the run")
        table = app.screen.query_one(LayerTable)
        table.chosen_metrics = ("norm", "ratio", "grad", "m_norm")
        table.set_layout(200)
        await pilot.press("end")
        app.screen.refresh_view()
        await pilot.pause()
        for column in ("norm", "ratio", "grad", "m_norm"):
            assert table.get_cell("t:w", column).plain.split()[-1] == "nan", column
        await pilot.press("home")  # the first snapshot: no update yet, no value
        app.screen.refresh_view()
        await pilot.pause()
        assert table.get_cell("t:w", "ratio").plain.split()[-1] == "–"


async def test_a_diverged_bias_reads_a_dash_in_columns_only_a_matrix_has(tmp_path, tui):
    """A bias has no unit norms, spectral norm or alpha, diverged or not: `–`, not the `nan` its matrix gets."""
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.layer_table import LayerTable

    path = tmp_path / "bias.wtui"
    with weighttui.Recorder(path, instruments=["units", "sigma"]) as rec:
        for s in range(4):
            bad = s == 3
            w = np.full((4, 4), np.nan) if bad else np.eye(4) * (s + 1)
            b = np.full(4, np.nan) if bad else np.ones(4) * s
            rec.snapshot(s, {"fc.weight": w, "fc.bias": b})
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(200, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.end is not None, what="the run")
        table = app.screen.query_one(LayerTable)
        table.chosen_metrics = ("norm", "sigma", "exploding")
        table.set_layout(200)
        await pilot.press("end")
        app.screen.refresh_view()
        await pilot.pause()
        assert table.get_cell("t:fc.bias", "norm").plain.split()[-1] == "nan"
        for column in ("sigma", "exploding"):
            assert table.get_cell("t:fc.bias", column).plain.split()[-1] == "–", column
        assert table.get_cell("t:fc.weight", "sigma").plain.split()[-1] == "nan"
