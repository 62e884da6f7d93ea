"""A trainer rewriting `last.ckpt` in place (truncate, then write) while `weighttui watch DIR` or
`weighttui import DIR` reads the directory.

A reader that maps a file which is then cut short faults on the missing pages (SIGBUS), which kills the
process with no Python exception; so the readers run in a child process here, and the test checks that the
child lives, that every snapshot it recorded is one complete version of the file (its values are its step)
and that what it left out it said.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import weighttui

# version v of the checkpoint: tensors filled with v, step v in the file's own metadata
REWRITER = r"""
import io, os, sys, time
import numpy as np
path, fmt, versions, done = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
N = 1 << 20  # 4 MiB per tensor

def content(v):
    w, b = np.full(N, v, np.float32), np.full(N // 2, v, np.float32)
    bio = io.BytesIO()
    if fmt == "torch":
        import torch
        torch.save({"state_dict": {"w": torch.from_numpy(w), "b": torch.from_numpy(b)}, "global_step": v,
                    "epoch": v}, bio)
    elif fmt == "safetensors":
        from safetensors.numpy import save
        return save({"w": w, "b": b}, metadata={"step": str(v)})
    else:
        import h5py
        with h5py.File(bio, "w") as f:
            f["w"], f["b"] = w, b
            f.attrs["step"] = v
    return bio.getvalue()

for v in range(1, versions + 1):
    data = content(v)
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.truncate(0)  # in place, as torch.save / Lightning's last.ckpt: a reader's map loses its pages here
        f.flush()
        time.sleep(0.005)
        for at in range(0, len(data), 1 << 18):
            f.write(data[at:at + (1 << 18)])
            f.flush()
    if v == 1:
        open(done + ".started", "w").close()
    time.sleep(0.01 if v < versions else 0)
open(done, "w").close()
"""

# the reader: `watch` polls a CheckpointFollower until the rewriter is done and its last version is in;
# `import` imports the directory again and again while the rewriter runs
READER = r"""
import json, os, sys, time
mode, src, out, done, last = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
messages, outs = [], []
if mode == "watch":
    from weighttui.integrations.importers.follow import CheckpointFollower
    f = CheckpointFollower(src, out, report=messages.append)
    end = None
    while True:
        f.poll()
        if os.path.exists(done):
            end = end or time.monotonic() + 120  # a deadline for the loop, not a timing assertion
            if f.importer.last_step == last or time.monotonic() > end:
                break
        time.sleep(0.02)
    f.stop()
    outs.append(out)
else:
    from weighttui.integrations.importers.driver import import_source
    i, after = 0, False
    while not after or i < 2:  # until one import started after the rewriter finished
        after = os.path.exists(done)
        o = f"{out}.{i}"
        before = len(messages)
        import_source(src, o, report=messages.append)
        outs.append([o, messages[before:]])
        i += 1
print(json.dumps({"messages": messages, "outs": outs}))
"""

SUFFIX = {"torch": "ckpt", "safetensors": "safetensors", "hdf5": "h5"}


def _stable_first(d, fmt):
    """epoch_0 (step 0), written long ago: `weighttui import` maps it in place."""
    path = str(d / f"epoch_0.{SUFFIX[fmt]}")
    w, b = np.zeros(1 << 20, np.float32), np.zeros(1 << 19, np.float32)
    if fmt == "torch":
        import torch

        torch.save({"state_dict": {"w": torch.from_numpy(w), "b": torch.from_numpy(b)}, "global_step": 0}, path)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file({"w": w, "b": b}, path, metadata={"step": "0"})
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["w"], f["b"] = w, b
            f.attrs["step"] = 0
    os.utime(path, (1e9, 1e9))


def _run(tmp_path, fmt, mode, versions):
    d = tmp_path / "ck"
    d.mkdir()
    _stable_first(d, fmt)
    last = str(d / f"last.{SUFFIX[fmt]}")
    done = str(tmp_path / "done")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, last, fmt, str(versions), done], env=env)
    while not os.path.exists(done + ".started"):  # from here on the file exists (cut short or not)
        assert writer.poll() is None
        time.sleep(0.01)
    reader = subprocess.run([sys.executable, "-c", READER, mode, str(d), str(tmp_path / "out.wtui"), done,
                             str(versions)], env=env, capture_output=True, text=True, timeout=600)
    assert writer.wait(timeout=600) == 0
    # the reader lived through every truncation (a SIGBUS would be returncode -7)
    assert reader.returncode == 0, (reader.returncode, reader.stderr[-3000:])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".weighttui-copy-")]  # private copies gone
    return json.loads(reader.stdout.strip().splitlines()[-1])


def _complete_versions(path) -> list[int]:
    """The steps of the log's snapshots, each checked to be one complete version (values == step)."""
    run = weighttui.open(path)
    steps = list(run.steps)
    for s in steps:
        got = run.weights(step=s)
        assert set(got) == {"w", "b"}, (s, sorted(got))
        for name, arr in got.items():
            assert arr.size == (1 << 20 if name == "w" else 1 << 19)
            assert np.all(arr == s), (path, s, name, np.unique(arr)[:5])  # not half of one, half another
    assert steps == sorted(set(steps))
    return steps


@pytest.mark.parametrize("fmt", ["torch", "safetensors", "hdf5"])
def test_watch_survives_last_ckpt_rewritten_in_place(tmp_path, fmt):
    if fmt == "torch":
        pytest.importorskip("torch")
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    pytest.importorskip("safetensors")
    versions = 30
    res = _run(tmp_path, fmt, "watch", versions)
    (out,) = res["outs"]
    steps = _complete_versions(out)
    assert steps[0] == 0 and steps[-1] == versions, (steps, res["messages"])
    # whatever was not imported was never complete for two polls, or was said (naming the file)
    for m in res["messages"]:
        assert "last." in m, m


@pytest.mark.parametrize("fmt", ["torch", "safetensors", "hdf5"])
def test_import_survives_last_ckpt_rewritten_in_place(tmp_path, fmt):
    if fmt == "torch":
        pytest.importorskip("torch")
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    pytest.importorskip("safetensors")
    res = _run(tmp_path, fmt, "import", 60)
    assert len(res["outs"]) >= 2
    for out, messages in res["outs"]:
        steps = _complete_versions(out)
        assert steps[0] == 0  # the settled file, mapped in place
        if len(steps) == 1:  # last.* was not imported: the import said why, naming it
            assert any(m.startswith(f"skipped last.{SUFFIX[fmt]}: ") for m in messages), messages
        for m in messages:
            assert "last." in m, m
    # the last import ran after the rewriter finished: the final version is in
    assert _complete_versions(res["outs"][-1][0])[-1] == 60


def test_a_file_mapped_in_place_that_changes_is_left_out_a_copy_is_not(tmp_path):
    """`weighttui import` maps a settled file in place; if it changes before its tensors are read, they are
    left out (said), never recorded as a mix of two versions. A private copy is not affected."""
    from safetensors.numpy import save_file

    from weighttui.integrations.importers.base import Unit
    from weighttui.integrations.importers.driver import Importer, Planned
    from weighttui.integrations.importers.readers import open_reader

    paths = [str(tmp_path / f"step_{i}.safetensors") for i in (1, 2)]
    for p in paths:
        save_file({"w": np.ones((64, 64), np.float32), "b": np.ones(8, np.float32)}, p)
        os.utime(p, (1e9, 1e9))
    messages: list[str] = []
    imp = Importer(str(tmp_path / "run.wtui"), source=str(tmp_path), kind="checkpoints", report=messages.append)
    in_place = open_reader(Unit(paths[0], "safetensors", "step_1.safetensors"), mapped=True)
    copied = open_reader(Unit(paths[1], "safetensors", "step_2.safetensors"), copy_dir=str(tmp_path))
    assert in_place.in_place and not copied.in_place
    for p in paths:
        os.utime(p, (1e9 + 7, 1e9 + 7))  # what a rewrite does to it (and its ctime)
    assert not imp.add(Planned(in_place.unit, 1, None, "name", None), reader=in_place)
    assert imp.add(Planned(copied.unit, 2, None, "name", None), reader=copied)
    imp.close()
    assert any("step_1.safetensors changed while being read" in m for m in messages), messages
    assert any(m.startswith("skipped step_1.safetensors: ") for m in messages), messages
    run = weighttui.open(str(tmp_path / "run.wtui"))
    assert list(run.steps) == [2]
