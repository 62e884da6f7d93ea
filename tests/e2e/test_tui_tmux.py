"""The viewer in a real terminal: tmux runs `weighttui watch` / `weighttui demo` while a writer appends."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

WEIGHTTUI = [sys.executable, "-m", "weighttui.cli"]

WRITER = r"""
import sys, time
import numpy as np
from weighttui import Recorder
path, steps, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(0)
params = {"encoder.attn.q_proj.weight": rng.normal(size=(16, 16)), "encoder.attn.q_proj.bias": np.zeros(16),
          "decoder.out.weight": rng.normal(size=(4, 16)), "embed.weight": rng.normal(size=(8, 4))}
with Recorder(path, bins=16) as rec:
    for step in range(steps):
        for k in params:
            if k != "embed.weight":  # frozen: its update ratio is 0, below the healthy band
                params[k] = params[k] * 0.999 + rng.normal(scale=1e-3, size=params[k].shape)
        rec.snapshot(step, params, epoch=step // 20, scalars={"loss": 1.0 / (1 + step)})
        time.sleep(delay)
"""


class Tmux:
    """One tmux server of our own (-L), so tests never touch anybody else's sessions."""

    def __init__(self, tmp_path, width=120, height=40):
        self.sock = f"wt-e2e-{os.getpid()}-{time.monotonic_ns()}"
        self.size = (width, height)
        self.rc_file = tmp_path / "rc"

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, check=check,
                              timeout=30)

    def start(self, argv, env=None):
        cmd = " ".join(_quote(a) for a in argv)
        env_prefix = " ".join(f"{k}={_quote(v)}" for k, v in (env or {}).items())
        shell = f"cd {_quote(os.getcwd())}; {env_prefix} {cmd}; echo $? > {_quote(str(self.rc_file))}; sleep 60"
        self.tmux("new-session", "-d", "-x", str(self.size[0]), "-y", str(self.size[1]), "sh", "-c", shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p").stdout

    def wait_for(self, pattern, timeout=30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            m = re.search(pattern, text)
            if m:
                return m
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on screen within {timeout}s; screen was:\n{text}")

    def keys(self, *keys):
        self.tmux("send-keys", *keys)

    def exit_status(self, timeout=15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc_file.exists() and self.rc_file.read_text().strip():
                return int(self.rc_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the app did not exit; screen:\n{self.screen()}")

    def kill(self):
        self.tmux("kill-server", check=False)


def _quote(s: str) -> str:
    return "'" + str(s).replace("'", "'\"'\"'") + "'"


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def test_watch_follows_a_writer_process(tmux, tmp_path):
    path = tmp_path / "run.sock"
    tmux.start([*WEIGHTTUI, "watch", str(path)])
    tmux.wait_for(r"waiting for run\.sock to appear")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "400", "0.05"])
    try:
        first = int(tmux.wait_for(r"step (\d+)", timeout=60).group(1))
        screen = tmux.screen()
        assert "q_proj" in screen and "decoder.out" in screen and "LIVE" in screen
        later = first
        deadline = time.monotonic() + 30
        while later < first + 20 and time.monotonic() < deadline:
            later = int(tmux.wait_for(r"step (\d+)").group(1))
            time.sleep(0.2)
        assert later >= first + 20, "the step on screen did not advance"
        tmux.keys("q")
        assert tmux.exit_status() == 0
    finally:
        writer.kill()
        writer.wait()


def test_watch_of_a_path_that_appears_as_a_checkpoint_directory(tmux, tmp_path):
    """`watch ckpt` before the trainer has made ckpt/: it waits, then follows the checkpoints saved there."""
    import numpy as np

    folder = tmp_path / "ckpt"
    tmux.start([*WEIGHTTUI, "watch", str(folder)], env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    tmux.wait_for(r"waiting for ckpt to appear")
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "epoch_1.npz", w=rng.normal(size=(4, 3)))
    tmux.wait_for(r"\(checkpoints\)", timeout=60)
    tmux.wait_for(r"epoch 1", timeout=60)
    np.savez(folder / "epoch_2.npz", w=rng.normal(size=(4, 3)))
    tmux.wait_for(r"epoch 2", timeout=60)
    tmux.keys("q")
    assert tmux.exit_status() == 0


def test_replay_keys_in_a_real_terminal(tmux, tmp_path):
    path = tmp_path / "done.wtui"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "60", "0"], check=True, timeout=120)
    tmux.start([*WEIGHTTUI, "replay", str(path)])
    tmux.wait_for(r"1/60\s+step 0\b")
    assert "FINISHED" in tmux.screen()
    tmux.keys("S-Right")
    tmux.wait_for(r"11/60\s+step 10\b")
    tmux.keys("g")
    tmux.wait_for(r"Go to step")
    tmux.keys("e", "2", "Enter")
    tmux.wait_for(r"41/60\s+step 40\b")
    tmux.keys("End")
    tmux.wait_for(r"■ ended latest .*60/60\s+step 59\b")  # the end of a finished run (docs/tui.md)
    tmux.keys("?")
    tmux.wait_for(r"cycle the sort")
    tmux.keys("Escape")  # alone: ESC followed at once by q would read as alt+q
    time.sleep(0.5)
    assert "cycle the sort" not in tmux.screen()
    tmux.keys("q")
    assert tmux.exit_status() == 0


