"""Complete values as a reader gives them back: an eleventh-session audit of `RunData.weights` and
`export --step/--epoch` (issues 2, 14 and 18). Each test is a case the audit found.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import weighttui
from weighttui.cli.main import main
from weighttui.data.run import LogReplaced
from weighttui.data.tidy import to_frame as tidy_frame


def _record(path, seed: float, steps: int = 4) -> dict:
    """A run whose complete values at each step are `seed + step`; returns them by step."""
    out = {}
    with weighttui.Recorder(path, full_every=1) as rec:
        for step in range(steps):
            w = np.full((8, 8), seed + step, dtype=np.float32)
            rec.snapshot(step, {"w": w})
            out[step] = w
    return out


@pytest.mark.parametrize("how", ["rewritten", "renamed"])
def test_weights_of_a_log_replaced_since_it_was_read_are_refused(tmp_path, how):
    """A RunData kept open while the training script ran again on the same path read the new run's values
    at the old run's offsets and gave them back as its own (the same script writes the same layout)."""
    path = tmp_path / "run.wtui"
    first = _record(path, 1.0)
    run = weighttui.open(path, cache=False)
    assert np.array_equal(run.weights(step=2)["w"], first[2])
    if how == "rewritten":
        _record(path, 500.0)  # mode="w": the same file, truncated and written again
    else:
        _record(tmp_path / "new.wtui", 500.0)
        os.replace(tmp_path / "new.wtui", path)
    with pytest.raises(LogReplaced, match="replaced or truncated since it was read"):
        run.weights(step=2)
    with pytest.raises(KeyError):  # (what callers of weights() already catch)
        run.weights(step=2)
    assert run.series("w", "mean")[1][2] == 3.0  # what it read stays this run's
    fresh = weighttui.open(path, cache=False)
    assert fresh.weights(step=2)["w"][0, 0] == 502.0


