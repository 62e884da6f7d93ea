"""Second black-box audit of issues 14-17 (the first is test_issue_audit.py): what a user meets
off the happy path. Each test is a gap the audit found, fixed in the module that owns the rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import weighttui
from weighttui.cli.main import main


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    got = capsys.readouterr()
    return code, got.out, got.err


def _python(code: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """A fresh interpreter (Keras policies and TF graphs are process-wide)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


# ---------------------------------------------------------------- issue 15: gradients inside model.fit


KERAS_LOSS_SCALE = """
    import json, sys
    import numpy as np, keras, weighttui
    from weighttui.keras import WeightCallback
    path, eager = sys.argv[1], sys.argv[2] == "1"
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = (100.0 * x.sum(1, keepdims=True)).astype("float32")  # gradients in the hundreds
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="dense"),
                              keras.layers.Dense(1, name="head")], name="sequential")
    lr = 0.1
    # a scale this large overflows the scaled gradients: the optimizer skips the update and halves
    # the scale, batch after batch, until the gradients are finite (what mixed_float16 runs meet)
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr), initial_scale=2.0 ** 126),
                  "mse", run_eagerly=eager)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[WeightCallback(path, every_batches=1)])
    run = weighttui.open(path)
    out = {}
    for name in run.tensor_names:
        gs, g = run.series(name, "norm", kind="grad")
        ds, d = run.series(name, "norm", kind="delta")
        out[name] = {"grad": dict(zip(gs.tolist(), g.tolist())), "delta": dict(zip(ds.tolist(), d.tolist()))}
    print(json.dumps({"series": out, "skipped": [e.step for e in run.events if e.kind == "skipped_step"]}))
"""


@pytest.mark.parametrize("eager", [False, True], ids=["graph", "run_eagerly"])
def test_a_step_the_loss_scaler_skipped_logs_no_gradient_of_another_batch(tmp_path, eager):
    """Issue 15: gradient statistics "of the gradients the optimizer actually applies ... unscaled under
    a LossScaleOptimizer". A batch whose scaled gradients overflow is skipped (no update): its gradient
    was logged as the previous batch's again (compiled fit) or as zeros (run_eagerly). Nothing was applied:
    the snapshot has no gradient (NaN), and every applied batch still has update norm == lr x gradient norm."""
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    path = tmp_path / "ls.wtui"
    r = _python(KERAS_LOSS_SCALE, str(path), "1" if eager else "0", env={"KERAS_BACKEND": "tensorflow"})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    got = doc["series"]
    for name, series in got.items():
        grad = {int(k): v for k, v in series["grad"].items()}
        delta = {int(k): v for k, v in series["delta"].items()}
        skipped = [s for s in delta if s > 0 and delta[s] == 0.0]
        applied = [s for s in delta if s > 0 and delta[s] > 0.0]
        assert skipped and applied, (name, delta)  # the scale overflowed at first, then came down
        for s in skipped:
            assert grad[s] is None or np.isnan(grad[s]), (name, s, grad[s])  # json: NaN -> NaN
        for s in applied:
            assert delta[s] == pytest.approx(0.1 * grad[s], rel=1e-4), (name, s)
        if not eager:  # said in the log, as GradScaler's skipped steps are by the PyTorch integration
            assert doc["skipped"] == skipped, doc["skipped"]


# ---------------------------------------------------------------- issue 15: JAX pytrees


