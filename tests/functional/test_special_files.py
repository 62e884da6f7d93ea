"""A FIFO or a socket where a run log is expected: every reader refuses it with
one line, nothing blocks (issue 19, item 14; the writer side is in
test_recorder_promises.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import weighttui
from weighttui.log.format import LogFormatError
from weighttui.log.tail import LogTail

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


@pytest.fixture(params=["fifo", "socket"])
def special(request, tmp_path):
    path = tmp_path / "run.sock"
    if request.param == "fifo":
        os.mkfifo(path)
        yield path
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        yield path
        s.close()


def test_python_readers_refuse_it(special):
    for read in (lambda: weighttui.open(special), lambda: LogTail(special).poll()):
        with pytest.raises(LogFormatError, match="not a regular file"):
            read()


@pytest.mark.parametrize("argv", [["info"], ["info", "--json"], ["export", "--format", "csv"], ["watch"], ["replay"]])
def test_the_cli_refuses_it_with_one_line(special, tmp_path, argv):
    cmd = [sys.executable, "-m", "weighttui.cli", argv[0], str(special), *argv[1:]]
    if argv[0] == "export":
        cmd += ["--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0], proc.stderr
