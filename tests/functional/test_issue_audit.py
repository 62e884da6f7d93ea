"""Black-box audit of issues 14-17 as a user meets them: the CLI, `weighttui.open()`, real files.

Each test is a gap the audit found (fixed here, or xfail naming its owner and the cause).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import weighttui
from weighttui.cli.main import main


def _cli(capsys, *args) -> tuple[int, str, str]:
    """`weighttui ARGS` in this process (the same main() the console script calls)."""
    code = main(list(args))
    got = capsys.readouterr()
    return code, got.out, got.err


def _instrumented_log(path, *, snapshots: int = 25) -> dict:
    """A numpy Recorder run with every instrument on: one unit whose gradient row is always zero
    (dead), one whose weights are 100x the others' (exploding), Adam-like optimizer state."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((128, 64)).astype(np.float32)
    w[7] *= 100.0  # unit 7: exploding
    truth = {"dead": [3], "exploding": [7]}
    with weighttui.Recorder(str(path), every=1, instruments=True) as rec:
        for s in range(snapshots):
            g = rng.standard_normal(w.shape).astype(np.float32)
            g[3] = 0.0  # unit 3: no gradient ever
            m = 0.1 * g
            v = (g * g).astype(np.float32)
            w = w - 0.01 * g
            rec.snapshot(s, {"fc.weight": w}, grads={"fc.weight": g},
                         optim={"fc.weight": {"m": m, "v": v, "lr": 1e-3, "step": s + 1, "beta2": 0.999,
                                              "eps": 1e-8}})
    return truth


# ---------------------------------------------------------------- issue 16: `info` shows every instrument


def test_info_json_has_every_instrument_column(tmp_path, capsys):
    """Issue 16: each instrument "appears in info": alpha (its latest fit, not the NaN of the
    snapshots between fits), the dead and exploding unit counts, the optimizer state's non-finite count."""
    path = tmp_path / "run.wtui"
    _instrumented_log(path)
    run = weighttui.open(str(path))
    steps, alpha = run.series("fc.weight", "alpha")
    fitted = np.flatnonzero(np.isfinite(alpha))
    assert fitted.size >= 2 and fitted[-1] < len(steps) - 1  # the last snapshot is between fits

    code, out, _ = _cli(capsys, "info", str(path), "--json")
    assert code == 0
    row = json.loads(out)["tensor_list"][0]
    for key in ("sigma_max", "stable_rank", "dist_init", "cos_prev", "cos_grad", "sigma_ratio",
                "m_norm", "v_norm", "eff_lr"):
        assert row[key] is not None and np.isfinite(row[key]), key
    assert row["alpha"] == pytest.approx(alpha[fitted[-1]], rel=1e-12)
    assert row["dead_units"] == run.series("fc.weight", "dead_units", kind="grad")[1][-1] == 1
    assert row["exploding_units"] == run.series("fc.weight", "exploding_units")[1][-1] == 1
    assert row["optim_nonfinite"] == 0


def test_info_text_shows_alpha_and_unit_counts(tmp_path, capsys):
    path = tmp_path / "run.wtui"
    _instrumented_log(path)
    code, out, _ = _cli(capsys, "info", str(path))
    assert code == 0
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if "instruments (latest)" in ln)
    cols = lines[head + 1].split()
    assert {"alpha", "dead", "expl."} <= set(cols), lines[head + 1]
    row = lines[head + 2].split()
    assert row[0] == "fc.weight"
    assert row[-2:] == ["1", "1"]  # dead units, exploding units
    assert row[-3] not in ("-", "nan")  # alpha: the latest fit


# ---------------------------------------------------------------- issue 17: imported TensorBoard runs


