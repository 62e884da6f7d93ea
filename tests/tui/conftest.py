"""Helpers for the TUI tests: the logs of tests/logbuilder.py, and waiting in Pilot."""

from __future__ import annotations

import time

import pytest
from logbuilder import DATA, FIXED_TIME, FixedLog, fixed_log, layer_params, recorder_log


async def wait_until(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds (fails the test after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def static_text(widget) -> str:
    """The plain text a Static (header, timeline, ...) shows now."""
    return str(widget.content) if not hasattr(widget.content, "plain") else widget.content.plain


def cell_text(table, row_key: str, column_key: str) -> str:
    return table.get_cell(row_key, column_key).plain


@pytest.fixture
def utc(monkeypatch):
    """Render times as UTC so 'started ...' is the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()




class _Helpers:
    """Everything above, handed to tests as the `tui` fixture (tests never import conftest)."""

    DATA = DATA
    FIXED_TIME = FIXED_TIME
    FixedLog = FixedLog
    fixed_log = staticmethod(fixed_log)
    layer_params = staticmethod(layer_params)
    write_recorder_log = staticmethod(recorder_log)
    wait_until = staticmethod(wait_until)
    static_text = staticmethod(static_text)
    cell_text = staticmethod(cell_text)


@pytest.fixture
def tui():
    return _Helpers


@pytest.fixture
def anyio_backend():
    return "asyncio"
