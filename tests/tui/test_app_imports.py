"""`weighttui watch` must start without importing a training framework (fast first screen on a bare box)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")

# Runs the real app headless on a log, then reports which framework modules got imported.
PROBE = f"""
import asyncio, sys
from weighttui.cli import build_parser
import weighttui.tui.app as appmod

async def main(path):
    app = appmod.WeightApp(path, mode="watch", alerts=True)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(1000):
            if app.data.n:
                break
            await pilot.pause(0.02)
        await pilot.pause(0.2)
        assert app.data.n, "log not loaded"
        await pilot.press("enter", "escape", "c", "escape", "exclamation_mark", "escape")

asyncio.run(main(sys.argv[1]))
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})))
"""


@pytest.mark.timeout(120)
def test_watch_does_not_import_frameworks(tmp_path, tui):
    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 5)
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), out.stdout


def test_only_tui_imports_textual():
    """The app's non-UI helpers (follower) stay free of textual, so they can be reused headless."""
    code = "import sys, weighttui.data.follower; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_first_screen_defers_what_it_does_not_draw(tmp_path, tui):
    """Until the first screen is up, `weighttui watch` imports no recorder (a training-side module), no
    plotext and no detail/change/alerts screen: they load when first used (issue 18, item 17)."""
    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 5)
    code = """
import asyncio, sys
from weighttui.cli.main import build_parser
import weighttui.tui.app as appmod

async def main(path):
    app = appmod.WeightApp(path, mode="watch", alerts=True)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(1000):
            if app.first_data_at is not None:
                break
            await pilot.pause(0.02)
        assert app.data.n
        print(",".join(sorted(m for m in sys.modules if m.startswith(("plotext", "textual_plotext",
              "weighttui.record", "weighttui.tui.screens.detail", "weighttui.tui.screens.change_table",
              "weighttui.tui.screens.alerts")))))

asyncio.run(main(sys.argv[1]))
"""
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), out.stdout
