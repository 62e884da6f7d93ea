"""`python -m weighttui.cli import` as a user runs it: bad files named on one line, pickles refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import weighttui


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "weighttui.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


class Evil:  # an arbitrary class: loading it needs the full unpickler
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_import_cli_bad_files_and_pickles(tmp_path):
    torch = pytest.importorskip("torch")
    ck = tmp_path / "ck"
    ck.mkdir()
    ws = []
    for i in range(3):
        w = {"fc.weight": torch.randn(4, 3), "fc.bias": torch.randn(4)}
        ws.append(w)
        torch.save(w, ck / f"epoch_{i}.pt")
    torch.save({"fc.weight": torch.randn(4, 3), "x": Evil()}, ck / "epoch_3.pt")
    data = (ck / "epoch_1.pt").read_bytes()
    (ck / "epoch_1.pt").write_bytes(data[: len(data) // 2])
    out = tmp_path / "run.wtui"
    r = _cli("import", str(ck), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any("epoch_1.pt" in ln for ln in lines)
    refused = [ln for ln in lines if "epoch_3.pt" in ln]
    assert refused and "refused" in refused[0] and "arbitrary pickles" in refused[0]
    # one clear line: the class it needs, the safe alternative, and not torch's paragraph cut mid-word
    assert len(refused) == 1 and len(refused[0]) < 260, refused
    assert "(here: posix.system)" in refused[0] and "state_dict()" in refused[0] and "safetensors" in refused[0]
    assert refused[0].endswith("to import them") and "weights_only=False" not in refused[0]
    assert not (tmp_path / "pwned.txt").exists()
    run = weighttui.open(str(out))
    assert list(run.steps) == [0, 2]
    assert np.array_equal(run.weights(epoch=2)["fc.weight"], ws[2]["fc.weight"].numpy())

    r = _cli("import", str(ck / "epoch_0.pt"), "--out", str(out), "--no-values")
    assert r.returncode == 0, r.stderr
    assert weighttui.open(str(out)).full_steps == []
    r = _cli("import", str(tmp_path / "nothing"), "--out", str(out))
    assert r.returncode == 2 and "nothing" in r.stderr and len(r.stderr.splitlines()) == 1


def test_import_cli_log_that_cannot_be_written(tmp_path):
    """An --out that cannot be opened: the writer's reason and one line from import, exit 1, no traceback.
    (An --out in a missing directory is refused before anything is read: test_issue_audit.py.)"""
    from safetensors.numpy import save_file

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (a file every write to fails with ENOSPC)")
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(ck / "step_1.safetensors"))
    r = _cli("import", str(ck), "--out", "/dev/full")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert any(ln.startswith("weighttui import: ") and "/dev/full" in ln and "stopped taking writes" in ln
               for ln in r.stderr.splitlines()), r.stderr


def test_import_cli_with_nothing_readable_leaves_the_run_log_alone(tmp_path):
    from safetensors.numpy import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"w": np.ones((3, 3), np.float32)}, str(ck / "step_1.safetensors"))
    out = tmp_path / "run.wtui"
    assert _cli("import", str(ck), "--out", str(out)).returncode == 0
    before = out.read_bytes()
    (ck / "step_1.safetensors").write_bytes(b"not a checkpoint any more")
    r = _cli("import", str(ck), "--out", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "skipped step_1.safetensors" in r.stderr and "was not written" in r.stderr
    assert out.read_bytes() == before
