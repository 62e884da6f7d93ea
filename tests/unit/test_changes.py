"""The change table against brute force over the very weights a real Recorder logged."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.analysis.changes import COLUMNS, change_table, snapshot_step
from weighttui.data.run import RowsUpTo

SHAPES = {"enc.weight": (12, 6), "enc.bias": (12,), "head.weight": (3, 12), "frozen.weight": (4, 4)}
RATIOS = {"enc.weight": 2e-3, "enc.bias": 5e-2, "head.weight": 4e-2, "frozen.weight": 0.0}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """(path, {step: {name: weights}}) of a run recorded every 2 steps, full values every 10."""
    path = tmp_path_factory.mktemp("changes") / "run.wtui"
    rng = np.random.default_rng(3)
    w = {n: rng.normal(0, 0.3, s) for n, s in SHAPES.items()}
    kept = {}
    with Recorder(path, every=2, full_every=10, bins=16, sample=5, queue_size=4096) as rec:  # never drops
        for step in range(60):
            if step % 2 == 0:
                kept[step] = {n: v.copy() for n, v in w.items()}
            rec.snapshot(step, w)
            for n, v in w.items():
                d = rng.normal(size=v.shape)
                if n == "enc.weight":
                    d[0] = 0.0  # one row never changes: changed fraction below 1
                v += d * (RATIOS[n] * np.linalg.norm(v) / np.linalg.norm(d))
    return path, kept


def by_name(table):
    return {row["tensor"]: row for row in table}


def test_columns_against_brute_force(logged):
    path, kept = logged
    run = weighttui.open(path)
    steps = sorted(kept)
    for row in (5, 17, run.n - 1):
        t = by_name(change_table(run, row=row, window=4))
        now, prev = kept[steps[row]], kept[steps[row - 1]]
        for name in SHAPES:
            d = now[name] - prev[name]
            ratio = np.linalg.norm(d) / np.linalg.norm(prev[name])
            assert t[name]["ratio"] == pytest.approx(ratio / 2, rel=1e-5)  # per step: deltas span 2 steps
            assert t[name]["update_norm"] == pytest.approx(np.linalg.norm(d), rel=1e-6, abs=1e-12)
            assert t[name]["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-6, abs=1e-12)
            assert t[name]["changed_frac"] == pytest.approx(np.count_nonzero(d) / d.size)
            mean = np.mean([np.linalg.norm(kept[steps[r]][name] - kept[steps[r - 1]][name])
                            / np.linalg.norm(kept[steps[r - 1]][name]) / 2 for r in range(row - 3, row + 1)])
            assert t[name]["ratio_mean"] == pytest.approx(mean, rel=1e-5, abs=1e-15)
            n0 = np.linalg.norm(kept[0][name])
            assert t[name]["norm_change"] == pytest.approx((np.linalg.norm(now[name]) - n0) / n0, rel=1e-5, abs=1e-12)
            assert np.isnan(t[name]["change_ab"])
    assert by_name(change_table(run))["enc.weight"]["changed_frac"] == pytest.approx(1 - 6 / 72)


def test_change_between_marks_exact_from_complete_values(logged):
    path, kept = logged
    run = weighttui.open(path)
    assert {10, 40} <= set(run.full_steps)
    t = by_name(change_table(run, mark_a=10, mark_b=40))
    for name in SHAPES:
        a, b = kept[10][name], kept[40][name]
        assert t[name]["change_ab"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-5)
        assert t[name]["change_ab_from"] == "values"


def test_change_between_marks_from_samples_otherwise(logged):
    path, kept = logged
    run = weighttui.open(path)
    t = by_name(change_table(run, mark_a=13, mark_b=35))  # no complete values: rows of steps 12 and 34
    for name in SHAPES:
        idx = run.tensor(name).sample_index
        a = kept[12][name].ravel()[idx].astype(np.float32).astype(np.float64)
        b = kept[34][name].ravel()[idx].astype(np.float32).astype(np.float64)
        expect = np.linalg.norm(b - a) / np.linalg.norm(a)
        assert t[name]["change_ab"] == pytest.approx(expect, rel=1e-5, abs=1e-12)
        assert t[name]["change_ab_from"] == "samples"


@pytest.mark.parametrize("full_every", [5, 0], ids=["values", "samples"])
def test_change_between_marks_of_a_tensor_gone_all_nan_is_nan(tmp_path, full_every):
    """Nothing finite in both copies is not "no change" (0): NaN, as numpy says, on both paths."""
    path = tmp_path / "nan.wtui"
    w = {"ok": np.ones((4, 4)), "gone": np.ones((4, 4))}
    with Recorder(path, full_every=full_every or None, sample=8) as rec:
        for step in range(11):
            if step == 6:
                w["gone"] = np.full((4, 4), np.nan)
            rec.snapshot(step, w)
            w["ok"] = w["ok"] * 1.01
    t = by_name(change_table(weighttui.open(path), mark_a=0, mark_b=10))
    assert t["gone"]["change_ab_from"] == ("values" if full_every else "samples")
    assert np.isnan(t["gone"]["change_ab"])
    assert t["ok"]["change_ab"] == pytest.approx(1.01 ** 10 - 1, rel=1e-5)


def test_flags_stagnant_and_fast(logged):
    run = weighttui.open(logged[0])
    flags = {name: row["flag"] for name, row in by_name(change_table(run)).items()}
    # head.weight moves 4e-2 per step: fast; enc.bias too, but biases are not judged by the band
    assert flags == {"enc.weight": "", "enc.bias": "", "head.weight": "fast", "frozen.weight": "stagnant"}


def test_rows_and_marks_by_step(logged):
    run = weighttui.open(logged[0])
    assert snapshot_step(run, 13) == 12 and snapshot_step(run, 12) == 12
    assert snapshot_step(run, -1) is None and snapshot_step(run, None) is None
    table = change_table(run)
    assert [r["tensor"] for r in table] == list(SHAPES)
    assert set(table[0]) >= {"tensor", "flag", *COLUMNS}


def test_first_row_and_empty_run(tmp_path, logged):
    run = weighttui.open(logged[0])
    first = by_name(change_table(run, row=0))
    assert np.isnan(first["enc.weight"]["ratio"]) and first["enc.weight"]["norm_change"] == 0.0
    path = tmp_path / "empty.wtui"
    Recorder(path).close()
    assert change_table(weighttui.open(path)) == []


def test_export_changes_csv(tmp_path, logged):
    from weighttui.cli import export

    out = tmp_path / "changes.csv"
    export.export(weighttui.open(logged[0]), fmt="changes", out=str(out), step=None, epoch=None, kinds=None)
    rows = list(csv.DictReader(out.open()))
    assert [r["tensor"] for r in rows] == list(SHAPES)
    assert rows[3]["flag"] == "stagnant" and float(rows[0]["changed_frac"]) == pytest.approx(1 - 6 / 72)


def test_marks_and_position_at_full_resolution_in_a_thinned_row_view(logged):
    """max_rows thins the row view; the marks, and a position (`RunData.upto_snapshot`) between its
    rows, are the snapshots' own, not the rows at or before them (issue 14: replay at full resolution)."""
    path, kept = logged
    full = weighttui.open(path)
    thin = weighttui.open(path, max_rows=8)
    rows = set(thin.snapshot_index.tolist())
    assert thin.n < full.n and not {6, 17, 21} & rows  # steps 12, 34, 42: between the thinned rows
    for a, b, source in ((12, 34, "samples"), (10, 40, "values")):
        got, want = by_name(change_table(thin, mark_a=a, mark_b=b)), by_name(change_table(full, mark_a=a, mark_b=b))
        for name in SHAPES:
            assert got[name]["change_ab_from"] == source
            assert got[name]["change_ab"] == pytest.approx(want[name]["change_ab"], rel=1e-12, abs=1e-15)
    # the table as of snapshot 21 (step 42): its values are that snapshot's, and the mean over the
    # last 4 snapshots is over snapshots 18-21 (the row view has only 16 of them)
    at = thin.upto_snapshot(21)
    assert at is not thin and int(at.steps[-1]) == 42 and at.snapshot_index.tolist() == list(range(22))
    got, want = by_name(change_table(at, window=4)), by_name(change_table(full, row=21, window=4))
    for name in SHAPES:
        for col in ("ratio", "ratio_mean", "update_norm", "max_abs", "changed_frac", "norm_change"):
            assert got[name][col] == pytest.approx(want[name][col], nan_ok=True), (name, col)
        assert got[name]["flag"] == want[name]["flag"]
    # older history is the row view's: with 4 snapshots at full resolution, rows 0, 8, 16, then 18-21
    short = RowsUpTo(thin, 21, tail=4)
    assert short.snapshot_index.tolist() == [0, 8, 16, 18, 19, 20, 21] and short.n == 7
    assert short.steps.tolist() == [0, 16, 32, 36, 38, 40, 42]
    for kind, stat in (("weights", "norm"), ("delta", "ratio")):
        np.testing.assert_array_equal(short.stat_matrix(kind, stat)[3:], full.stat_matrix(kind, stat)[18:22])
        np.testing.assert_array_equal(short.stat_matrix(kind, stat)[:3], thin.stat_matrix(kind, stat)[:3])
    assert short.present[3:].all() and short.epochs.size == short.times.size == short.n
    before = by_name(change_table(thin, row=int(np.searchsorted(thin.snapshot_index, 21)) - 1))
    assert before["enc.weight"]["update_norm"] != got["enc.weight"]["update_norm"]
    assert full.upto_snapshot(21) is full  # a row view with every snapshot: the view itself


