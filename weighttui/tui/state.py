"""The TUI contract: what screens and widgets read, and how they ask the app for something.

- `RunView`: a frozen snapshot of the single-run viewer's state (the RunData,
  the timeline row, status, alerts ...), built by the app each time a screen
  draws. Widgets are handed the values they draw, never the App.
- `RunHost` / `RunsHost`: what a screen may call on its app (the single-run
  viewer, or a test host; the multi-run viewer).
- `SeekStep`: a widget asking the app to move the timeline (messages go up).
- `RedrawRequest`: a widget whose size changed asking its screen to draw it
  again from a fresh view (a widget never keeps a view: the data moves on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rich.text import Text
from textual.message import Message

if TYPE_CHECKING:  # annotations only: the first screen of `watch` is painted before numpy and the reader load
    from weighttui.analysis.diagnose import Alert
    from weighttui.analysis.multirun import Metric, RunRow
    from weighttui.data.run import RowsUpTo, RunData
    from weighttui.tui.multi_app import RunSlot


@dataclass(frozen=True)
class RunView:
    """One run as the screens show it now."""

    data: RunData
    row: int  # the effective row: the position, else the latest (-1 with no snapshots)
    position: int | None  # None: following the latest snapshot
    alerts: Sequence[Alert] = ()
    alerts_by_tensor: Mapping[str, Sequence[Alert]] = field(default_factory=dict)
    alerts_as_of: int | None = None  # the step the alerts were diagnosed up to (None: the latest)
    tensor_order: Sequence[str] = ()  # the overview's order, which the detail screen's [ ] walk
    mode: str = "replay"
    playing: bool = False
    speed: int = 10
    # the header's parts
    title: str = ""
    path: str = ""
    status: str = "live"
    waiting: str | None = None
    loading: float | None = None  # fraction read while a big log loads
    previewing: bool = False  # `data` holds a big log's latest snapshots while the whole log is indexed
    display_paused: bool = False
    paused_new: int = 0
    since_last_record: float | None = None
    snapshot_rate: float | None = None
    torn_bytes: int = 0
    run_number: int = 1  # which run of an appended log is shown (1-based) ...
    run_count: int = 1  # ... of how many runs the log holds
    # The position's snapshot (its index among all the run's) when the row view lacks it: the
    # replay cursor walks every snapshot (← →), the row view may be thinned (`max_rows`). `row`
    # is then the row at or before it; what is shown *at* the position is read from the store
    # (`RunData.snapshot_meta/snapshot_stats`), the histories up to it come from the row view.
    # None: the position is `row` itself.
    snapshot: int | None = None

    @cached_property
    def meta(self) -> tuple[int, int, float] | None:
        """(step, epoch (-1: unknown), time) at the position; None without snapshots."""
        data = self.data
        if self.snapshot is not None:
            steps, epochs, times = data.snapshot_meta(self.snapshot, self.snapshot + 1)
            if steps.size:
                return int(steps[0]), int(epochs[0]), float(times[0])
        if not 0 <= self.row < data.n:
            return None
        return int(data.steps[self.row]), int(data.epochs[self.row]), float(data.times[self.row])

    @cached_property
    def upto(self) -> tuple[RunData | RowsUpTo, int]:
        """(rows, last row) as of the position (the latest when following), at full resolution near
        it: what the layer table's sort and the change table are computed on (and the app's alerts
        at a replay position). A row view that is not thinned: the RunData and `row` (its rows
        0..row); a thinned one: `RunData.upto_snapshot`, whose last row is the position's snapshot."""
        if self.row < 0:
            return self.data, self.row
        rows = self.data.upto_snapshot(self.snapshot_number)
        return (rows, self.row) if rows is self.data else (rows, rows.n - 1)

    @property
    def snapshot_number(self) -> int:
        """The position's index among all the run's snapshots (-1 without snapshots)."""
        if self.snapshot is not None:
            return self.snapshot
        if not 0 <= self.row < self.data.n:
            return -1
        return int(self.data.snapshot_index[self.row])

    @property
    def step(self) -> int | None:
        """The step at the position (exact, also between the row view's rows)."""
        meta = self.meta
        return None if meta is None else meta[0]

    @property
    def epoch(self) -> int:
        meta = self.meta
        return -1 if meta is None else meta[1]


@runtime_checkable
class RunHost(Protocol):
    """The app behind the single-run screens."""

    def view(self) -> RunView: ...

    def open_tensor(self, name: str) -> None: ...

    def set_tensor_order(self, names: list[str]) -> None:
        """The overview's order of tensors (folded groups included), which the detail screen's [ ] walk."""


@runtime_checkable
class RunsHost(Protocol):
    """The app behind the multi-run screens."""

    slots: list[RunSlot]
    directory: str | None
    mode: str
    ignored: dict[str, str]
    tensor: str | None
    log_y: bool

    @property
    def metric(self) -> Metric: ...

    def run_rows(self) -> list[RunRow]: ...

    def title_line(self) -> Text: ...

    def ignored_names(self) -> dict[str, str]: ...

    def tensor_names(self) -> list[str]: ...

    def metric_position(self) -> str: ...

    def cycle_metric(self, direction: int = 1) -> None: ...

    def open_run(self, path: str) -> None: ...

    def threshold_options(self) -> list[str]: ...


DIRECTORY_APPEARED = -1  # app.run_app(..., directory_ok=True): the path it waited for appeared as a directory


class SeekStep(Message):
    """Move the timeline to the last snapshot at or before `step` (a click on the timeline or a heatmap)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step


class RedrawRequest(Message):
    """A widget needs its screen to draw again (it was resized); one pending request stands for many."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RedrawRequest)