def test_values_stored_twice_at_one_step_read_as_the_last(tmp_path, capsys):
    """Two full snapshots at one step merged into one tensor of double coverage: weights() gave {} with a
    false "the writer stopped between chunks", and export wrote an empty file and exited 0."""
    path = tmp_path / "dup.wtui"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    with weighttui.Recorder(path, full_every=1) as rec:
        rec.snapshot(4, {"w": a - 1})
        rec.snapshot(5, {"w": a})
        rec.snapshot(5, {"w": a + 100})
    run = weighttui.open(path, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(run.weights(step=5)["w"], a + 100)
        assert np.array_equal(run.weights(step=4)["w"], a - 1)
    out = tmp_path / "w5.npz"
    assert main(["export", str(path), "--format", "npz", "--step", "5", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out)["w"], a + 100)


def test_an_export_of_no_readable_values_fails(tmp_path):
    """Every tensor's values at the step unreadable (their frame damaged after the log was read): an error,
    not an empty file reported as written."""
    from weighttui.cli import export
    from weighttui.cli.errors import CliError

    path = tmp_path / "torn.wtui"
    with weighttui.Recorder(path, full_every=1) as rec:
        rec.snapshot(0, {"w": np.ones((64, 1024), np.float32)})  # 256 KiB: step 1's frame lies past the
        rec.snapshot(1, {"w": np.ones((64, 1024), np.float32)})  # bytes a reader checks its file by
    run = weighttui.open(path, cache=False)
    (_tid, chunks), = run._run.values[1].items()
    with open(path, "r+b") as fh:  # step 1's values frame damaged in place: its CRC fails
        fh.seek(chunks[0][0] + 40)
        byte = fh.read(1)
        fh.seek(chunks[0][0] + 40)
        fh.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "w.npz"
    with pytest.warns(UserWarning, match="incomplete values at step 1"), \
            pytest.raises(CliError, match="nothing exported"):
        export.export(run, fmt="npz", out=str(out), step=1, epoch=None, kinds=None, marks=None)
    assert not out.exists()


def test_weights_at_an_epoch_are_never_from_inside_it(tmp_path, capsys):
    """full_every=5 with 10 steps an epoch stored values at steps 0 and 5 of epoch 0; weights(epoch=0) gave
    step 5's, half-way through the epoch, as "the weights at epoch 0" (docs/core.md: when it has ended)."""
    path = tmp_path / "fe.wtui"
    w = np.zeros(3, np.float32)
    with weighttui.Recorder(path, full_every=5) as rec:
        for step in range(20):
            w += 1
            rec.snapshot(step, {"w": w}, epoch=step // 10)
    run = weighttui.open(path, cache=False)
    assert run.full_steps == [0, 5, 10, 15]
    with pytest.raises(KeyError, match="no complete values at the end of epoch 0.*step 5.*went on to step 9"):
        run.weights(epoch=0)
    assert np.array_equal(run.weights(step=5)["w"], np.full(3, 6.0))
    code = main(["export", str(path), "--format", "json", "--epoch", "0", "--out", str(tmp_path / "e.json")])
    assert code == 2 and "end of epoch 0" in capsys.readouterr().err
    # full_epochs stores the end: the same loop asked for epoch 0's values
    path2 = tmp_path / "fe2.wtui"
    w[:] = 0
    with weighttui.Recorder(path2, full_epochs=[0]) as rec:
        for step in range(20):
            w += 1
            rec.snapshot(step, {"w": w}, epoch=step // 10)
    assert np.array_equal(weighttui.open(path2, cache=False).weights(epoch=0)["w"], np.full(3, 10.0))


def test_no_values_says_why_full_epochs_stored_nothing(tmp_path):
    """The reader's "record with full_every or full_epochs" was wrong for a run that did pass full_epochs:
    the reason the recorder gave at close is what the reader says."""
    path = tmp_path / "unfired.wtui"
    with weighttui.Recorder(path, full_epochs=[3]) as rec:
        for step in range(4):
            rec.snapshot(step, {"w": np.ones(3, np.float32)}, epoch=0)
    with pytest.raises(KeyError) as caught:
        weighttui.open(path, cache=False).weights(epoch=3)
    message = str(caught.value)
    assert "full_epochs=[3] stored nothing" in message and "full_every or full_epochs" not in message


def test_the_demo_keeps_the_weights_at_the_end_of_every_fifth_epoch(tmp_path):
    """The demo's `weights(epoch=10)` was the first snapshot of epoch 10 (full_every, before the update)."""
    path = tmp_path / "demo.wtui"
    subprocess.run([sys.executable, "-m", "weighttui.cli.demo", str(path), "--steps", "200", "--delay", "0",
                    "--every", "1", "--quiet"], check=True, timeout=180)
    run = weighttui.open(path, cache=False)
    steps_per_epoch = 16  # 2048 points, batches of 128
    assert run.full_steps == [steps_per_epoch * (e + 1) - 1 for e in (0, 5, 10)]
    assert [run.values_epoch(s) for s in run.full_steps] == [0, 5, 10]
    steps, epochs, _t = run.snapshot_meta()
    for s in run.full_steps:  # the last snapshot of its epoch
        assert steps[epochs == run.values_epoch(s)].max() == s
    run.weights(epoch=10)


def _tidy(frame):
    """Rows of a tidy table as a sorted list of tuples (NaN compared as a string)."""
    rows = []
    for step, tensor, kind, stat, value in zip(frame["step"], frame["tensor"], frame["kind"], frame["stat"],
                                               frame["value"], strict=True):
        tensor = "" if not isinstance(tensor, str) else tensor
        rows.append((int(step), tensor, str(kind), str(stat), repr(float(value))))
    return sorted(rows)


@pytest.mark.parametrize("kinds", [None, ["weights"]])
def test_every_tidy_table_is_the_same_table(tmp_path, kinds):
    """to_frame() lacked the nan_origin row that csv and parquet have, and with --kind parquet dropped the
    scalars that csv keeps (data/tidy.py: "RunData.to_frame() returns the same table")."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "tidy.wtui"
    with weighttui.Recorder(path) as rec:
        for step in range(4):
            x = np.ones(4, np.float32) * step
            if step == 2:
                x[1] = np.nan
            rec.snapshot(step, {"x": x}, scalars={"loss": 1.0 / (step + 1)})
    run = weighttui.open(path, cache=False)
    kind_args = [] if kinds is None else ["--kind", *kinds]
    for fmt in ("csv", "parquet"):
        assert main(["export", str(path), "--format", fmt, *kind_args, "--out", str(tmp_path / f"t.{fmt}")]) == 0
    csv_rows = _tidy(pd.read_csv(tmp_path / "t.csv", keep_default_na=False, na_values=[]).replace("", None))
    parquet_rows = _tidy(pd.read_parquet(tmp_path / "t.parquet"))
    frame = run.to_frame() if kinds is None else tidy_frame(run, kinds)
    assert _tidy(frame) == parquet_rows == csv_rows
    assert ("nan_origin" in {r[2] for r in parquet_rows}) and ("scalar" in {r[2] for r in parquet_rows})


def test_a_reshaped_tensor_keeps_its_history_in_every_export(tmp_path):
    """A tensor reshaped mid-run: csv, json and npz kept only the latest declaration's rows (parquet, to_frame
    and series() read across both, as docs/core.md says every reader does)."""
    path = tmp_path / "reshape.wtui"
    with weighttui.Recorder(path) as rec:
        for step in range(10):
            w = np.full((3, 4), float(step), np.float32) if step < 5 else np.full(5, 100.0 + step, np.float32)
            rec.snapshot(step, {"w": w})
    run = weighttui.open(path, cache=False)
    want = run.series("w", "mean")[1].tolist()
    assert want == [0.0, 1.0, 2.0, 3.0, 4.0, 105.0, 106.0, 107.0, 108.0, 109.0]
    for fmt in ("csv", "json", "npz"):
        assert main(["export", str(path), "--format", fmt, "--out", str(tmp_path / f"s.{fmt}")]) == 0
    with open(tmp_path / "s.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["tensor"] == "w" and r["kind"] == "weights" and r["stat"] == "mean"]
    assert [float(r["value"]) for r in rows] == want
    doc = json.loads((tmp_path / "s.json").read_text())
    j = [t["name"] for t in doc["tensors"]].index("w")
    assert [row[j] for row in doc["stats"]["weights"]["mean"]] == want
    npz = np.load(tmp_path / "s.npz")
    assert npz["weights.mean"][:, list(npz["tensors"]).index("w")].tolist() == want