def _tensorboard_events(directory, *, steps: int) -> None:
    """An event file with a histogram per step, written by tensorboard's own record writer and protos
    (its EventFileWriter and torch's SummaryWriter import TensorFlow for the file: 10-15 s here)."""
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    directory.mkdir()
    with open(directory / "events.out.tfevents.1.audit", "wb") as fh:
        writer = RecordWriter(fh)
        writer.write(Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        x = np.random.default_rng(0).standard_normal(500)
        for s in range(steps):
            v = x + s
            counts, edges = np.histogram(v, bins=30)
            hist = HistogramProto(min=float(v.min()), max=float(v.max()), num=float(v.size), sum=float(v.sum()),
                                  sum_squares=float((v * v).sum()), bucket_limit=edges[1:].tolist(),
                                  bucket=counts.astype(float).tolist())
            writer.write(Event(step=10 * s, wall_time=1.0 + s, summary=Summary(value=[
                Summary.Value(tag="layer/weight", histo=hist),
                Summary.Value(tag="loss", simple_value=1.0 / (s + 1))])).SerializeToString())


def test_info_does_not_call_an_unknown_nan_count_non_finite(tmp_path, capsys):
    """A TensorBoard histogram does not know its NaN/Inf counts (the import stores NaN: unknown);
    `info` must not print `nan non-finite` next to every healthy imported tensor."""
    _tensorboard_events(tmp_path / "tb", steps=3)
    out = tmp_path / "tb.wtui"
    assert _cli(capsys, "import", str(tmp_path / "tb"), "--out", str(out))[0] == 0
    run = weighttui.open(str(out))
    assert np.isnan(run.series("layer/weight", "nan")[1]).all()  # unknown, as docs/import.md says
    code, text, _ = _cli(capsys, "info", str(out))
    assert code == 0
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("layer/weight"))
    assert "non-finite" not in line, line


# ---------------------------------------------------------------- issue 17: import's bad input


