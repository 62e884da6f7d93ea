"""Names and messages from a log are shown as text, never read as Rich markup."""

from __future__ import annotations

import re

import numpy as np
import pytest

import weighttui
from weighttui.tui.app import WeightApp

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

HOSTILE = ["[bold red]evil", "attn[q].weight", "x[/]", "[link=x]click"]


def screen_text(app) -> str:
    svg = app.export_screenshot()
    parts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    return "".join(p.replace("&#160;", " ").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
                   for p in parts)


async def test_hostile_names_render_literally(tmp_path):
    path = tmp_path / "markup.wtui"
    with weighttui.Recorder(path) as rec:
        for step in range(3):
            rec.snapshot(step, {name: np.arange(4.0) + step for name in HOSTILE},
                         scalars={"[b]loss": 1.0 / (step + 1)})
    app = WeightApp(str(path), mode="replay", alerts=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("end")
        await pilot.pause(0.3)
        text = screen_text(app)
        for name in ("[bold red]evil", "[link=x]click", "[b]loss", "attn[q]"):
            assert name in text, name
        app.open_tensor("[bold red]evil")
        await pilot.pause(0.5)
        assert "[bold red]evil" in screen_text(app)
        await pilot.press("escape", "c")
        await pilot.pause(0.5)
        text = screen_text(app)
        assert "[bold red]evil" in text and "[link=x]click" in text
