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


# `weighttui watch LOG` through the CLI's own entry (cli.main.main), with Textual headless: which modules
# are loaded when the first frame has been displayed (Textual's Ready event), and after the table is up.
FIRST_PAINT_PROBE = """
import json, sys
import textual.app

_run = textual.app.App.run
textual.app.App.run = lambda self, *a, **kw: _run(self, *a, **{**kw, "headless": True})

import weighttui.tui.app as appmod  # what cmd_watch imports first, here so that on_ready can be wrapped

seen = {}
ready = getattr(appmod.WeightApp, "on_ready", lambda self: None)

def on_ready(self):
    seen["at_paint"] = sorted(sys.modules)
    seen["screen"] = type(self.screen).__name__
    ready(self)

    def shown():
        if self.first_data_at is not None:
            seen["after"] = sorted(sys.modules)
            seen["step"] = int(self.data.steps[-1])
            self.exit(0)
    self.set_interval(0.02, shown)

appmod.WeightApp.on_ready = on_ready
from weighttui.cli.main import main

seen["rc"] = main(["watch", sys.argv[1]])
print(json.dumps(seen))
"""

# What the first paint must not wait for (issue 18, item 17): numpy and everything built on it.
NOT_BEFORE_FIRST_PAINT = ("numpy", "plotext", "textual_plotext", "weighttui.data.store", "weighttui.data.run",
                          "weighttui.record", "weighttui.analysis.diagnose", "weighttui.tui.screens.overview",
                          "weighttui.tui.widgets.layer_table")


@pytest.mark.timeout(120)
def test_watch_paints_its_first_frame_before_numpy_and_the_store(tmp_path, tui):
    import json

    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 5)
    out = subprocess.run([sys.executable, "-c", FIRST_PAINT_PROBE, str(path)], capture_output=True, text=True,
                         timeout=100)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["rc"] == 0 and seen["screen"] == "StartScreen"
    early = [m for m in seen["at_paint"] if m.split(".")[0] in NOT_BEFORE_FIRST_PAINT
             or m.startswith(NOT_BEFORE_FIRST_PAINT)]
    assert early == [], f"imported before the first paint: {early}"
    # ... and they are loaded right after it: the overview showed the log's last step
    assert seen["step"] == 40 and "numpy" in seen["after"] and "weighttui.data.run" in seen["after"]
