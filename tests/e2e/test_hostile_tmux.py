"""A hostile log in a real terminal (issue 19, item 1): tensor, host, framework, meta and scalar names
carrying OSC title / clipboard / hyperlink sequences and a clear-screen leave tmux's pane title,
its paste buffers and the screen alone, on every screen of the viewer.

First a control: the same bytes printed by a plain shell in the same tmux do retitle the pane and
write a paste buffer, so the checks below can see an attack that gets through.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

HOSTILE_LOG = Path(__file__).resolve().parent.parent / "hostile_log.py"
TITLE = "PWNED-TITLE"  # hostile_log.TITLE
CLIPBOARD = "ZXZpbA=="  # base64 of "evil": what its OSC 52 sequences write


def _q(s) -> str:
    return "'" + str(s).replace("'", "'\"'\"'") + "'"


class Tmux:
    def __init__(self, tmp_path):
        self.sock = f"wt-hostile-{os.getpid()}-{time.monotonic_ns()}"
        self.rc_file = tmp_path / "rc"

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, check=check,
                              timeout=30)

    def start(self, shell: str, name: str) -> None:
        if self.tmux("has-session", check=False).returncode != 0:
            self.tmux("new-session", "-d", "-n", "idle", "-x", "160", "-y", "45", "sleep", "300")
            self.tmux("set-option", "-g", "set-clipboard", "on")  # OSC 52 from a pane makes a paste buffer
        self.tmux("new-window", "-d", "-n", name, "sh", "-c", shell)

    def title(self, window: str) -> str:
        return self.tmux("display-message", "-p", "-t", f":={window}", "#{pane_title}").stdout.strip()

    def buffers(self) -> str:
        return self.tmux("list-buffers", "-F", "#{buffer_sample}", check=False).stdout

    def screen(self, window: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", f":={window}").stdout

    def wait_for(self, window: str, pattern: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen(window)
            if re.search(pattern, text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on screen within {timeout}s; screen was:\n{text}")

    def keys(self, window: str, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", f":={window}", key)
            if key == "Escape":
                time.sleep(0.4)  # an ESC right before another key reads as alt+key


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.tmux("kill-server", check=False)


def test_hostile_names_leave_the_terminal_alone(tmux, tmp_path):
    path = tmp_path / "hostile.wtui"
    subprocess.run([sys.executable, str(HOSTILE_LOG), str(path)], check=True, timeout=60)

    # The control: a plain shell printing such bytes does retitle the pane and fill a buffer.
    tmux.start(f"printf '\\033]0;{TITLE}\\007\\033]52;c;{CLIPBOARD}\\007'; sleep 120", "control")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and tmux.title("control") != TITLE:
        time.sleep(0.1)
    assert tmux.title("control") == TITLE
    assert "evil" in tmux.buffers()
    tmux.tmux("kill-window", "-t", ":=control")
    tmux.tmux("delete-buffer", check=False)
    assert "evil" not in tmux.buffers()

    cmd = f"cd {_q(os.getcwd())}; env -u COLUMNS -u LINES {_q(sys.executable)} -m weighttui.cli replay {_q(path)}"
    tmux.start(f"{cmd}; echo $? > {_q(tmux.rc_file)}; sleep 120", "viewer")
    title_before = tmux.title("viewer")

    def untouched(where: str, expect: str) -> None:
        screen = tmux.wait_for("viewer", expect)
        assert tmux.title("viewer") == title_before != TITLE, f"{where}: the pane was retitled"
        assert "evil" not in tmux.buffers(), f"{where}: a log string wrote the clipboard"
        assert "PWNED-TITLE" in screen, f"{where}: the hostile text is not shown (escaped)"

    tmux.wait_for("viewer", r"FINISHED")
    tmux.keys("viewer", "End")  # replay starts at the first snapshot
    screen = tmux.wait_for("viewer", r"step 110")
    untouched("overview", r"\\x1b\]0;PWNED-TITLE\\x07")
    assert "weighttui · hostile.wtui" in screen.splitlines()[0]  # the header was not wiped
    assert re.search(r"\\x1b\[2J\\x1b\[H", screen)  # the framework's clear-screen, shown not obeyed

    tmux.keys("viewer", "exclamation_mark")  # alerts: the NaN tensor named "x[/]"
    untouched("alerts", r"x\[/\]")
    tmux.keys("viewer", "Escape")
    # The detail screens of the first tensors (names with OSC title, clear, OSC 52, OSC 8, C1 CSI ...):
    # enter on the first tensor row (below its group row, unless the cursor starts on it), then ] walks on.
    tmux.keys("viewer", "Enter")
    time.sleep(0.5)
    if not re.search(r"view\s+w:weights", tmux.screen("viewer")):
        tmux.keys("viewer", "Enter", "Down", "Enter")  # it was a group row: unfold it again, go down
    for i in range(7):
        screen = tmux.wait_for("viewer", r"view\s+w:weights")
        assert tmux.title("viewer") == title_before and "evil" not in tmux.buffers(), screen
        tmux.keys("viewer", "d" if i % 2 else "w", "]")
    tmux.keys("viewer", "Escape")
    tmux.keys("viewer", "c")
    untouched("change table", r"changes at step")
    tmux.keys("viewer", "Escape", "q")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (tmux.rc_file.exists() and tmux.rc_file.read_text().strip()):
        time.sleep(0.1)
    assert tmux.rc_file.read_text().strip() == "0"
    assert tmux.title("viewer") == title_before
