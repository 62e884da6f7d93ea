"""End to end in a real terminal: a run with NaN in one tensor, the alert found in the app and by `info`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from screen_host import tanh_neuron_log

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


class Terminal:
    """A tmux server of our own (-L) running one command in a 130x40 terminal."""

    def __init__(self, tmp_path):
        self.sock = f"wt-alerts-{os.getpid()}-{time.monotonic_ns()}"
        self.rc = tmp_path / "rc"

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=30)

    def start(self, argv):
        # pytest may export COLUMNS/LINES, which Textual would take over the real terminal size
        cmd = "env -u COLUMNS -u LINES " + " ".join(shlex.quote(a) for a in argv)
        self.tmux("new-session", "-d", "-x", "130", "-y", "40", "sh", "-c",
                  f"{cmd}; echo $? > {shlex.quote(str(self.rc))}; sleep 60")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p").stdout

    def wait_for(self, pattern, timeout=30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on screen within {timeout}s; screen:\n{text}")

    def exit_status(self, timeout=15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc.exists() and self.rc.read_text().strip():
                return int(self.rc.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the app did not exit; screen:\n{self.screen()}")


def test_nan_alert_in_the_app_and_in_info(tmp_path):
    path = tanh_neuron_log(tmp_path / "nan.wtui", nan_at=100)
    term = Terminal(tmp_path)
    try:
        term.start([sys.executable, "-m", "weighttui.cli", "replay", path])
        term.wait_for(r"1/80\s+step 0")
        term.tmux("send-keys", "End")
        term.tmux("send-keys", "!")
        text = term.wait_for(r"error\s+nonfinite\s+hidden\.weight\s+100")
        assert "non-finite values: 1 NaN, 0 Inf when first seen" in text
        assert "what it usually means / what to try" in text and "lower the learning" in text
        term.tmux("send-keys", "Enter")
        text = term.wait_for(r"nan 1\b")  # the detail screen's statistics at the latest step
        assert re.search(r"hidden\.weight\s+16x8", text) and "weights at step 158: 127 values" in text
        term.tmux("send-keys", "q")
        assert term.exit_status() == 0
    finally:
        term.tmux("kill-server")
    out = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", path], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(r"error: hidden\.weight from step 100: non-finite values", out.stdout)