def test_jax_device_statistics_of_a_tree_with_a_zero_size_leaf(tmp_path):
    """Issue 15 JAX "on an accelerator, statistics are computed on the device with jnp (tested on CPU with the
    jnp path forced)": one zero-size leaf in the tree made every device snapshot fail ("zero-size array to
    reduction operation min"), so nothing at all was recorded. The device path must give what the host path gives."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    import weighttui.jax as wj

    key = jax.random.PRNGKey(0)
    params = {"dense": {"kernel": jax.random.normal(key, (16, 8)), "bias": jnp.zeros(8)},
              "lora": {"a": jnp.zeros((0, 8)), "b": jnp.ones((8, 0))}, "scale": jnp.ones((3,), jnp.bfloat16)}
    runs = {}
    for stats in ("host", "device"):
        path = tmp_path / f"{stats}.wtui"
        rec = wj.recorder(str(path), every=1)
        p = params
        for s in range(3):
            p = jax.tree_util.tree_map(lambda a: (a * 1.01 + 0.001).astype(a.dtype), p)
            wj.snapshot(rec, s, p, grads=p, stats=stats)
        rec.close()
        runs[stats] = weighttui.open(str(path))
    host, device = runs["host"], runs["device"]
    assert device.tensor_names == host.tensor_names and len(device.steps) == 3
    for name in host.tensor_names:
        for kind, stats in (("weights", ("mean", "std", "min", "max", "norm", "zero_frac")),
                            ("grad", ("mean", "std", "min", "max", "norm")),
                            ("delta", ("norm", "max_abs", "mean_abs", "changed_frac"))):
            for stat in stats:
                a, b = host.series(name, stat, kind=kind)[1], device.series(name, stat, kind=kind)[1]
                assert np.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True), (name, kind, stat, a, b)
    assert device.series("lora/a", "norm")[1].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- issue 17: TensorBoard events


def test_tensorboard_events_with_only_scalars_import_as_a_run_of_scalars(tmp_path, capsys):
    """Issue 17: TensorBoard event files, "their histograms and scalars". A run that logged only scalars
    (the most common TensorBoard log) was imported, then reported as a failure: exit 1, "wrote 0 snapshot(s)"."""
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    tb = tmp_path / "tb"
    tb.mkdir()
    with open(tb / "events.out.tfevents.1.audit", "wb") as fh:
        writer = RecordWriter(fh)
        writer.write(Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for s in range(5):
            writer.write(Event(step=10 * s, wall_time=1.0 + s, summary=Summary(value=[
                Summary.Value(tag="loss", simple_value=1.0 / (s + 1))])).SerializeToString())
    out = tmp_path / "tb.wtui"
    code, _, err = _cli(capsys, "import", str(tb), "--out", str(out))
    assert code == 0, err
    line = err.strip().splitlines()[-1]
    assert "scalars at 5 step(s)" in line and "no histograms" in line, err
    steps, loss = weighttui.open(str(out)).scalars("loss")
    assert steps.tolist() == [0, 10, 20, 30, 40]
    assert loss == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "events.out.tfevents.2.audit").write_bytes(b"")
    code, _, err = _cli(capsys, "import", str(empty), "--out", str(tmp_path / "e.wtui"))
    assert code == 1 and "wrote 0 snapshot(s)" in err  # nothing at all is still a failure


# ---------------------------------------------------------------- issue 17: Keras files of bfloat16 layers


KERAS_BF16_SAVES = """
    import sys
    import numpy as np, keras
    d = sys.argv[1]
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, dtype="bfloat16", name="low"),
                              keras.layers.Dense(1, name="head")])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).standard_normal((32, 8)).astype("float32")
    for e in (1, 2):
        model.fit(x, x[:, :1], verbose=0, epochs=1)
        model.save_weights(f"{d}/weights/epoch_{e}.weights.h5")
        model.save(f"{d}/models/model_{e}.keras")
        np.savez(f"{d}/truth_{e}.npz", *[np.asarray(v.numpy()).astype(np.float32) for v in model.weights])
    print(model.weights[0].dtype)