def test_ctrl_s_saves_the_screen_and_pages_scroll(tmux, tmp_path):
    """ctrl+s reaches the app through a real terminal (no XOFF) and writes the screen as SVG."""
    path = tmp_path / "done.wtui"
    shots = tmp_path / "shots"
    shots.mkdir()
    subprocess.run([sys.executable, "-c", WRITER, str(path), "30", "0"], check=True, timeout=120)
    tmux.start([*WEIGHTTUI, "watch", str(path)], env={"WEIGHTTUI_SCREENSHOT_DIR": str(shots)})
    tmux.wait_for(r"step 29")
    tmux.keys("C-s")
    tmux.wait_for(r"screen saved to")
    (svg,) = shots.iterdir()
    text = svg.read_text()
    assert text.lstrip().startswith("<svg") and "q_proj" in text and "step&#160;29" in text
    tmux.keys("PageDown")  # the cursor goes to the last row of this short table
    tmux.keys("Enter")  # ... which is a tensor: its detail screen (or statistics) opens
    time.sleep(0.5)
    assert "tensors · " not in tmux.screen()
    tmux.keys("Escape")
    tmux.wait_for(r"tensors · ")
    tmux.keys("q")
    assert tmux.exit_status() == 0


def test_demo_runs_and_quits(tmux, tmp_path):
    tmux.start([*WEIGHTTUI, "demo", "--path", str(tmp_path / "demo.wtui"), "--steps", "2000", "--delay", "0.005"])
    first = int(tmux.wait_for(r"step (\d+)", timeout=60).group(1))
    tmux.wait_for(r"layers\.0", timeout=10)
    time.sleep(2)
    later = int(tmux.wait_for(r"step (\d+)").group(1))
    assert later > first
    assert "loss" in tmux.screen()
    tmux.keys("q")
    assert tmux.exit_status() == 0


def test_no_color_still_marks_out_of_band_ratios(tmux, tmp_path):
    path = tmp_path / "done.wtui"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "30", "0"], check=True, timeout=120)
    tmux.start([*WEIGHTTUI, "watch", str(path)], env={"NO_COLOR": "1"})
    tmux.wait_for(r"step 29")
    # Without colour, the band is still readable: ↑ (fast) next to the bias's ratio, and the
    # frozen tensor says so in words (issue 18, item 13: it used to show a "slow" ↓ 0).
    tmux.wait_for(r"embed \(1\)\s*\n.*weight .*\sfrozen\s")
    assert re.search(r"bias .*↑\s*\d", tmux.screen())
    tmux.keys("q")
    assert tmux.exit_status() == 0


@pytest.mark.parametrize("content, message", [
    (b"not a log\n", "not a weighttui run log"),
    (b"\x89WTUI\r\n\x1a\x07\x00\x00\x00", "newer weighttui"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.wtui"
    path.write_bytes(content)
    out = subprocess.run([*WEIGHTTUI, "watch", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
