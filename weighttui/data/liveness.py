"""Is the run's writer still at work? The one rule every reader uses.

A log says how a run ended only in its end record. Before that the reader has two
clues: whether the writer's process still exists (its host and pid are in the run
record; only meaningful on the same host), and how long ago the file last grew.

- `weighttui.open(path).status` ("running" / "unfinished"), `weighttui info`,
- the single-run viewer and the multi-run viewer ("live" / "stalled")

all decide with these functions and constants.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weighttui.data.run import RunData
    from weighttui.log.records import RunRecord

STALL_DEAD_S = 10.0  # no growth this long and the writer's pid is gone: stalled
STALL_ANY_S = 30.0  # no growth this long: stalled whatever the pid says (another host, no pid)


def writer_process(run: RunRecord | None) -> bool | None:
    """True: the writer's process exists; False: it is gone; None: cannot tell (another host, no pid)."""
    if run is None or not run.pid or not run.host or run.host != socket.gethostname():
        return None
    if not 0 < run.pid < 2**31:  # no process has it (0 and negatives name process groups): a log's lie
        return None
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def writer_dead(data: RunData) -> bool:
    """True only when the writer ran on this host and its pid is gone."""
    return writer_process(data.run) is False


def growth_age(path, last_growth: float | None = None, now: float | None = None) -> float | None:
    """Seconds since the file last grew, or None when nothing tells.

    The file's mtime against `now` (wall clock); where the clocks disagree (a
    network file system's mtime in the future) or the file cannot be stat'ed,
    what this reader saw: `last_growth`, the monotonic time it last read new bytes.
    """
    seen = None if last_growth is None else time.monotonic() - last_growth
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except (OSError, TypeError, ValueError):  # gone, unreadable, or no path (a mirror not yet fetched)
        return seen
    if age < 0 and seen is not None:
        return seen
    return age


def stalled(data: RunData, age: float | None, writer_gone: bool | None = None) -> bool:
    """No growth for STALL_ANY_S, or for STALL_DEAD_S when the writer's process is gone.

    `writer_gone`: a known answer, or None to ask the pid (only once the age makes it matter).
    """
    if age is None or age < STALL_DEAD_S:
        return False
    if age >= STALL_ANY_S:
        return True
    return writer_dead(data) if writer_gone is None else writer_gone


def run_status(data: RunData, *, waiting: str | bool | None = None, loading: bool = False,
               growth_age: float | None = None, writer_dead: bool | None = None) -> str:
    """What a viewer shows: waiting / loading / live / stalled, or the end record's finished / failed / interrupted.

    `growth_age`: seconds since the file last grew (None: unknown, not stalled).
    `writer_dead`: known, or None to ask the pid when the age makes it matter.
    """
    if waiting or data.run is None:
        return "waiting"
    if data.end is not None:
        return data.end.status
    if loading:
        return "loading"
    return "stalled" if stalled(data, growth_age, writer_dead) else "live"


def writer_running(data: RunData) -> bool:
    """RunData.status's "running": the pid where it can be asked, else growth within STALL_ANY_S."""
    alive = writer_process(data.run)
    if alive is not None:
        return alive
    if data.path is None:
        return False
    age = growth_age(data.path, data.last_growth)
    return age is not None and age < STALL_ANY_S