"""


def test_keras_files_of_a_bfloat16_layer_import_every_tensor(tmp_path, capsys):
    """Issue 17: Keras `save_weights` / `model.save` import "bit for bit". Keras 3 writes a bfloat16
    variable into HDF5 as 2-byte opaque data (attribute dtype="bfloat16"): the importer left such a layer out,
    silently, so a model with a bf16 layer came back without it."""
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    h5py = pytest.importorskip("h5py")
    for sub in ("weights", "models"):
        (tmp_path / sub).mkdir()
    r = _python(KERAS_BF16_SAVES, str(tmp_path), env={"KERAS_BACKEND": "tensorflow"})
    assert r.returncode == 0 and "bfloat16" in r.stdout, r.stderr[-3000:]
    for sub in ("weights", "models"):
        out = tmp_path / f"{sub}.wtui"
        code, _, err = _cli(capsys, "import", str(tmp_path / sub), "--out", str(out))
        assert code == 0, err
        run = weighttui.open(str(out))
        assert len(run.tensor_names) == 4, (sub, run.tensor_names)
        assert [t.dtype for t in run.tensors][:2] == ["bfloat16", "bfloat16"]
        for e in (1, 2):
            truth = np.load(tmp_path / f"truth_{e}.npz")
            got = run.weights(epoch=e)
            for name, want in zip(run.tensor_names, (truth[f"arr_{i}"] for i in range(4)), strict=True):
                assert got[name].shape == want.shape and np.array_equal(got[name], want), (sub, e, name)
        steps, norm = run.series(run.tensor_names[0], "norm")
        assert norm[-1] == pytest.approx(np.linalg.norm(np.load(tmp_path / "truth_2.npz")["arr_0"].astype(np.float64)),
                                         rel=1e-12)
    # the same convention in a chunked, compressed dataset (read through h5py, not the map)
    bits = (np.arange(12, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    with h5py.File(tmp_path / "chunked.h5", "w") as f:
        ds = f.create_dataset("layer/kernel", data=bits.view("V2").reshape(3, 4), chunks=(1, 4), compression="gzip")
        ds.attrs["dtype"] = "bfloat16"
    code, _, err = _cli(capsys, "import", str(tmp_path / "chunked.h5"), "--out", str(tmp_path / "c.wtui"))
    assert code == 0, err
    run = weighttui.open(str(tmp_path / "c.wtui"))
    got = run.weights(step=run.full_steps[0])["layer/kernel"]
    assert np.array_equal(got, np.arange(12, dtype=np.float32).reshape(3, 4))


# ---------------------------------------------------------------- issue 17: watch DIR where the home is read-only


def test_watch_of_a_checkpoint_directory_with_no_writable_cache_directory(tmp_path, monkeypatch, capsys):
    """Issue 17 `weighttui watch DIR` imports into the user's cache directory; with a home that cannot be
    written (compute nodes often mount it read-only; /proc stands in here, unwritable even for root) it stopped
    with "[Errno 2] No such file or directory". The imported log is a cache: a temporary directory serves."""
    import time

    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in (1, 2):
        save_file({"w": np.full((4, 4), e, np.float32)}, str(ck / f"epoch_{e}.safetensors"))
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/weighttui-audit")
    monkeypatch.setenv("HOME", "/proc/weighttui-audit")
    seen = {}

    def viewer(path, **kw):  # stands in for the terminal: reads what the follower imports, as the viewer does
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if os.path.exists(path) and len(weighttui.open(path, cache=False).steps) == 2:
                seen["path"], seen["steps"] = path, weighttui.open(path, cache=False).steps.tolist()
                return 0
            time.sleep(0.05)
        return 1

    monkeypatch.setattr("weighttui.tui.app.run_app", viewer)
    assert main(["watch", str(ck)]) == 0
    assert seen["steps"] == [1, 2] and not seen["path"].startswith("/proc")
    assert f"the imported run log is {seen['path']}" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 15: the numpy Recorder's odd dtypes


def test_a_longdouble_tensor_is_left_out_and_the_recording_goes_on(tmp_path, capfd):
    """Bad input: "a clear one-line message, nothing lost; the recorder never raises into training". A
    np.longdouble array (the format stores no float wider than float64) stopped the whole recording when its
    complete values were written: every later snapshot of every tensor was lost. Now only it is left out."""
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("longdouble is float64 on this platform")
    path = tmp_path / "ld.wtui"
    rng = np.random.default_rng(7)
    others = {"h": rng.standard_normal((8, 4)).astype(np.float16), "d": rng.standard_normal((8, 4)),
              "i": rng.integers(-5, 5, (8, 4)).astype(np.int8), "z": np.zeros((0, 4), np.float32)}
    with weighttui.Recorder(str(path), every=1, full_every=1) as rec:
        for s in range(4):
            rec.snapshot(s, {"wide": np.full((3, 3), s, np.longdouble), **{k: v + s for k, v in others.items()}})
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'wide' skipped" in lines[0] and np.dtype(np.longdouble).name in lines[0], lines
    run = weighttui.open(str(path))
    assert run.status == "finished" and run.tensor_names == ["h", "d", "i", "z"]
    assert run.steps.tolist() == [0, 1, 2, 3] and run.full_steps == [0, 1, 2, 3]
    for k, v in others.items():
        got = run.weights(step=3)[k]
        assert got.dtype == v.dtype and np.array_equal(got, v + 3), k


# ---------------------------------------------------------------- issue 17: Lightning checkpoints with hyperparameters


def test_lightning_checkpoints_whose_hyperparameters_hold_a_path_import_their_state_dict(tmp_path, capsys):
    """Issue 17: "Lightning `.ckpt` whose `state_dict` it takes", and "nothing is unpickled". A real Lightning
    module with `save_hyperparameters()` and a `pathlib.Path` argument (or an argparse Namespace in a checkpoint
    dict) was refused whole ("needs arbitrary pickles"): its weights were never the problem. Those classes now get
    an inert stand-in (nothing of the file runs); a file whose weights need them (a pickled model) is still refused."""
    import argparse
    import pathlib

    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lightning")

    class M(L.LightningModule):
        def __init__(self, data_dir=pathlib.Path("/data/train"), lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.lin = torch.nn.Linear(3, 2)

        def training_step(self, batch, i):
            return self.lin(batch[0]).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ck = tmp_path / "ck"
    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(ck), every_n_epochs=1, save_top_k=-1)
    model = M()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, callbacks=[cb], enable_model_summary=False,
              accelerator="cpu").fit(model, data)
    lin = torch.nn.Linear(3, 2)
    torch.save({"model_state_dict": lin.state_dict(), "epoch": 7, "args": argparse.Namespace(lr=0.1, out="x")},
               str(ck / "plain_epoch_7.pt"))
    torch.save(lin, str(ck / "whole_model.pt"))  # the module itself: still refused
    out = tmp_path / "run.wtui"
    code, _, err = _cli(capsys, "import", str(ck), "--out", str(out))
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("weighttui import: skipped")]
    assert len(lines) == 1 and "whole_model.pt" in lines[0] and "refused" in lines[0], err
    run = weighttui.open(str(out))
    assert run.steps.tolist() == [2, 4, 7] and run.epochs.tolist() == [0, 1, 7]
    assert np.array_equal(run.weights(epoch=1)["lin.weight"], model.lin.weight.detach().numpy())
    assert np.array_equal(run.weights(epoch=7)["weight"], lin.weight.detach().numpy())


# ---------------------------------------------------------------- issues 14/16: run.series as a user calls it


def test_series_reads_an_instrument_without_its_kind_and_the_export_names(tmp_path):
    """Issue 16 names are "readable with run.series(name, stat, kind=...)"; a user who leaves kind out for a
    statistic of the delta, grad or optim block got "weights statistics are ..., not 'cos_prev'"; and the names
    the parquet/csv exports use for the NaN/Inf counts (`nan_count`, `inf_count`) were not readable at all."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    path = tmp_path / "run.wtui"
    with weighttui.Recorder(str(path), every=1, instruments=True) as rec:
        for s in range(6):
            g = rng.standard_normal(w.shape).astype(np.float32)
            w = w - 0.1 * g
            rec.snapshot(s, {"w": w}, grads={"w": g}, optim={"w": {"m": g, "v": g * g, "lr": 0.1, "step": s + 1}})
    run = weighttui.open(str(path))
    for stat, kind in (("cos_prev", "delta"), ("cos_grad", "delta"), ("sigma_ratio", "delta"),
                       ("dead_units", "grad"), ("m_norm", "optim"), ("sigma_max", "weights"), ("norm", "weights")):
        a, b = run.series("w", stat), run.series("w", stat, kind=kind)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True), stat
    assert np.isfinite(run.series("w", "cos_prev")[1][2:]).all()
    for kind in ("weights", "grad"):
        assert np.array_equal(run.series("w", "nan_count", kind=kind)[1], run.series("w", "nan", kind=kind)[1])
    import pandas as pd  # noqa: F401  (to_pandas needs it)

    df = run.to_pandas()
    row = df[(df.stat == "nan_count") & (df.kind == "grad")]
    assert len(row) == 6 and (row.value == run.series("w", "nan_count", kind="grad")[1]).all()
    with pytest.raises(ValueError, match="not 'cos_prev'"):
        run.series("w", "cos_prev", kind="weights")  # an explicit kind is kept