@pytest.mark.parametrize("where", ["missing_dir", "is_dir"])
def test_import_out_that_cannot_be_a_log_is_one_line_before_reading(tmp_path, where):
    """--out in a directory that does not exist (or --out naming a directory): one line, exit 2,
    nothing read (not the recorder's "recording stopped, training continues")."""
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(ck / "step_1.safetensors"))
    out = tmp_path / "missing" / "run.wtui" if where == "missing_dir" else tmp_path
    r = subprocess.run([sys.executable, "-m", "weighttui", "import", str(ck), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert "training continues" not in r.stderr
    assert ("no such directory" in lines[0]) if where == "missing_dir" else ("is a directory" in lines[0])


def test_a_checkpoint_given_to_info_says_how_to_import_it(tmp_path, capsys):
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(ck / "epoch_1.safetensors"))
    code, _, err = _cli(capsys, "info", str(ck / "epoch_1.safetensors"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a weighttui run log" in err and "weighttui import" in err
    code, _, err = _cli(capsys, "info", str(ck))
    assert code == 2 and "is a directory" in err and "weighttui import" in err and "weighttui watch" in err


# ---------------------------------------------------------------- help texts name the issues' options


def test_help_texts_name_the_options_the_issues_fix():
    def helptext(*cmd):
        r = subprocess.run([sys.executable, "-m", "weighttui", *cmd, "--help"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return " ".join(r.stdout.split())

    assert "parquet" in helptext()
    assert "checkpoint" in helptext("watch")  # issue 17: `weighttui watch DIR` on a checkpoint directory
    assert "--no-cache" in helptext("info")
    imp = helptext("import")
    assert "--values" in imp and "--no-values" in imp and "--out" in imp
    exp = helptext("export")
    assert "parquet" in exp and "--marks" in exp


# ---------------------------------------------------------------- issue 16: the change table between two steps


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(b.astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64)))


def test_export_changes_between_two_marked_steps_says_how_it_was_derived(tmp_path, capsys):
    """Issue 16 item 2: the distance between two marked steps, from complete values where both
    steps have them, otherwise derived from what the log has, saying which."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    path = tmp_path / "run.wtui"
    with weighttui.Recorder(str(path), every=1, full_every=5) as rec:
        for s in range(11):
            w = w + 0.01 * rng.standard_normal(w.shape).astype(np.float32)
            rec.snapshot(s, {"w": w})
    run = weighttui.open(str(path))
    exact = _change(run.weights(step=0)["w"], run.weights(step=10)["w"])

    def table(*extra):
        out = tmp_path / "changes.csv"
        code, _, err = _cli(capsys, "export", str(path), "--format", "changes", "--out", str(out), *extra)
        assert code == 0, err
        return {r["tensor"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}

    rows = table("--marks", "0", "10")
    assert rows["w"]["change_ab_from"] == "values"
    assert float(rows["w"]["change_ab"]) == pytest.approx(exact, rel=1e-9)
    rows = table("--marks", "3", "9")  # no complete values there: from the sampled elements
    assert rows["w"]["change_ab_from"] == "samples" and np.isfinite(float(rows["w"]["change_ab"]))
    rows = table()
    assert rows["w"]["change_ab_from"] == "" and np.isnan(float(rows["w"]["change_ab"]))
    code, _, err = _cli(capsys, "export", str(path), "--format", "csv", "--marks", "0", "10", "--out",
                        str(tmp_path / "x.csv"))
    assert code == 2 and "--marks" in err
    code, _, err = _cli(capsys, "export", str(path), "--format", "changes", "--marks", "-5", "10", "--out",
                        str(tmp_path / "x.csv"))
    assert code == 2 and "before the run's first snapshot" in err
    # marks past the run's end are its last snapshot: the "no change" says why
    code, _, err = _cli(capsys, "export", str(path), "--format", "changes", "--marks", "100", "200", "--out",
                        str(tmp_path / "x.csv"))
    assert code == 0 and "read as the snapshots at steps 10 and 10: the same snapshot" in err


# ---------------------------------------------------------------- issue 15/16: bfloat16 through the numpy Recorder


def test_numpy_recorder_bfloat16_records_the_instruments(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(2)
    base = rng.standard_normal((32, 16))
    path = tmp_path / "bf16.wtui"
    ws = []
    with weighttui.Recorder(str(path), every=1, instruments=True) as rec:
        for s in range(4):
            w = (base + 0.01 * s * rng.standard_normal(base.shape)).astype(ml_dtypes.bfloat16)
            ws.append(w.astype(np.float64))
            rec.snapshot(s, {"w": w}, grads={"w": rng.standard_normal(base.shape).astype(ml_dtypes.bfloat16)})
    run = weighttui.open(str(path))
    sigma = run.series("w", "sigma_max")[1]
    assert sigma[-1] == pytest.approx(np.linalg.svd(ws[-1], compute_uv=False)[0], rel=1e-3)
    dist = run.series("w", "dist_init")[1]
    assert dist[-1] == pytest.approx(_change(ws[0], ws[-1]), rel=1e-3)
    assert np.isfinite(run.series("w", "cos_grad", kind="delta")[1][1:]).all()
    assert np.isfinite(run.series("w", "dead_units", kind="grad")[1]).all()


def test_python_dash_m_weighttui_is_the_command():
    r = subprocess.run([sys.executable, "-m", "weighttui", "--version"], capture_output=True, text=True,
                       timeout=120, env={**os.environ})
    assert r.returncode == 0 and r.stdout.startswith("weighttui "), r.stderr


def test_weights_of_a_no_values_import_say_why_they_are_missing(tmp_path, capsys):
    """Issue 17: `--no-values` keeps no complete values; asking an export for them says that the
    import left them out (not only "record with full_every"), one line, exit 2."""
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in (1, 2):
        save_file({"w": np.full((3, 3), e, np.float32)}, str(ck / f"epoch_{e}.safetensors"))
    out = tmp_path / "run.wtui"
    assert _cli(capsys, "import", str(ck), "--out", str(out), "--no-values")[0] == 0
    assert weighttui.open(str(out)).full_steps == []
    code, _, err = _cli(capsys, "export", str(out), "--format", "npz", "--epoch", "2", "--out", str(tmp_path / "w.npz"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--no-values" in err, err
    with pytest.raises(KeyError, match="imported with --no-values"):  # and so does open() in a notebook
        weighttui.open(str(out)).weights(epoch=2)
    assert _cli(capsys, "import", str(ck), "--out", str(out))[0] == 0  # --values is the default
    code, _, err = _cli(capsys, "export", str(out), "--format", "npz", "--epoch", "2", "--out", str(tmp_path / "w.npz"))
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "w.npz")["w"], np.full((3, 3), 2, np.float32))


def test_torch_sigma_max_tracks_svd_after_warm_up_under_sgd(tmp_path):
    torch = pytest.importorskip("torch")
    import weighttui.torch as wt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 384), torch.nn.ReLU(), torch.nn.Linear(384, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "sgd.wtui"
    handle = wt.watch(model, str(path), optimizer=opt, every=5, full_every=5, instruments=["sigma"])
    x, y = torch.randn(128, 256), torch.randint(0, 10, (128,))
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    handle.close()
    run = weighttui.open(str(path))
    for name in ("0.weight", "2.weight"):
        steps, sigma = run.series(name, "sigma_max")
        last = run.full_steps[-1]
        exact = np.linalg.svd(run.weights(step=last)[name].astype(np.float64), compute_uv=False)[0]
        assert sigma[list(steps).index(last)] == pytest.approx(exact, rel=1e-3), name


def test_info_says_where_an_imported_runs_steps_and_epochs_came_from(tmp_path, capsys):
    """Issue 17: step and epoch come from metadata, else numbers in names, else order, "said in the
    log's meta"; `info` says it in a line a person reads (and --json keeps the meta as written)."""
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in (2, 10):  # natural order, not 10 before 2
        save_file({"w": np.full((2, 2), e, np.float32)}, str(ck / f"epoch_{e}.safetensors"))
    out = tmp_path / "run.wtui"
    assert _cli(capsys, "import", str(ck), "--out", str(out))[0] == 0
    code, text, _ = _cli(capsys, "info", str(out))
    assert code == 0
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("imported:"))
    assert "2 checkpoints" in line and "complete values kept" in line
    assert "steps from: the epoch (2)" in line and "epochs from: numbers in their names (2)" in line
    code, text, _ = _cli(capsys, "info", str(out), "--json")
    meta = json.loads(text)["run"]["meta"]["import"]
    assert meta["step_from"] == {"epoch": 2} and meta["epoch_from"] == {"name": 2}
    assert list(weighttui.open(str(out)).epochs) == [2, 10]


@pytest.mark.parametrize("first", ["checkpoint", "run_log"])
def test_watch_on_an_empty_directory_waits_for_checkpoints_or_logs(tmp_path, monkeypatch, capsys, first):
    """Issue 17: `weighttui watch DIR` started before the trainer wrote its first checkpoint must
    follow the checkpoints once they come (it used to open the multi-run view of run logs, which
    never shows a checkpoint); a run log appearing instead still opens the multi-run view."""
    import threading

    launched = []
    monkeypatch.setattr("weighttui.cli.importing.watch_checkpoints",
                        lambda directory, **kw: launched.append(("checkpoints", directory)) or 0)
    monkeypatch.setattr("weighttui.tui.multi_app.run_multi_app",
                        lambda files, **kw: launched.append(("runs", kw["directory"])) or 0)

    import weighttui.cli.importing as importing

    looked = threading.Event()  # the watcher has looked at the empty directory once
    real = importing.is_checkpoint_dir
    monkeypatch.setattr(importing, "is_checkpoint_dir", lambda d: (real(d), looked.set())[0])

    def trainer():
        assert looked.wait(60)
        if first == "checkpoint":
            from safetensors.numpy import save_file

            save_file({"w": np.ones((2, 2), np.float32)}, str(tmp_path / "tmp.partial"))
            os.replace(tmp_path / "tmp.partial", tmp_path / "epoch_1.safetensors")
        else:
            with weighttui.Recorder(str(tmp_path / "run.wtui")) as rec:
                rec.snapshot(0, {"w": np.ones((2, 2), np.float32)})

    t = threading.Thread(target=trainer)
    t.start()
    try:
        assert main(["watch", str(tmp_path)]) == 0
    finally:
        t.join()
    assert launched == [("checkpoints" if first == "checkpoint" else "runs", str(tmp_path))]
    assert "waiting for run logs or checkpoints" in capsys.readouterr().err


def test_info_json_gives_the_nan_origin_as_fields(tmp_path, capsys):
    """Issue 16 item 6: the first step, tensor, kind and flat index of the first non-finite element,
    "shown in the alert and info": for scripts as fields, beside the message."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    path = tmp_path / "nan.wtui"
    with weighttui.Recorder(str(path), every=1) as rec:
        for s in range(6):
            m = 0.1 * rng.standard_normal(w.shape).astype(np.float32)
            if s >= 3:
                m.flat[5] = np.inf  # the optimizer state goes first
            if s >= 4:
                w = w.copy()
                w.flat[9] = np.nan
            rec.snapshot(s, {"a": w * 2, "w": w}, grads={"a": w, "w": w},
                         optim={"w": {"m": m, "v": m * m, "lr": 1e-3, "step": s + 1}})
    code, out, _ = _cli(capsys, "info", str(path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["nan_origin_at"] == {"step": 3, "tensor": "w", "kind": "optim", "index": 5}
    assert "optimizer state of w at flat index 5" in doc["nan_origin"]
    assert any(a["rule"] == "nan_origin" and a["tensor"] == "w" and a["step"] == 3 for a in doc["alerts"])


def test_the_viewer_offers_every_instrument_somewhere():
    from weighttui.log.schema import COLUMNS
    from weighttui.tui.screens.detail import INSTRUMENT_CHARTS
    from weighttui.tui.widgets.layer_rows import METRICS

    shown = {(kind, stat) for _key, kind, stat, _label, _log in METRICS}
    shown |= {(kind, stat) for charts in INSTRUMENT_CHARTS.values() for _title, kind, lines, *_ in charts
              for _label, stat, _colour in lines}
    instruments = {("weights", "sigma_max"), ("weights", "stable_rank"), ("weights", "dist_init"),
                   ("weights", "alpha"), ("delta", "cos_prev"), ("delta", "cos_grad"), ("delta", "sigma_ratio"),
                   ("grad", "dead_units"), ("optim", "m_norm"), ("optim", "v_norm"), ("optim", "eff_lr")}
    assert all(stat in COLUMNS[kind] for kind, stat in instruments)  # the names the log has
    assert instruments - shown == set()


def test_run_number_that_the_log_does_not_hold_is_bad_input(tmp_path, capsys):
    """`info`/`export --run N` of a log of two appended runs: N out of range is one line and exit 2 (it was
    an empty summary, "no run yet", and an export of 0 rows, exit 0); `info --run 0` says it shows run 0."""
    path = tmp_path / "app.wtui"
    for r in range(2):
        with weighttui.Recorder(str(path), mode="a", every=1) as rec:
            for s in range(3):
                rec.snapshot(s, {"w": np.full((2, 2), r + s, np.float32)})
    for argv in (["info", str(path), "--run", "2"], ["info", str(path), "--json", "--run", "7"],
                 ["export", str(path), "--format", "parquet", "--run", "2", "--out", str(tmp_path / "x.parquet")],
                 ["export", str(path), "--format", "csv", "--run", "5", "--out", "-"]):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == "" and "--run" in err and "runs 0..1" in err, (argv, err)
    with pytest.raises(SystemExit):  # argparse: negative numbers are refused for export too
        main(["export", str(path), "--format", "csv", "--run", "-1", "--out", "-"])
    assert "must be 0 or more" in capsys.readouterr().err
    code, out, _ = _cli(capsys, "info", str(path), "--run", "0")
    assert code == 0 and "showing run 0" in out
    code, out, _ = _cli(capsys, "info", str(path))
    assert code == 0 and "showing the latest" in out
    # the same from a script: weighttui.open(run=N) says so rather than give an empty run
    from weighttui.data.run import NoSuchRun

    with pytest.raises(NoSuchRun, match=r"run 2: this log holds runs 0\.\.1"):
        weighttui.open(str(path), run=2)
    assert weighttui.open(str(path), run=1).steps.tolist() == [0, 1, 2]


def test_export_no_cache_writes_only_its_output(tmp_path, capsys, monkeypatch):
    """Issue 14: "`weighttui info --no-cache` / `open(..., cache=False)` (or similar) reads without touching
    the disk" - export reads through the same store, so it takes --no-cache too, with the same result."""
    rng = np.random.default_rng(5)
    ws = {f"l{i}": rng.standard_normal((64, 64)).astype(np.float32) for i in range(8)}
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "big.wtui"
    with weighttui.Recorder(str(path), every=1) as rec:
        for s in range(120):  # over the 1 MiB under which no index is made
            ws = {k: v + 0.01 for k, v in ws.items()}
            rec.snapshot(s, ws, grads=ws)
    assert path.stat().st_size > 1 << 20
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "a.csv"
    assert _cli(capsys, "export", str(path), "--format", "csv", "--no-cache", "--out", str(out))[0] == 0
    assert sorted(os.listdir(logs)) == ["big.wtui"] and not (tmp_path / "cache").exists()
    assert _cli(capsys, "export", str(path), "--format", "csv", "--out", str(tmp_path / "b.csv"))[0] == 0
    assert len(os.listdir(logs)) == 2  # the index, beside the log
    assert out.read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_watch_of_tensorboard_events_keeps_the_last_step(tmp_path):
    from weighttui.integrations.importers.follow import CheckpointFollower

    _tensorboard_events(tmp_path / "tb", steps=4)
    out = tmp_path / "live.wtui"
    follower = CheckpointFollower(str(tmp_path / "tb"), str(out), report=lambda m: None)
    follower.poll()
    follower.stop("finished")
    run = weighttui.open(str(out))
    assert list(run.steps) == [0, 10, 20, 30]
    assert list(run.scalars("loss")[0]) == [0, 10, 20, 30]


@pytest.mark.parametrize("bins", ["0", "-5", "4097", "x"])
def test_import_bad_bins_is_a_usage_error_not_a_traceback(tmp_path, capsys, bins):
    from safetensors.numpy import save_file

    save_file({"w": np.ones((3, 3), np.float32)}, str(tmp_path / "epoch_1.safetensors"))
    with pytest.raises(SystemExit) as exit_:
        main(["import", str(tmp_path), "--out", str(tmp_path / "run.wtui"), f"--bins={bins}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--bins" in err and "1..4096" in err and "Traceback" not in err
    assert not (tmp_path / "run.wtui").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["csv", "json", "npz", "parquet"])
def test_export_to_a_full_disk_is_one_line(tmp_path, capsys, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path / "run.wtui"
    with weighttui.Recorder(str(path), every=1) as rec:
        for s in range(3):
            rec.snapshot(s, {"w": np.full((4, 4), s, np.float32)})
    code, _, err = _cli(capsys, "export", str(path), "--format", fmt, "--out", "/dev/full")
    assert code == 1 and err.strip().splitlines() == [
        "weighttui: export to /dev/full failed: [Errno 28] No space left on device"], err


def test_info_text_shows_the_instrument_columns_the_log_has(tmp_path, capsys):
    """The default instrument set (optimizer state, units) gives a table of those columns, not ten
    columns of `-` for the spectral norms and cosines it did not record; |m| and |v| are shown too."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    path = tmp_path / "default.wtui"
    with weighttui.Recorder(str(path), every=1) as rec:  # instruments="default"
        for s in range(4):
            g = rng.standard_normal(w.shape).astype(np.float32)
            w = w - 0.01 * g
            rec.snapshot(s, {"w": w}, grads={"w": g}, optim={"w": {"m": g, "v": g * g, "lr": 1e-3, "step": s + 1}})
    code, out, _ = _cli(capsys, "info", str(path))
    assert code == 0
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if "instruments (latest)" in ln)
    cols = lines[head + 1].split()
    assert {"|m|", "|v|", "eff_lr"} <= set(cols) and "sigma_max" not in cols and "cos_prev" not in cols, cols
    assert "-" not in lines[head + 2].split()[1:4]


def test_watch_of_a_checkpoint_directory_takes_the_thresholds(tmp_path, monkeypatch, capsys):
    """`weighttui watch DIR --threshold ...` on checkpoints: the viewer gets the thresholds (they were
    dropped without a word); `--run` (a run of an appended log) is refused in one line."""
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((2, 2), np.float32)}, str(ck / "epoch_1.safetensors"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr("weighttui.tui.app.run_app", lambda path, **kw: seen.append(kw) or 0)
    assert main(["watch", str(ck), "--threshold", "ratio_high=0.05"]) == 0
    assert seen and seen[0]["diagnose_config"].ratio_high == 0.05
    assert "the imported run log is" in capsys.readouterr().err
    code, _, err = _cli(capsys, "watch", str(ck), "--run", "0")
    assert code == 2 and "--run" in err and len(err.strip().splitlines()) == 1


def test_a_skipped_checkpoint_is_an_event_in_the_imported_log(tmp_path, capsys):
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in (1, 2, 3):
        save_file({"w": np.full((8, 8), e, np.float32)}, str(ck / f"epoch_{e}.safetensors"))
    data = (ck / "epoch_2.safetensors").read_bytes()
    (ck / "epoch_2.safetensors").write_bytes(data[: len(data) - 40])  # cut short
    out = tmp_path / "run.wtui"
    code, _, err = _cli(capsys, "import", str(ck), "--out", str(out))
    assert code == 0 and "epoch_2.safetensors" in err
    run = weighttui.open(str(out))
    assert list(run.steps) == [1, 3]
    assert any("epoch_2.safetensors" in e.message and e.level == "warning" for e in run.events), run.events


def test_numpy_recorder_bfloat16_nan_origin_names_the_element(tmp_path):
    """A bfloat16 NaN gets its nan_origin event with the flat index, like float32."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path = tmp_path / "bf16nan.wtui"
    w = np.ones((8, 4), dtype=ml_dtypes.bfloat16)
    with weighttui.Recorder(str(path), every=1, instruments=True) as rec:
        rec.snapshot(0, {"w": w})
        w = w.copy()
        w[2, 3] = np.nan
        rec.snapshot(1, {"w": w})
    origin = [e for e in weighttui.open(str(path)).events if e.kind == "nan_origin"]
    assert len(origin) == 1 and origin[0].where == "weights" and origin[0].index == 11, origin
