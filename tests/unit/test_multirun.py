"""weighttui.analysis.multirun: finding logs in a directory, run rows, statuses, lining runs up."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from logbuilder import moving_log

import weighttui
from weighttui import Recorder
from weighttui.analysis.multirun import (
    TENSOR_METRICS,
    DirectoryWatch,
    Metric,
    align,
    common_tensors,
    compare,
    filter_names,
    loss_name,
    meta_text,
    metric_series,
    metrics,
    run_names,
    sniff,
    summarize,
)
from weighttui.data.run import RunData
from weighttui.log.format import HEADER, MAGIC

# --------------------------------------------------------------- discovery


def test_sniff_tells_logs_from_other_files(tmp_path):
    log = moving_log(tmp_path / "run.sock")
    assert sniff(log) is None
    (tmp_path / "empty").write_bytes(b"")
    assert sniff(tmp_path / "empty") == "pending"  # a writer may not have written yet
    (tmp_path / "half").write_bytes(MAGIC[:5])
    assert sniff(tmp_path / "half") == "pending"
    (tmp_path / "notes.txt").write_text("hello, not a log")
    assert sniff(tmp_path / "notes.txt") == "not a weighttui run log (bad magic bytes)"
    (tmp_path / "short.txt").write_bytes(b"hi")
    assert sniff(tmp_path / "short.txt") == "not a weighttui run log (bad magic bytes)"
    (tmp_path / "future.sock").write_bytes(MAGIC + struct.pack("<HH", 99, 0))
    assert "newer" in sniff(tmp_path / "future.sock") or "version" in sniff(tmp_path / "future.sock")


def test_directory_watch_reports_each_log_once_and_picks_up_new_ones(tmp_path):
    moving_log(tmp_path / "lr0.1.sock", lr=0.1)
    moving_log(tmp_path / "lr0.01.wtui", lr=0.01)
    (tmp_path / "notes.txt").write_text("sweep notes")
    (tmp_path / ".hidden.sock").write_bytes(HEADER)
    sub = tmp_path / "seed1"
    sub.mkdir()
    moving_log(sub / "run.log", lr=0.5)
    deep = sub / "ckpt" / "deeper"
    deep.mkdir(parents=True)
    moving_log(deep / "too-deep.sock")  # below MAX_DEPTH: not looked at

    watch = DirectoryWatch(tmp_path)
    first = watch.scan()
    assert first.logs == sorted([str(tmp_path / "lr0.01.wtui"), str(tmp_path / "lr0.1.sock"),
                                 str(sub / "run.log")])
    assert first.ignored == [(str(tmp_path / "notes.txt"), "not a weighttui run log (bad magic bytes)")]
    again = watch.scan()
    assert again.logs == [] and again.ignored == []

    # A run starting later: first an empty file (decided later), then the Recorder's header.
    (tmp_path / "lr1.sock").write_bytes(b"")
    assert watch.scan().logs == []
    rec = moving_log(tmp_path / "lr1.sock", lr=1.0, status=None)
    try:
        assert watch.scan().logs == [str(tmp_path / "lr1.sock")]
    finally:
        rec.close()
    assert watch.scan().logs == []

    # A non-log replaced by a log (new inode) is looked at again and then counts.
    os.remove(tmp_path / "notes.txt")
    moving_log(tmp_path / "notes.txt")
    later = watch.scan()
    assert later.logs == [str(tmp_path / "notes.txt")]
    assert str(tmp_path / "notes.txt") not in watch.ignored
    assert len(watch.logs) == 5


def test_directory_watch_survives_a_missing_directory(tmp_path):
    watch = DirectoryWatch(tmp_path / "not-yet")
    assert watch.scan().logs == []
    (tmp_path / "not-yet").mkdir()
    moving_log(tmp_path / "not-yet" / "a.sock")
    assert watch.scan().logs == [str(tmp_path / "not-yet" / "a.sock")]


def test_run_names_are_short_and_distinct(tmp_path):
    assert run_names(["/x/lr0.1/run.sock", "/x/lr0.01/run.sock", "/y/other.sock"]) == [
        "lr0.1/run.sock", "lr0.01/run.sock", "other.sock"]
    d = str(tmp_path)
    assert run_names([os.path.join(d, "a", "run.sock"), os.path.join(d, "b.sock")], d) == [
        os.path.join("a", "run.sock"), "b.sock"]
    assert run_names(["/elsewhere/c.sock"], d) == ["c.sock"]  # a file given beside the directory
    assert run_names([os.path.join(d, "a.sock"), "/elsewhere/a.sock"], d) == [
        os.path.join(os.path.basename(d), "a.sock"), os.path.join("elsewhere", "a.sock")]


# ------------------------------------------------------------ summary rows


def test_summarize_a_real_log(tmp_path):
    path = moving_log(tmp_path / "r.sock", steps=6, lr=0.25, scalars=("accuracy", "val_loss"), step_every=10)
    data = weighttui.open(path)
    row = summarize("r", data, "finished")
    assert (row.name, row.path, row.status, row.framework) == ("r", path, "finished", "numpy")
    assert row.snapshots == 6 and row.last_step == 50
    assert row.loss_name == "val_loss"  # a loss-like scalar beats the first one
    assert row.loss == pytest.approx(1.0 / (1 + 0.25 * 5))
    assert row.loss_values.size == 6
    assert row.meta == "lr=0.25 bs=32"
    assert row.corruptions == 0
    assert summarize("r", data, "finished", error="gone").status == "error"


def test_loss_name_and_meta_text(tmp_path):
    data = weighttui.open(moving_log(tmp_path / "a.sock", scalars=("acc", "loss")))
    assert loss_name(data) == "loss"
    assert loss_name(weighttui.open(moving_log(tmp_path / "b.sock", scalars=("acc", "lr")))) == "acc"
    assert loss_name(weighttui.open(moving_log(tmp_path / "c.sock", scalars=()))) is None
    assert meta_text({"lr": 0.00012345678, "opt": "adam", "layers": [1, 2], "cfg": {"x": 1}}) == "lr=0.0001235 opt=adam"
    assert meta_text(None) == ""
    long = meta_text({f"k{i}": i for i in range(30)}, width=20)
    assert len(long) == 20 and long.endswith("…")


# -------------------------------------------------------------- comparison


def test_align_puts_runs_on_the_union_of_steps():
    a = (np.array([0, 10, 20]), np.array([1.0, 2.0, 3.0]))
    b = (np.array([0, 20, 40]), np.array([5.0, 6.0, 7.0]))
    c = (np.zeros(0, dtype=np.int64), np.zeros(0))
    al = align([a, b, c])
    assert al.steps.tolist() == [0, 10, 20, 40]
    np.testing.assert_array_equal(al.values[0], [1.0, 2.0, 3.0, np.nan])
    np.testing.assert_array_equal(al.values[1], [5.0, np.nan, 6.0, 7.0])
    assert np.isnan(al.values[2]).all()
    assert align([a, b]).common_step == 20  # the last step both reached
    assert al.common_step is None  # run c has nothing
    np.testing.assert_array_equal(align([a, b]).at(20), [3.0, 6.0])
    assert np.isnan(align([a, b]).at(10)[1]) and np.isnan(align([a, b]).at(15)).all()
    assert np.isnan(align([a, b]).at(None)).all()
    steps, latest = al.latest()
    assert steps.tolist() == [20, 40, -1]
    np.testing.assert_array_equal(latest, [3.0, 7.0, np.nan])
    assert align([]).steps.size == 0


def test_align_keeps_the_last_value_of_a_repeated_step():
    al = align([(np.array([0, 10, 10, 20]), np.array([1.0, 2.0, 2.5, 3.0]))])
    assert al.steps.tolist() == [0, 10, 20]
    np.testing.assert_array_equal(al.values[0], [1.0, 2.5, 3.0])


def test_align_ignores_nan_for_the_common_step_but_shows_it_as_the_latest():
    """A run whose value went NaN at its last step: its latest value is that NaN (issue 18: NaN shown as
    such everywhere), not the last finite one; the common step compares finite values only."""
    al = align([(np.array([0, 10]), np.array([1.0, np.nan])), (np.array([0, 10]), np.array([2.0, 4.0]))])
    assert al.common_step == 0
    steps, latest = al.latest()
    assert steps.tolist() == [10, 10] and np.isnan(latest[0]) and latest[1] == 4.0


def test_compare_lines_up_a_tensor_statistic_across_real_runs(tmp_path):
    lrs = (0.001, 0.01, 0.1)
    runs = [weighttui.open(moving_log(tmp_path / f"lr{lr}.sock", lr=lr, steps=8)) for lr in lrs]
    ratio = Metric("update ratio", "delta", "ratio", log=True)
    al = compare(runs, "a.weight", ratio)
    assert al.values.shape == (3, 8)
    for i, data in enumerate(runs):
        steps, vals = data.series("a.weight", "ratio", kind="delta")
        np.testing.assert_array_equal(al.values[i, np.searchsorted(al.steps, steps)], vals)
    _, latest = al.latest()
    assert latest[0] < latest[1] < latest[2]  # a larger learning rate moves the weights more
    loss = compare(runs, None, Metric("loss", "scalar", "loss"))
    np.testing.assert_allclose(loss.values[2], 1.0 / (1 + 0.1 * np.arange(8)))
    # a run without the tensor (another model) gives an empty series, not an error
    assert metric_series(runs[0], "no.such", ratio)[0].size == 0
    assert metric_series(runs[0], "a.weight", Metric("val", "scalar", "val"))[0].size == 0


def test_metrics_and_common_tensors(tmp_path):
    a = weighttui.open(moving_log(tmp_path / "a.sock", names=("enc.weight", "enc.bias", "head.weight"),
                                 scalars=("accuracy", "loss")))
    b = weighttui.open(moving_log(tmp_path / "b.sock", names=("head.weight", "enc.weight"),
                                 scalars=("val_loss",)))
    labels = [m.label for m in metrics([a, b])]
    assert labels[: len(TENSOR_METRICS)] == [m.label for m in TENSOR_METRICS]
    assert labels[len(TENSOR_METRICS):] == ["loss", "val_loss", "accuracy"]
    assert common_tensors([a, b]) == ["enc.weight", "head.weight"]  # the first run's order
    c = weighttui.open(moving_log(tmp_path / "c.sock", names=("other.weight",)))
    assert common_tensors([b, c]) == ["head.weight", "enc.weight", "other.weight"]  # nothing shared: union
    assert common_tensors([a, RunData(tmp_path / "nothing.sock")]) == a.tensor_names
    assert common_tensors([]) == []


def test_metrics_leave_out_kinds_no_run_has(tmp_path):
    rec = Recorder(tmp_path / "w.sock", delta="off")
    for s in range(3):
        rec.snapshot(s, {"w": np.ones(4, dtype=np.float32) * s})
    rec.close()
    labels = [m.label for m in metrics([weighttui.open(tmp_path / "w.sock")])]
    assert labels == ["weights norm", "weights std"]


def test_filter_names_substring_and_glob():
    names = ["enc.layers.0.weight", "enc.layers.1.bias", "head.weight"]
    assert filter_names(names, "") == names
    assert filter_names(names, "BIAS") == ["enc.layers.1.bias"]
    assert filter_names(names, "*.weight") == ["enc.layers.0.weight", "head.weight"]
    assert filter_names(names, "enc.layers.[1]*") == ["enc.layers.1.bias"]


def test_directory_watch_forgets_deleted_non_logs(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 20)
    watch = DirectoryWatch(tmp_path)
    assert [p for p, _ in watch.scan().ignored] == [str(tmp_path / "a.txt")]
    os.remove(tmp_path / "a.txt")
    watch.scan()
    assert watch.ignored == {}


# ---------------------------------------------------------------------- CLI


@pytest.fixture
def launched(monkeypatch):
    """What `weighttui watch/replay` started: the multi-run app or the single-run one."""
    calls = []
    monkeypatch.setattr("weighttui.tui.multi_app.run_multi_app",
                        lambda paths, **kw: calls.append(("multi", list(paths), kw)) or 0)
    monkeypatch.setattr("weighttui.tui.app.run_app", lambda path, **kw: calls.append(("single", path, kw)) or 0)
    return calls


def test_cli_several_paths_or_a_directory_open_the_multi_run_app(tmp_path, launched, capsys):
    from weighttui.cli import main

    a = moving_log(tmp_path / "a.sock")
    b = moving_log(tmp_path / "b.sock")
    assert main(["watch", a, b]) == 0
    assert launched[-1] == ("multi", [a, b], {"directory": None, "mode": "watch", "max_rows": 1024,
                                              "diagnose_config": None})
    assert main(["replay", str(tmp_path)]) == 0
    assert launched[-1] == ("multi", [], {"directory": str(tmp_path), "mode": "replay", "max_rows": 1024,
                                          "diagnose_config": None})
    assert main(["watch", a, str(tmp_path), "--max-rows", "100"]) == 0
    assert launched[-1] == ("multi", [a], {"directory": str(tmp_path), "mode": "watch", "max_rows": 100,
                                           "diagnose_config": None})
    assert main(["watch", a]) == 0  # one file: the single-run viewer as before
    assert launched[-1] == ("single", a, {"mode": "watch", "max_rows": 2048})
    assert main(["watch", a, str(tmp_path / "later.sock")]) == 0  # watch waits for a log to appear
    assert launched[-1][1] == [a, str(tmp_path / "later.sock")]
    n = len(launched)

    # Bad input: exit 2 with one line, nothing started.
    assert main(["replay", a, str(tmp_path / "missing.sock")]) == 2
    assert "no such run log" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello, not a log")
    assert main(["watch", a, str(tmp_path / "notes.txt")]) == 2
    assert "not a weighttui run log" in capsys.readouterr().err
    assert main(["watch", a, "user@host:/runs/b.sock"]) == 2
    assert "remote logs are watched one at a time" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    assert main(["watch", str(tmp_path), str(other)]) == 2
    assert "at most one directory" in capsys.readouterr().err
    assert len(launched) == n


def test_release_views_drops_the_matrices_and_rebuilds_the_same(tmp_path):
    """The multi-run app drops a run's dense matrices after its alerts; asking again gives the same values."""
    from weighttui.analysis.diagnose import diagnose

    path = moving_log(tmp_path / "a.sock")
    data = weighttui.open(path, max_rows=8)
    before = {(k, s): data.stat_matrix(k, s).copy() for k in ("weights", "delta") if data.has_kind(k)
              for s in data.columns(k)}
    present = data.present.copy()
    alerts = diagnose(data)
    data.release_views()
    assert not data._dense  # nothing kept for this run
    for (k, s), m in before.items():
        np.testing.assert_array_equal(data.stat_matrix(k, s), m)
    np.testing.assert_array_equal(data.present, present)
    assert diagnose(data) == alerts