# ---------------------------------------------------------------- issue 17: a directory of mixed formats


def test_a_checkpoint_directory_of_mixed_formats_keeps_epoch_order(tmp_path, capsys):
    """Issue 17: "step and epoch come from the files' own metadata where they have it, else from numbers in
    their names". In a directory of mixed files (a PyTorch loop's epoch_N.pt, a safetensors export, an .npz, a
    Lightning-style dict with its global_step, a JSON dump) only one had a real step: sorted by step, its epoch 4
    (step 400) came after epoch 6 (step 6). Every epoch must stay in order, each with its own weights."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    want = {}
    for e in range(1, 7):
        sd = {"fc.weight": np.full((4, 3), e, np.float32), "fc.bias": np.arange(4, dtype=np.float32) * e}
        want[e] = sd
        tensors = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
        if e in (1, 5):
            torch.save(tensors, str(ck / f"epoch_{e}.pt"))
        elif e == 2:
            save_file(sd, str(ck / f"epoch_{e}.safetensors"))
        elif e == 3:
            np.savez(ck / f"epoch_{e}.npz", **sd)
        elif e == 4:
            torch.save({"state_dict": tensors, "epoch": 4, "global_step": 400}, str(ck / "epoch_4.ckpt"))
        else:
            (ck / f"weights_epoch_{e}.json").write_text(json.dumps({k: v.tolist() for k, v in sd.items()}))
    out = tmp_path / "run.wtui"
    code, _, err = _cli(capsys, "import", str(ck), "--out", str(out))
    assert code == 0, err
    run = weighttui.open(str(out))
    assert run.epochs.tolist() == [1, 2, 3, 4, 5, 6]
    steps = run.steps.tolist()
    assert steps == sorted(steps) and len(set(steps)) == 6 and steps[3] == 400  # the real step is kept
    for e, sd in want.items():
        got = run.weights(epoch=e)
        assert all(np.array_equal(got[k], v) for k, v in sd.items()), e
    _, norm = run.series("fc.weight", "norm")
    assert norm == pytest.approx([np.sqrt(12.0) * e for e in range(1, 7)])


# -------------------------------------------------- issue 14: a log in a directory the reader cannot write to


READ_ONLY_READER = """
    import io, json, os, sys, contextlib
    import weighttui
    from weighttui.cli.main import main
    log, small, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    with contextlib.redirect_stdout(io.StringIO()):  # every module `info` uses, loaded while they can be read
        main(["info", small, "--json"])
    if os.geteuid() == 0:  # root writes anywhere: read as `nobody`, who cannot write the log's directory
        os.setgid(65534)
        os.setuid(65534)
    os.environ.pop("HOME", None)
    os.environ["XDG_CACHE_HOME"] = cache
    first = weighttui.open(log)
    again = weighttui.open(log)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["info", log, "--json"])
    print(json.dumps({"index": first.index_path, "again": again.index_path, "code": code,
                      "norm": first.series("w0", "norm")[1].tolist(), "steps": json.loads(out.getvalue())["steps"]}))
