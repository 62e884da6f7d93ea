"""The viewer on a log whose start is damaged (issue 19, item 9): it reads from the first header
or frame after the damage, says that a record was skipped (the same indication as any other
damage), and follows what the writer appends after it."""

from __future__ import annotations

import os
import time

import pytest

from weighttui import Recorder
from weighttui.tui.app import WeightApp
from weighttui.tui.widgets.header import RunHeader

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def header(app) -> str:
    return app.screen.query_one(RunHeader).content.plain


def _snapshot(rec, step, tui):
    params = tui.layer_params(step)
    rec.snapshot(step, params, grads={k: v * 0.1 for k, v in params.items()}, scalars={"loss": 1.0 / (1 + step)})


async def test_replay_shows_a_damaged_start_as_a_skipped_record(tmp_path, tui):
    path = tmp_path / "run.wtui"
    tui.write_recorder_log(path, steps=6)
    path.write_bytes(os.urandom(2000) + path.read_bytes())  # garbage before the header
    app = WeightApp(path, mode="replay", alerts=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await tui.wait_until(pilot, lambda: app.data.n == 6 and app.data.end is not None, what="the whole run")
        await tui.wait_until(pilot, lambda: "1 corrupt record skipped" in header(app), what="the damage shown")
        assert app.data.corruptions == [0] and "2000 bytes skipped" in app.data.corruption_reasons[0]
        assert app.return_code is None and app.error_message is None


async def test_watch_follows_a_live_log_whose_start_was_overwritten(tmp_path, tui):
    path = tmp_path / "live.wtui"
    rec = Recorder(path, bins=16)
    try:
        _snapshot(rec, 0, tui)
        deadline = time.monotonic() + 20
        while rec.written < rec.queued and time.monotonic() < deadline:  # the writer thread wrote it
            time.sleep(0.01)
        assert rec.written == rec.queued
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"\0" * 8, 0)  # the magic bytes overwritten under the live writer
        os.close(fd)
        app = WeightApp(path, mode="watch", alerts=False)
        async with app.run_test(size=(120, 30)) as pilot:
            await tui.wait_until(pilot, lambda: app.data.n == 1, what="the first snapshot")
            await tui.wait_until(pilot, lambda: "1 corrupt record skipped" in header(app), what="the damage shown")
            for step in (1, 2, 3):
                _snapshot(rec, step, tui)
            await tui.wait_until(pilot, lambda: app.data.n == 4, what="the snapshots appended after it")
            await tui.wait_until(pilot, lambda: "step 3" in header(app), what="step 3 on screen")
            assert app.data.corruptions == [0] and app.error_message is None
    finally:
        rec.close()