def test_a_tensor_gone_nan_is_flagged_and_its_mean_ratio_is_not_the_finite_past(tmp_path):
    """At a snapshot where a tensor's weights are NaN the table gave a finite mean ratio (the nanmean of the
    updates before) and no flag; its NaN cells read as "no value" ("-"), like a first update's."""
    import weighttui

    path = tmp_path / "nan.wtui"
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    with weighttui.Recorder(path) as rec:
        for step in range(6):
            rec.snapshot(step, {"ok.weight": w * (1 + 0.01 * step),
                                "bad.weight": w * (1 + 0.01 * step) if step < 5 else np.full_like(w, np.nan)})
    run = weighttui.open(path, cache=False)
    rows = by_name(change_table(run))
    assert rows["bad.weight"]["flag"] == "nonfinite" and rows["bad.weight"]["nonfinite"] is True
    assert np.isnan(rows["bad.weight"]["ratio_mean"])
    assert rows["ok.weight"]["flag"] != "nonfinite" and rows["ok.weight"]["nonfinite"] is False
    assert np.isfinite(rows["ok.weight"]["ratio_mean"])
    first = by_name(change_table(run, row=0))  # no update yet: NaN that is no value
    assert first["bad.weight"]["nonfinite"] is False and np.isnan(first["bad.weight"]["ratio"])