"""


@pytest.mark.parametrize("cache_writable", [True, False])
def test_a_log_in_a_read_only_directory_is_indexed_in_the_user_cache_or_read_without(tmp_path, cache_writable):
    """Issue 14: the index "lives beside the log when that directory is writable, otherwise in the user's cache
    directory ($XDG_CACHE_HOME/weighttui/...)"; with neither writable the log is read without one. Real permissions
    (the unit tests replace the writability check): a reader that cannot write the log's directory."""
    import shutil
    import tempfile
    from pathlib import Path

    # not under tmp_path: pytest's base directories are 0700, which `nobody` cannot pass
    base = Path(tempfile.mkdtemp(prefix="weighttui-audit-ro-"))
    try:
        _read_only_case(base, cache_writable)
    finally:
        for d in (base / "logs", base / "cache"):
            if d.exists():
                os.chmod(d, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def _read_only_case(tmp_path, cache_writable: bool) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "run.wtui"
    rng = np.random.default_rng(2)
    ws = {f"w{i}": rng.standard_normal((64, 64)).astype(np.float32) for i in range(6)}
    with weighttui.Recorder(str(path), every=1) as rec:
        for s in range(150):  # over the 1 MiB under which no index is made
            ws = {k: v + 0.01 for k, v in ws.items()}
            rec.snapshot(s, ws, grads=ws)
    small = tmp_path / "small.wtui"
    with weighttui.Recorder(str(small)) as rec:
        rec.snapshot(0, {"w": np.ones(3, np.float32)})
    cache = tmp_path / "cache"
    cache.mkdir()
    want = weighttui.open(str(path), cache=False).series("w0", "norm")[1].tolist()
    before = sorted(os.listdir(logs))
    os.chmod(tmp_path, 0o755)
    os.chmod(logs, 0o555)
    os.chmod(path, 0o444)
    os.chmod(small, 0o444)
    if os.geteuid() == 0:
        os.chown(cache, 65534 if cache_writable else 0, 65534 if cache_writable else 0)
    os.chmod(cache, 0o700 if cache_writable else 0o555)
    try:
        r = _python(READ_ONLY_READER, str(path), str(small), str(cache / "xdg" if cache_writable else cache))
    finally:
        os.chmod(logs, 0o755)
        os.chmod(cache, 0o755)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["norm"] == want and got["code"] == 0 and got["steps"] == 150
    assert sorted(os.listdir(logs)) == before  # nothing written beside the log
    if cache_writable:
        assert got["index"] and got["index"].startswith(str(cache / "xdg" / "weighttui")), got
        assert got["again"] == got["index"]
    else:
        assert got["index"] is None and got["again"] is None and os.listdir(cache) == []


# ---------------------------------------------------------------- issue 17: Ctrl-C in the middle of an import


def test_ctrl_c_during_an_import_leaves_a_readable_log_and_says_so(tmp_path):
    """Ctrl-C mid-import: exit 130 with no traceback and one line saying what was kept (it was silent), and the
    log holds the checkpoints written so far, complete, with status interrupted."""
    import signal
    import time

    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in range(300):  # per-file work: long enough to be interrupted after the first snapshot on any machine
        save_file({"w": np.full((64, 64), e, np.float32), "b": np.full(64, -e, np.float32)},
                  str(ck / f"epoch_{e}.safetensors"))
    out = tmp_path / "run.wtui"
    proc = subprocess.Popen([sys.executable, "-m", "weighttui", "import", str(ck), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        if out.exists() and len(weighttui.open(str(out), cache=False).steps) >= 1:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the import finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and str(out) in lines[0] and "Traceback" not in err, err
    run = weighttui.open(str(out))
    assert run.status == "interrupted" and 1 <= len(run.steps) < 300
    last = int(run.epochs[-1])
    assert np.array_equal(run.weights(epoch=last)["w"], np.full((64, 64), last, np.float32))


# ---------------------------------------------------------------- issue 17: --out must not destroy the user's files


def test_import_out_naming_a_file_that_is_not_a_run_log_keeps_it(tmp_path, capsys):
    """Bad input: "a clear one-line message, nothing lost". `--out` was "replaced if it exists": a typo naming one
    of the user's checkpoints (or any other file) destroyed it. A run log is still replaced; anything else is kept."""
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    for e in (1, 2):
        save_file({"w": np.full((3, 3), e, np.float32)}, str(ck / f"epoch_{e}.safetensors"))
    precious = tmp_path / "best.safetensors"
    save_file({"w": np.full((3, 3), 9, np.float32)}, str(precious))
    notes = tmp_path / "notes.txt"
    notes.write_text("results of last month\n")
    for victim in (precious, notes):
        before = victim.read_bytes()
        code, _, err = _cli(capsys, "import", str(ck), "--out", str(victim))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "not a weighttui run log" in err, err
        assert victim.read_bytes() == before
    log = tmp_path / "run.wtui"
    for _ in range(2):  # a run log (the last import's) is replaced
        code, _, err = _cli(capsys, "import", str(ck), "--out", str(log))
        assert code == 0, err
    assert weighttui.open(str(log)).steps.tolist() == [1, 2]
    empty = tmp_path / "empty.wtui"
    empty.touch()  # an empty file is a log not started yet (the same rule as the readers')
    assert _cli(capsys, "import", str(ck), "--out", str(empty))[0] == 0
