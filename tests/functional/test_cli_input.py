"""The command line's contract with its user: bad input is one line and exit 2, a bug is a
traceback; the help teaches every command; exports are safe with any name a log holds,
keep the log's permissions, and write JSON that strict parsers accept."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import types
import urllib.parse
import zipfile

import numpy as np
import pytest

import weighttui
from weighttui import cli
from weighttui.record.recorder import Recorder

HOSTILE_NAMES = ["file", "allow_pickle", "../../evil", "/abs/path", "a%2Fb", "dense/kernel", "..", "c:\\win"]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "weighttui.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "run.wtui"
    rec = Recorder(path, every=1, full_every=2, bins=8)
    rng = np.random.default_rng(0)
    for step in range(4):
        tensors = {n: rng.normal(size=(3, 2)).astype(np.float32) for n in HOSTILE_NAMES}
        tensors["dead"] = np.full(4, np.nan if step else 1.0, np.float32)
        rec.snapshot(step, tensors, scalars={"loss": 1.0 / (step + 1)})
    rec.close()
    os.chmod(path, 0o600)
    return path


# ------------------------------------------------------------ errors


@pytest.mark.parametrize("args", [
    ["info", "{log}", "--threshold", "nope=1"],
    ["info", "{log}", "--threshold", "ratio_high=abc"],
    ["watch", "{log}", "--threshold", "nope=1"],
    ["watch", "{log}", "{log}", "--threshold", "nope=1"],  # several runs: the same check
    ["export", "{log}", "--format", "npz", "--out", "-"],
    ["export", "{log}", "--format", "npz", "--step", "3", "--out", "{tmp}/w.npz"],  # no values at step 3
    ["export", "{log}", "--format", "csv", "--step", "2", "--out", "{tmp}/w.csv"],
    ["export", "{log}", "--format", "json", "--kind", "grad", "--out", "-"],
    ["info", "box:"],
    ["watch", "--max-rows", "1", "{log}"],
    ["info", "{tmp}/missing.wtui"],
    ["export", "{log}", "--format", "csv", "--out", "{tmp}/no/such/dir/x.csv"],
    ["import", "{tmp}", "--out", "{tmp}"],
])
def test_bad_input_is_one_line_and_exit_2(log, tmp_path, args):
    res = run_cli(*[a.format(log=log, tmp=tmp_path) for a in args])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("usage:"), res.stderr
    assert "Traceback" not in res.stderr


def test_a_bug_keeps_its_traceback(log, monkeypatch):
    """A ValueError or KeyError from inside a command is a bug, not bad input: it is not swallowed."""
    from weighttui.cli import export

    def broken(*a, **k):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(export, "export", broken)
    with pytest.raises(ValueError, match="an internal mistake"):
        cli.main(["export", str(log), "--format", "csv", "--out", "-"])
    monkeypatch.setattr(export, "export", lambda *a, **k: {}["missing"])
    with pytest.raises(KeyError):
        cli.main(["export", str(log), "--format", "csv", "--out", "-"])


def test_a_bug_exits_non_zero_with_a_traceback(log, tmp_path):
    code = ("import sys; from weighttui.cli import main, export; "
            "export.export = lambda *a, **k: {}['bug']; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "export", str(log), "--format", "csv", "--out", "-"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode not in (0, 2) and "Traceback" in res.stderr and "KeyError" in res.stderr


# -------------------------------------------------------------- help


def test_top_level_help_teaches_every_command():
    res = run_cli("--help")
    assert res.returncode == 0
    sub = next(a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"  weighttui {name} " in res.stdout, name  # one example each


def test_bare_command_shows_the_examples_and_exits_2():
    res = run_cli()
    assert res.returncode == 2 and "weighttui watch run.sock" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["watch", "replay"])
def test_view_help_mentions_remote_and_thresholds(command):
    out = run_cli(command, "--help").stdout
    assert "host:path" in out and "ssh://" in out
    assert "--threshold" in out and "docs/alerts.md" in out
    assert f"weighttui {command} gpu-box:runs/run.sock" in out


def test_watch_passes_thresholds_to_the_app(log, monkeypatch):
    seen = {}

    def fake_run_app(path, mode="watch", title=None, max_rows=2048, diagnose_config=None):
        seen.update(path=path, config=diagnose_config)
        return 0

    monkeypatch.setitem(sys.modules, "weighttui.tui.app", types.SimpleNamespace(run_app=fake_run_app))
    assert cli.main(["watch", str(log), "--threshold", "ratio_high=0.05"]) == 0
    assert seen["config"].ratio_high == 0.05
    assert cli.main(["replay", str(log)]) == 0 and seen["config"] is None


def test_watch_of_several_runs_takes_the_same_thresholds(log, tmp_path, monkeypatch):
    seen = {}

    def fake_run_multi_app(files, directory=None, mode="watch", title=None, max_rows=1024, diagnose_config=None):
        seen.update(files=files, directory=directory, config=diagnose_config)
        return 0

    monkeypatch.setitem(sys.modules, "weighttui.tui.multi_app",
                        types.SimpleNamespace(run_multi_app=fake_run_multi_app))
    assert cli.main(["watch", str(log), str(log), "--threshold", "ratio_high=0.05",
                     "--threshold", "disable=dead_units"]) == 0
    assert seen["config"].ratio_high == 0.05 and seen["config"].disable == "dead_units"
    assert cli.main(["replay", str(tmp_path)]) == 0 and seen["directory"] == str(tmp_path)
    assert seen["config"] is None


# ------------------------------------------------------------ exports


def test_tensorboard_missing_is_one_line_naming_the_extra(log, tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None; "  # as if it were not installed
            "from weighttui.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "export", str(log), "--format", "tensorboard",
                          "--out", str(tmp_path / "tb")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "pip install 'weighttui[tensorboard]'" in err


def test_exported_statistic_names_are_not_missing_value_markers(log, tmp_path):
    assert run_cli("export", log, "--format", "csv", "--out", tmp_path / "s.csv").returncode == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    stats = {r["stat"] for r in rows}
    assert {"nan_count", "inf_count"} <= stats and not stats & {"nan", "inf", "NaN", "NA", "null", ""}
    dead = [r for r in rows if r["tensor"] == "dead" and r["stat"] == "nan_count"]
    assert [float(r["value"]) for r in dead] == [0.0, 4.0, 4.0, 4.0]
    assert run_cli("export", log, "--format", "json", "--out", tmp_path / "s.json").returncode == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert "nan_count" in doc["stats"]["weights"] and "nan" not in doc["stats"]["weights"]
    assert run_cli("export", log, "--format", "npz", "--out", tmp_path / "s.npz").returncode == 0
    with np.load(tmp_path / "s.npz") as z:
        assert "weights.nan_count" in z.files and "weights.nan" not in z.files


def test_weights_npz_keeps_every_name_and_stays_inside_the_target(log, tmp_path):
    out = tmp_path / "w.npz"
    res = run_cli("export", log, "--format", "npz", "--step", "2", "--out", out)
    assert res.returncode == 0, res.stderr
    expected = weighttui.open(log).weights(step=2)
    with zipfile.ZipFile(out) as zf:
        for member in zf.namelist():
            parts = member.split("/")
            assert not member.startswith("/") and ".." not in parts and "\\" not in member, member
    with np.load(out) as z:
        got = {urllib.parse.unquote(k): z[k] for k in z.files}
    assert set(got) == set(expected)  # `file` and `allow_pickle` too
    for name, arr in expected.items():
        np.testing.assert_array_equal(got[name], arr)
    assert "dense/kernel" in np.load(out).files  # plain names stay as they are


@pytest.mark.parametrize("args, made", [
    (["--format", "csv", "--out", "{tmp}/o.csv"], "o.csv"),
    (["--format", "json", "--out", "{tmp}/o.json"], "o.json"),
    (["--format", "npz", "--out", "{tmp}/o.npz"], "o.npz"),
    (["--format", "changes", "--out", "{tmp}/o.csv"], "o.csv"),
    (["--format", "npz", "--step", "2", "--out", "{tmp}/o.npz"], "o.npz"),
    (["--format", "json", "--epoch", "0", "--out", "{tmp}/o.json"], None),  # no epochs: bad input
    (["--format", "json", "--step", "2", "--out", "{tmp}/o.json"], "o.json"),
    (["--format", "tensorboard", "--out", "{tmp}/tb"], "tb"),
    (["--format", "parquet", "--out", "{tmp}/o.parquet"], "o.parquet"),
])
def test_exports_get_the_logs_mode(log, tmp_path, args, made):
    pytest.importorskip("tensorboard") if "tensorboard" in args else None
    pytest.importorskip("pyarrow") if "parquet" in args else None
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if made and made != "tb":
        (out_dir / made).write_text("old")  # an existing 0644 file is not left wider than the log
        os.chmod(out_dir / made, 0o644)
    res = run_cli("export", log, *[a.format(tmp=out_dir) for a in args])
    if made is None:
        assert res.returncode == 2
        return
    assert res.returncode == 0, res.stderr
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_weights_json_is_strict_json(log, tmp_path):
    out = tmp_path / "w.json"
    assert run_cli("export", log, "--format", "json", "--step", "2", "--out", out).returncode == 0
    doc = json.loads(out.read_text(), parse_constant=_reject)
    assert doc["dead"] == [None] * 4


def _reject(token):
    raise ValueError(f"not JSON: {token}")


def test_info_json_is_strict_json(log):
    res = run_cli("info", log, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout, parse_constant=_reject)  # no NaN / Infinity tokens
    dead = next(t for t in doc["tensor_list"] if t["name"] == "dead")
    assert dead["nan"] == 4
