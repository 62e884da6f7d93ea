"""`weighttui info / export / demo --no-tui` as a user runs them, in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weighttui
from weighttui.log.format import HEADER

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def cli(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.wtui"
    subprocess.run([sys.executable, "-m", "weighttui.cli.demo", str(path), "--steps", "200", "--delay", "0",
                    "--quiet"], check=True, timeout=120)
    return path


def test_info_reports_damage_of_independent_examples():
    out = cli("info", DATA / "bitflip_payload.wtui").stdout
    assert "1 corrupt record(s) skipped, first at byte 23710" in out
    assert "status: finished" in out
    out = cli("info", DATA / "torn_tail.wtui").stdout
    assert "incomplete final record, 25 bytes ignored" in out
    out = cli("info", DATA / "unknown_type.wtui").stdout
    assert "1 record(s) of a type this version does not know were skipped" in out


def test_info_json_is_machine_readable(demo_log):
    doc = json.loads(cli("info", demo_log, "--json").stdout)
    run = weighttui.open(demo_log)
    assert doc["steps"] == doc["snapshots"] == run.snapshot_count == 40
    assert doc["tensors"] == 8 and doc["corruptions"] == [] and doc["torn_tail"] == 0
    assert doc["last_step"] == 195 and doc["status"] == "finished"
    assert [t["name"] for t in doc["tensor_list"]] == run.tensor_names
    assert doc["kinds"] == ["weights", "delta", "grad"]
    assert doc["full_values_steps"] == run.full_steps
    norm = run.series("layers.0.weight", "norm")[1][-1]
    assert doc["tensor_list"][0]["norm"] == pytest.approx(norm)
    ratio = run.series("layers.0.weight", "ratio", "delta")[1][-1]
    assert doc["tensor_list"][0]["update_ratio"] == pytest.approx(ratio)
    assert doc["tensor_list"][0]["update_ratio_per_step"] == pytest.approx(ratio / 5)  # every=5


def test_info_json_reports_damage():
    doc = json.loads(cli("info", DATA / "bitflip_payload.wtui", "--json").stdout)
    assert doc["corruptions"] == [23710] and doc["torn_tail"] == 0
    doc = json.loads(cli("info", DATA / "torn_tail.wtui", "--json").stdout)
    assert doc["torn_tail"] == 25


@pytest.mark.parametrize("content,message", [
    (None, "no such run log"),
    (b"PK\x03\x04 a zip file, say", "not a weighttui run log"),
    (HEADER[:8] + struct.pack("<HH", 7, 0), "newer weighttui: format 7"),
])
@pytest.mark.parametrize("command", ["info", "replay", "export"])
def test_bad_input_exits_2_with_one_line(tmp_path, content, message, command):
    path = tmp_path / "x.wtui"
    if content is not None:
        path.write_bytes(content)
    extra = ["--format", "csv", "--out", tmp_path / "o.csv"] if command == "export" else []
    proc = cli(command, path, *extra, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_export_csv_holds_every_statistic(demo_log, tmp_path):
    out = tmp_path / "stats.csv"
    cli("export", demo_log, "--format", "csv", "--out", out)
    run = weighttui.open(demo_log)
    rows = list(csv.DictReader(out.open()))
    per_snapshot = sum(len(run.columns(k)) for k in ("weights", "delta", "grad")) * len(run.tensor_names)
    # delta is not covered at the first snapshot
    expected = per_snapshot * run.n - len(run.columns("delta")) * len(run.tensor_names)
    stat_rows = [r for r in rows if r["kind"] != "scalar"]
    assert len(stat_rows) == expected
    last = [r for r in stat_rows if r["step"] == "195" and r["tensor"] == "layers.1.weight"
            and r["kind"] == "grad" and r["stat"] == "std"]
    assert float(last[0]["value"]) == run.series("layers.1.weight", "std", "grad")[1][-1]
    assert {r["stat"] for r in rows if r["kind"] == "scalar"} == {"loss", "accuracy", "lr"}


def test_export_npz_and_json_statistics(demo_log, tmp_path):
    cli("export", demo_log, "--format", "npz", "--out", tmp_path / "s.npz", "--kind", "weights")
    arrays = np.load(tmp_path / "s.npz")
    run = weighttui.open(demo_log)
    np.testing.assert_array_equal(arrays["weights.norm"], run.stat_matrix("weights", "norm"))
    assert "grad.norm" not in arrays
    cli("export", demo_log, "--format", "json", "--out", tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["steps"] == run.steps.tolist()
    assert doc["stats"]["delta"]["ratio"][0] == [None] * len(run.tensor_names)  # NaN -> null


def test_export_weights_at_an_epoch_round_trips(demo_log, tmp_path):
    run = weighttui.open(demo_log)
    epoch = run.values_epoch(run.full_steps[-1])
    cli("export", demo_log, "--format", "npz", "--epoch", epoch, "--out", tmp_path / "w.npz")
    got = np.load(tmp_path / "w.npz")
    want = run.weights(epoch=epoch)
    assert set(got.files) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    proc = cli("export", demo_log, "--format", "npz", "--epoch", 9999, "--out", tmp_path / "n.npz", check=False)
    assert proc.returncode == 2 and "they exist for epochs" in proc.stderr


def test_demo_without_the_app_trains_and_summarises(tmp_path):
    path = tmp_path / "d.wtui"
    proc = cli("demo", "--no-tui", "--steps", "120", "--delay", "0", "--path", path, timeout=180)
    assert "status: finished" in proc.stdout
    run = weighttui.open(path)
    assert run.snapshot_count == 24 and run.status == "finished"
    loss = run.scalars("loss")[1]
    assert loss[-10:].mean() < loss[:10].mean()  # it really trains


def test_info_escapes_control_characters_from_the_log(tmp_path):
    path = tmp_path / "hostile.wtui"
    with weighttui.Recorder(path) as rec:
        rec.snapshot(0, {"evil\x1b]0;owned\x07\x1b[2J": np.ones(2)})
    out = cli("info", path).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b]0;owned\\x07" in out
    assert "\\x0a" not in out and "\n  1 tensors" in out  # its own line breaks stay


@pytest.mark.parametrize("preset", [None, "2"])
def test_commands_run_numpy_with_one_blas_thread_unless_told(preset, tmp_path):
    # OpenBLAS spins a thread per core from numpy's import on; no command needs it, and the demo's
    # trainer (a child) inherits the setting. A value the user chose is kept.
    script = ("import os, sys\nfrom weighttui.cli.main import main\n"
              f"rc = main(['info', {str(DATA / 'bitflip_payload.wtui')!r}])\n"
              "print('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert f"BLAS {preset or '1'}" in proc.stderr, proc.stderr
