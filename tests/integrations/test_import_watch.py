"""`weighttui watch DIR` on a checkpoint directory: a writer process adds checkpoints while the follower runs."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers.follow import CheckpointFollower

WRITER = r"""
import sys, time, numpy as np
from safetensors.numpy import save_file
d = sys.argv[1]
for i in range(3):
    w = {"w": np.full((64, 64), i, np.float32), "b": np.arange(8, dtype=np.float32) + i}
    save_file(w, f"{d}/.tmp"); import os; os.replace(f"{d}/.tmp", f"{d}/epoch_{i}.safetensors")
    time.sleep(0.3)
"""


def _until(cond, follower, deadline=60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        follower.poll()
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_follower_picks_up_checkpoints_and_waits_for_half_written_files(tmp_path):
    from safetensors.numpy import save_file

    d = tmp_path / "ck"
    d.mkdir()
    out = str(tmp_path / "live.wtui")
    messages = []
    f = CheckpointFollower(str(d), out, report=messages.append)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(d)])
    assert _until(lambda: f.snapshots == 3, f), messages
    writer.wait(timeout=60)
    # a file written in two parts: the first half must not be read
    save_file({"w": np.full((64, 64), 9, np.float32), "b": np.zeros(8, np.float32)}, str(tmp_path / "full"))
    data = (tmp_path / "full").read_bytes()
    part = d / "epoch_9.safetensors"
    part.write_bytes(data[:100])
    for _ in range(4):
        f.poll()
    assert f.snapshots == 3 and not messages
    with open(part, "ab") as fh:
        fh.write(data[100:])
    assert _until(lambda: f.snapshots == 4, f), messages
    f.stop()
    run = weighttui.open(out)
    assert list(run.steps) == [0, 1, 2, 9]
    assert np.array_equal(run.weights(epoch=9)["w"], np.full((64, 64), 9, np.float32))
    assert run.run.meta["import"]["watch"] is True
    assert not messages


def test_watch_dir_through_the_tui(tmp_path, monkeypatch):
    import asyncio

    from safetensors.numpy import save_file

    from weighttui.cli import importing as import_cli

    d = tmp_path / "ck"
    d.mkdir()
    for i in range(2):
        save_file({"w": np.full((4, 4), i, np.float32)}, str(d / f"epoch_{i}.safetensors"))
    assert import_cli.is_checkpoint_dir(str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = import_cli.cache_log(str(d))
    f = CheckpointFollower(str(d), out, report=lambda m: None)
    f.start(interval=0.05)
    from weighttui.tui.app import WeightApp

    async def drive():
        app = WeightApp(out, mode="watch")
        async with app.run_test() as pilot:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                await pilot.pause(0.1)
                data = getattr(app, "data", None)
                if data is not None and getattr(data, "n", 0) == 2:
                    return True
            return False

    try:
        ok = asyncio.run(drive())
    finally:
        f.stop()
    assert ok


def test_watch_takes_a_torch_checkpoint_dicts_epoch_and_loss(tmp_path):
    """`watch DIR` of the PyTorch tutorial's checkpoint dicts: epoch from the dict, loss as a scalar at the
    checkpoint's step, as `import` does (docs/import.md)."""
    import pytest

    torch = pytest.importorskip("torch")
    d = tmp_path / "ck"
    d.mkdir()
    out = str(tmp_path / "live.wtui")
    f = CheckpointFollower(str(d), out, report=lambda m: None)
    model = torch.nn.Linear(3, 2)
    for epoch in range(2):
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict(), "loss": torch.tensor(0.5 / (epoch + 1))},
                   d / f"ckpt_{10 * (epoch + 1)}.pt")
    assert _until(lambda: f.snapshots == 2, f)
    f.stop()
    run = weighttui.open(out)
    assert list(run.steps) == [10, 20] and list(run.epochs) == [0, 1]
    steps, loss = run.scalars("loss")
    assert list(steps) == [10, 20] and loss.tolist() == [0.5, 0.25]
    assert "checkpoint dict" in run.run.meta["import"]["scalars_from"]


