"""The run header: who wrote the log, its status, where the run is, log health.

Two lines of text built from a `RunView` (the app's state as values), so
every screen can show the same header.
"""

from __future__ import annotations

import os
import time

from rich.text import Text
from textual.widgets import Static

from weighttui.log.text import inert
from weighttui.tui.formatting import fmt_age, fmt_bytes, fmt_rate
from weighttui.tui.state import RunView

STATUS_STYLE = {
    "live": "bold green", "finished": "bold blue", "failed": "bold red", "interrupted": "bold yellow",
    "stalled": "bold red", "waiting": "bold yellow", "loading": "bold cyan",
}


def _clock_time(t: float | None) -> str:
    """A time from the log as local date and time; "?" for none or one no clock shows (inf, NaN)."""
    if not t:
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    except (OverflowError, ValueError, OSError):
        return "?"


TITLE_CELLS = 60  # a longer title (a deep path, host:path over ssh) is cut in its middle


def short_title(title: str, cells: int = TITLE_CELLS) -> str:
    """The title cut in its middle to `cells` characters: its start and its end (the file
    name, "(over ssh)") stay, and the status after it stays on screen at 80 columns."""
    if len(title) <= cells:
        return title
    head = cells // 3
    return title[:head] + "…" + title[-(cells - head - 1):]


def header_text(view: RunView) -> Text:
    data = view.data
    status = view.status
    line1 = Text(no_wrap=True, overflow="ellipsis")
    line1.append(short_title(inert(view.title)), style="bold")
    run = data.run
    # The status (and PAUSED) right after the title: on a narrow terminal the line is cut at its end,
    # where the host and start time can go.
    line1.append("  ")
    line1.append(f" {status.upper()} ", style="reverse " + STATUS_STYLE.get(status, "bold"))
    reason = None if data.end is None else data.end.reason  # the exception or signal that ended it
    if reason:
        line1.append(" " + inert(reason), style="bold red")
    if view.display_paused:
        line1.append("  ")
        line1.append(" PAUSED ", style="reverse bold yellow")
        if view.paused_new:
            line1.append(f" +{view.paused_new} new")
    if view.run_count > 1 or view.run_number > view.run_count:  # an appended log: say which run this is
        line1.append("  ")
        line1.append(f"run {view.run_number} of {view.run_count}", style="bold")
    if run is not None:
        started = _clock_time(run.created)
        bits = [inert(run.framework or "?"), inert(run.host or "?"), f"started {started}"]
        line1.append("  " + " · ".join(bits), style="dim")

    line2 = Text(no_wrap=True, overflow="ellipsis")
    if view.waiting == "missing":
        line2.append(f"waiting for {inert(os.path.basename(view.path))} to appear…", style="yellow")
        return Text("\n").join([line1, line2])
    if view.waiting == "no header" or run is None:
        line2.append(f"waiting for the run to start in {inert(os.path.basename(view.path))}…", style="yellow")
        return Text("\n").join([line1, line2])
    meta = view.meta  # the position's step and epoch, also between a thinned row view's rows
    if meta is not None:
        step, epoch, _time = meta
        line2.append("step ", style="dim")
        line2.append(f"{step}", style="bold")
        if epoch >= 0:
            line2.append("  epoch ", style="dim")
            line2.append(f"{epoch}", style="bold")
    else:
        line2.append("no snapshot yet", style="dim")
    if view.loading is not None:  # read and indexed so far (a big log: its latest snapshots are shown meanwhile)
        line2.append(f"  indexing {view.loading:.0%}", style="bold cyan")
        if view.previewing:
            line2.append(", history follows", style="cyan")  # the latest snapshots are shown meanwhile
        elif view.mode == "watch" and view.position is None:
            # read from its start (no preview: a walk over its deadline on a huge log, a damaged
            # header): the step shown is how far the reading got, not the run's latest
            line2.append(", the latest follows", style="cyan")
    parts = []
    rate = view.snapshot_rate
    if rate is not None:
        parts.append(fmt_rate(rate))
    parts.append(f"last record {fmt_age(view.since_last_record)} ago")
    parts.append(fmt_bytes(data.file_size))
    line2.append("  · " + " · ".join(parts), style="dim")
    if data.corruptions:
        n = len(data.corruptions)
        line2.append(f"  ⚠ {n} corrupt record{'s' if n != 1 else ''} skipped", style="bold yellow")
    if view.torn_bytes:
        line2.append(f"  incomplete final record, {view.torn_bytes} bytes ignored", style="yellow")
    if data.resets:
        line2.append(f"  reloaded ×{data.resets}", style="yellow")
    return Text("\n").join([line1, line2])


def start_header_text(title: str, path: str, size: int | None) -> Text:
    """The header of the first frame, before the log is read: the title, LOADING, the file and its size."""
    line1 = Text(no_wrap=True, overflow="ellipsis")
    line1.append(short_title(inert(title)), style="bold")
    line1.append("  ")
    line1.append(" LOADING ", style="reverse " + STATUS_STYLE["loading"])
    line2 = Text(no_wrap=True, overflow="ellipsis")
    name = inert(os.path.basename(path))
    if size is None:
        line2.append(f"opening {name}…", style="dim")
    else:
        line2.append(f"opening {name} · {fmt_bytes(size)}…", style="dim")
    return Text("\n").join([line1, line2])


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader { height: 2; background: $panel; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def show(self, view: RunView) -> None:
        self.update(header_text(view))
