"""What ended a run (the end record's error_type/error_message) is shown in the
header and in `info`, made inert like every log string (issue 18, item 10)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from weighttui import Recorder
from weighttui.tui.app import WeightApp
from weighttui.tui.widgets.header import RunHeader

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def failed_log(path):
    with pytest.raises(ValueError), Recorder(path, bins=8) as rec:
        rec.snapshot(0, {"w": np.ones(3)})
        raise ValueError("loss is nan\x1b]0;pwned\x07")
    return path


async def test_the_header_says_what_ended_the_run(tmp_path):
    app = WeightApp(failed_log(tmp_path / "run.wtui"), mode="replay", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        for _ in range(100):
            text = app.screen.query_one(RunHeader).content.plain
            if "FAILED" in text:
                break
            await pilot.pause(0.05)
        assert "FAILED" in text and "ValueError: loss is nan\\x1b]0;pwned\\x07" in text
        assert "\x1b" not in text


def test_info_says_what_ended_the_run(tmp_path):
    path = failed_log(tmp_path / "run.wtui")
    out = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "status:" in ln)
    assert "failed (ValueError: loss is nan\\x1b]0;pwned\\x07)" in line and "\x1b" not in out.stdout
    js = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", "--json", str(path)],
                        capture_output=True, text=True, timeout=60)
    assert json.loads(js.stdout)["ended_by"] == "ValueError: loss is nan\x1b]0;pwned\x07"