def test_a_directory_of_tensorboard_scalars_then_checkpoints_follows_the_checkpoints(tmp_path):
    # an HF output dir logs to runs/ (TensorBoard scalars, no histograms) before its first checkpoint
    from safetensors.numpy import save_file
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    d = tmp_path / "out"
    (d / "runs").mkdir(parents=True)
    writer = EventFileWriter(str(d / "runs"))
    writer.add_event(event_pb2.Event(step=1, wall_time=time.time(), summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss", simple_value=1.0)])))
    writer.close()
    out = str(tmp_path / "live.wtui")
    messages = []
    f = CheckpointFollower(str(d), out, report=messages.append)
    assert f.kind == "tensorboard"
    for step in (100, 200):
        save_file({"w": np.full((3, 3), step, np.float32)}, str(d / f"step_{step}.safetensors"))
        assert _until(lambda step=step: f.snapshots and f.importer is not None and f.importer.last_step == step, f)
    f.stop()
    assert any("checkpoints appeared" in m for m in messages)
    run = weighttui.open(out)  # the latest run of the log: the checkpoints
    assert run.steps.tolist() == [100, 200]
    assert np.array_equal(run.weights(step=200)["w"], np.full((3, 3), 200, np.float32))


def test_a_slow_writer_is_waited_for_not_given_up(tmp_path):
    """A .pt written to its final name in parts, polled between them (a slow disk): each part is tried
    and fails, more times than give_up in all, but the file grows between tries, so it is not skipped;
    once complete it is imported."""
    import io

    import torch

    d = tmp_path / "ck"
    d.mkdir()
    buf = io.BytesIO()
    w = torch.arange(12.0).reshape(3, 4)
    torch.save({"w": w}, buf)
    data = buf.getvalue()
    messages = []
    f = CheckpointFollower(str(d), str(tmp_path / "live.wtui"), report=messages.append, give_up=3)
    path = d / "epoch_1.pt"
    parts = 6
    for i in range(parts):
        with open(path, "ab") as fh:
            fh.write(data[i * len(data) // parts:(i + 1) * len(data) // parts])
        if i < parts - 1:
            for _ in range(3):  # a poll sees the new size, two try it: fewer than give_up at one size
                f.poll()
    assert not messages and f.snapshots == 0
    assert _until(lambda: f.snapshots == 1, f), messages
    f.stop()
    run = weighttui.open(str(tmp_path / "live.wtui"))
    assert np.array_equal(run.weights(epoch=1)["w"], w.numpy())
    assert not [e for e in run.events if e.kind == "import_skipped"] and not messages


def test_an_hdf5_file_still_open_for_writing_is_waited_for(tmp_path):
    """h5py flushes leave a file that parses at every stage: the superblock's open-for-writing flag says
    it is not done; the follower waits for the writer to close it, then reads every dataset."""
    import h5py

    d = tmp_path / "ck"
    d.mkdir()
    f = CheckpointFollower(str(d), str(tmp_path / "live.wtui"), report=lambda m: None)
    h5 = h5py.File(d / "weights_epoch_1.h5", "w")
    for i in range(3):
        h5.create_dataset(f"layer{i}/kernel", data=np.full((4, 4), i, np.float32))
        h5.flush()
        for _ in range(3):
            f.poll()
        assert f.snapshots == 0
    h5.close()
    assert _until(lambda: f.snapshots == 1, f)
    f.stop()
    run = weighttui.open(str(tmp_path / "live.wtui"))
    assert sorted(run.weights(epoch=1)) == ["layer0/kernel", "layer1/kernel", "layer2/kernel"]


def test_a_writers_temporary_file_is_not_a_checkpoint(tmp_path):
    """tempfile.mkstemp(dir=DIR, suffix=".pt"), then os.replace to epoch_N.pt: the temporary name's
    random digits are no step; only the renamed file is imported."""
    import os
    import tempfile

    import torch

    d = tmp_path / "ck"
    d.mkdir()
    f = CheckpointFollower(str(d), str(tmp_path / "live.wtui"), report=lambda m: None)
    for epoch in (1, 2):
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".pt")
        os.close(fd)
        torch.save({"w": torch.full((2, 2), float(epoch))}, tmp)
        for _ in range(4):  # complete and unchanged over several polls before the rename
            f.poll()
        os.replace(tmp, d / f"epoch_{epoch}.pt")
        assert _until(lambda: f.snapshots == epoch, f)  # noqa: B023 (read at once)
    f.stop()
    run = weighttui.open(str(tmp_path / "live.wtui"))
    assert run.steps.tolist() == [1, 2] and run.epochs.tolist() == [1, 2]


def test_tensorboard_writers_that_start_or_flush_later_rename_and_lose_nothing(tmp_path):
    """Followed live, a train/ writer (histograms, loss) and an eval/ writer that starts at step 5 and
    reaches the disk every 4 steps: the tags keep their directory prefix from the start (train/w, no
    rename when eval/ appears), and the eval scalars that arrive late are kept, as the import keeps them."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from weighttui.integrations.importers.driver import import_source

    d = tmp_path / "tb"
    rng = np.random.default_rng(0)
    train = SummaryWriter(str(d / "train"), flush_secs=10_000)
    train.add_scalar("loss", 1.0, 0)
    train.flush()
    messages = []
    f = CheckpointFollower(str(d), str(tmp_path / "live.wtui"), report=messages.append)
    evaluation = None
    for s in range(1, 13):
        train.add_histogram("w", rng.standard_normal(50), s)
        train.add_scalar("loss", 1.0 / s, s)
        train.flush()
        if s == 5:
            evaluation = SummaryWriter(str(d / "eval"), flush_secs=10_000)
        if evaluation is not None:
            evaluation.add_scalar("acc", s / 20, s)
            if s % 4 == 0:
                evaluation.flush()
        f.poll()
    train.close()
    evaluation.close()
    f.poll()
    f.stop()
    import_source(str(d), str(tmp_path / "import.wtui"))
    live, imported = weighttui.open(str(tmp_path / "live.wtui")), weighttui.open(str(tmp_path / "import.wtui"))
    assert live.tensor_names == imported.tensor_names == ["train/w"]
    assert live.steps.tolist() == imported.steps.tolist() == list(range(1, 13))
    for name in ("train/loss", "eval/acc"):
        assert live.scalars(name)[0].tolist() == imported.scalars(name)[0].tolist(), name
    assert imported.scalars("eval/acc")[0].tolist() == list(range(5, 13))
    assert not [m for m in messages if "left out" in m]


def test_a_watch_keeps_the_previous_watchs_log_and_two_watches_take_two_logs(tmp_path, monkeypatch):
    """The cache log is rebuilt from the files there now: the previous watch's log (maybe with steps whose
    files a rolling window deleted since) is kept as <name>.previous.wtui; a watch of the same directory
    still running holds its log's lock, so a second one takes <name>-2.wtui and follows on its own."""
    from weighttui.cli.importing import cache_log, claim_cache_log

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = tmp_path / "ck"
    d.mkdir()
    first = cache_log(str(d))
    assert claim_cache_log(str(d)) == (first, None)
    with weighttui.Recorder(first) as rec:
        rec.snapshot(1, {"w": np.ones(3)})
    out, previous = claim_cache_log(str(d))
    assert out == first and previous == first[: -len(".wtui")] + ".previous.wtui"
    assert weighttui.open(previous).steps.tolist() == [1]
    with weighttui.Recorder(out):  # a watch still running
        second, _ = claim_cache_log(str(d))
        assert second == first[: -len(".wtui")] + "-2.wtui"


def test_tensorboards_newest_step_is_written_once_the_files_settle(tmp_path, monkeypatch):
    """The newest step waits for a later one (it may still gain values), but not forever: when the files
    have not grown for SETTLED_S (training ended), it is written while the viewer still runs."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from weighttui.integrations.importers import tensorboard_events

    d = tmp_path / "tb"
    writer = SummaryWriter(str(d))
    rng = np.random.default_rng(1)
    for s in range(3):
        writer.add_histogram("w", rng.standard_normal(20), s)
    writer.close()
    f = CheckpointFollower(str(d), str(tmp_path / "live.wtui"), report=lambda m: None)
    f.poll()
    assert f.snapshots == 2  # step 2 may still gain values
    clock = {"now": time.monotonic()}
    monkeypatch.setattr(tensorboard_events.time, "monotonic", lambda: clock["now"])
    f.poll()
    assert f.snapshots == 2
    clock["now"] += tensorboard_events.SETTLED_S
    f.poll()
    assert f.snapshots == 3
    f.stop()
    assert weighttui.open(str(tmp_path / "live.wtui")).steps.tolist() == [0, 1, 2]
