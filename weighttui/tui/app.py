"""The Textual app behind `weighttui watch` and `weighttui replay`.

State every screen reads (see the TUI contract in the docs):

- `app.data`: the RunData, mutated only here on the UI thread. The follower
  thread reads and decodes frames; `_drain()` ingests them in time-boxed
  batches so a big log loads without freezing the keys.
- `app.position` / `app.row`: the timeline. The position is remembered as a
  step, so it survives RunData thinning old history (rows move, steps don't).
- `app.alerts` from `weighttui.analysis.diagnose` (if present), at most once a second.

Screens get values, not the app: `view()` builds a frozen `RunView` each time
a screen draws (`weighttui.tui.state`), and the app redraws the active screen
through `RefreshableScreen.refresh_view()` (`weighttui.tui.screens.base`).
Ingest and redraws go through the `Pump` shared with the multi-run app:
redraws are coalesced to at most `MAX_REFRESH_HZ` a second; timeline moves
redraw at once. Bad input found while running (the file replaced by
something that is not a log, a newer format) ends the app with status 2 and
a one-line message, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer

from weighttui.data.liveness import growth_age, run_status
from weighttui.log.format import HEADER_SIZE
from weighttui.log.text import inert
from weighttui.tui.pump import IndexSaver, Pump
from weighttui.tui.screens.base import RefreshableScreen
from weighttui.tui.state import DIRECTORY_APPEARED, RunView, SeekStep
from weighttui.tui.widgets.header import RunHeader, start_header_text

if TYPE_CHECKING:  # the rest loads after the first frame (`_boot`): see StartScreen
    from types import ModuleType

    from weighttui.analysis.diagnose import Alert, DiagnoseConfig
    from weighttui.data.follower import Delivery, Follower
    from weighttui.data.run import RunData

MAX_REFRESH_HZ = 10
SPEEDS = (1, 2, 5, 10, 20, 50, 100, 200)  # snapshots per second when playing
SCREENSHOT_DIR_ENV = "WEIGHTTUI_SCREENSHOT_DIR"  # where ctrl+s saves (default: the current directory)


# A viewer that has caught up with a log writes the log's index at most this often (data/store;
# the multi-run app keeps each run's index by the same rule).
INDEX_SAVE_S = 10.0
# CPU the alert rules take at most per call on the UI thread (about: they stop after the block of
# 4,096 snapshots during which it ran out): the first call on a log of many GiB reads its whole
# history, and is spread over several calls 50 ms apart instead of freezing the screen
ALERTS_BUDGET_S = 0.15
BOOT_FALLBACK_S = 1.0  # `_boot` runs at the first frame, or after this long without one
# Actions that work before the first screen is replaced by the overview (see `_boot`).
BOOT_ACTIONS = frozenset({"quit", "save_svg"})
# `watch` on a log with at least data/latest.PREVIEW_MIN_BYTES not covered by an index shows its
# latest snapshots first while the whole log is indexed (None: that rule; tests lower it here).
PREVIEW_MIN_BYTES: int | None = None


class StartScreen(Screen[None]):
    """The first frame: the header alone (title, LOADING, the file and its size).

    `weighttui watch` paints this before numpy, the reader, the alert rules and the
    table's modules are imported (issue 18, item 17: a bare Textual app's start is the
    floor); the app then loads them (`WeightApp._boot`) and switches to the overview.
    """

    def __init__(self, title: str, path: str):
        super().__init__()
        self._title = title
        self._path = path

    def compose(self) -> ComposeResult:
        try:
            size: int | None = os.stat(self._path).st_size
        except OSError:
            size = None
        yield RunHeader(start_header_text(self._title, self._path, size), id="header")

    def _pop_result_callback(self) -> None:
        # Textual's switch_screen pops the replaced screen's result callback, which only a pushed
        # screen has; the app's default screen has none (Textual 8). The overview replaces this one,
        # so that it is the bottom of the stack as before (esc on it does not uncover a blank screen).
        if self._result_callbacks:
            super()._pop_result_callback()


class WeightApp(App[int]):
    CSS_PATH = os.path.join(os.path.dirname(__file__), "app.tcss")  # absolute: also for subclasses elsewhere
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("left", "step(-1)", "back", show=False),
        Binding("right", "step(1)", "forward", show=False),
        # ← → walk every snapshot of the log; shift+← → ten rows of the timeline's track (the row
        # view: ten snapshots, or ten of its rows when a long run is thinned by --max-rows)
        Binding("shift+left", "step_rows(-10)", "back 10", show=False),
        Binding("shift+right", "step_rows(10)", "forward 10", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end", "last", "latest", show=False),
        Binding("space", "play", "play"),
        Binding("plus,equals_sign", "speed(1)", "faster", show=False),
        Binding("minus", "speed(-1)", "slower", show=False),
        # Shown in `?` rather than the footer, which must fit 80 columns with each screen's own keys.
        # `:` too: on the tensor screen `g` shows the gradients
        Binding("g,colon", "goto", "go to", show=False),
        Binding("p", "pause", "pause", show=False),
        Binding("c", "changes", "changes"),
        Binding("exclamation_mark", "alerts", "alerts"),
        # priority: it works on modal screens (help, go to) and while the filter box has focus.
        Binding("ctrl+s", "save_svg", "svg", priority=True, show=False),
        Binding("escape", "back", "back", show=False),
    ]

    def __init__(self, path, *, mode: str = "watch", title: str | None = None, max_rows: int | None = 2048,
                 clock: Callable[[], float] | None = None, alerts: bool = True,
                 follower_options: dict | None = None, diagnose_config: DiagnoseConfig | None = None,
                 run: int | None = None):
        if mode not in ("watch", "replay"):
            raise ValueError(f"mode must be 'watch' or 'replay', not {mode!r}")
        super().__init__()
        self.path = os.fspath(path)
        self.mode = mode
        self.title_text = inert(title or f"weighttui · {os.path.basename(self.path)}")
        self.title = self.title_text
        # `clock` (wall time) is injectable so snapshot tests can freeze "time since".
        self.clock = clock or time.time
        self._max_rows = max_rows
        self._run = run  # which run of an appended log (None: the latest)
        self._data: RunData | None = None  # made on first use: `data`
        # While a big log is indexed, `data` holds only its latest snapshots (data/latest.py) and the
        # follower's deliveries go to this one, which replaces `data` once it has caught up.
        self._building: RunData | None = None
        self._booted = False  # the overview replaced the start screen (`_boot`)
        self.alerts: list[Alert] = []
        self.diagnose_config = diagnose_config  # DiagnoseConfig (watch --threshold) or None: defaults
        self.alerts_by_tensor: dict[str, list[Alert]] = {}
        self.alerts_as_of: int | None = None  # the position's step the alerts are as of (None: the latest)
        self.tensor_order: list[str] = []
        self.change_marks: dict[str, int | None] = {}  # the change table's marks a / b (steps), kept across visits
        self.waiting: str | None = None
        self.loading: float | None = None  # fraction read while a big log loads
        self.error_message: str | None = None
        self.display_paused = False
        self.paused_new = 0
        self.playing = False
        self.speed = 10
        self.refreshes = 0
        self.last_refresh_at: float | None = None  # monotonic, for tests and the benchmark
        self.first_data_at: float | None = None  # monotonic: the first refresh that had snapshots
        self._pos_step: int | None = None
        self._pause_step: int | None = None
        self._started = False  # replay: moved to the first snapshot once it arrived
        self._pending_bytes = 0
        self._index_saved = time.monotonic()
        self._shown_data = False  # a screen with snapshots has been drawn (see Pump's paint_first)
        self._play_timer: Timer | None = None
        self._resets_seen = 0
        self._alerts_enabled = alerts
        self._diagnose: ModuleType | None = None
        self._alerts_dirty = False
        self._alerts_at = 0.0
        self._follower_options = follower_options or {}
        self.follower: Follower | None = None
        self.index_saver = IndexSaver(self)
        self.pump: Pump[None] = Pump(
            self, sources=lambda: [(None, self.follower)], ingest=lambda _key, item: self._ingest(item),
            failed=lambda _key, failure: self._fail(failure.message), redraw=self._draw, hz=MAX_REFRESH_HZ,
            paint_first=lambda: not self._shown_data and self.data.n > 0, ready=self._screen_ready)

    @property
    def data(self) -> RunData:
        """The run on screen (RunData, mutated only on the UI thread). Made on first use, so that
        the first frame is painted before the reader (and numpy) is imported."""
        if self._data is None:
            from weighttui.data.run import RunData

            self._data = RunData(self.path, max_rows=self._max_rows, run_index=self._run)
        return self._data

    @data.setter
    def data(self, value: RunData) -> None:
        self._data = value

    def _screen_ready(self) -> bool:
        """The screen can draw: a delivery ingested before would be read on past, not shown."""
        screen = self.screen if self.screen_stack else None
        return self._booted and screen is not None and screen.is_mounted

    def get_default_screen(self) -> Screen:
        return StartScreen(self.title_text, self.path)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Until the overview is up (a fraction of a second) only quit and ctrl+s do anything."""
        return self._booted or action in BOOT_ACTIONS

    # ------------------------------------------------------------- the view

    def view(self) -> RunView:
        """What the screens draw now (the TUI contract: screens and widgets read this, not the app)."""
        status = self.run_status()
        return RunView(
            data=self.data, row=self.row, position=self.position, alerts=tuple(self.alerts),
            alerts_by_tensor=self.alerts_by_tensor, alerts_as_of=self.alerts_as_of,
            tensor_order=tuple(self.tensor_order), mode=self.mode,
            playing=self.playing, speed=self.speed, title=self.title_text, path=self.path, status=status,
            waiting=self.waiting, loading=self.loading, previewing=self._building is not None,
            display_paused=self.display_paused,
            paused_new=self.paused_new, since_last_record=self.since_last_record(),
            snapshot_rate=self.snapshot_rate(), torn_bytes=self._torn_bytes(status), snapshot=self.snapshot,
            **self._run_of())

    def _run_of(self) -> dict[str, int]:
        """Which run of an appended log is shown ("run 2 of 2"): the one asked for, else the latest."""
        count = len(self.data.runs)
        index = self.data.run_index if self.data.run_index is not None else count - 1
        return {"run_number": index + 1, "run_count": count}

    # ---------------------------------------------------------- lifecycle

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)
        # Ready (below) comes with the first frame; a terminal with no size yet draws none, so the
        # overview must not wait for it forever
        self.set_timer(BOOT_FALLBACK_S, self._boot)

    def on_ready(self) -> None:
        """The first frame (StartScreen) was handed to the terminal: now load the rest."""
        self.call_later(self._boot)

    def _boot(self) -> None:
        """Import what the start screen did not need, start reading and switch to the overview."""
        if self._booted or self.return_code is not None:
            return
        from weighttui.data.follower import Follower
        from weighttui.tui.screens.overview import OverviewScreen  # numpy, the table, the scalars

        if self._alerts_enabled:
            # The first screen does not wait for the alert rules: computed later, at most once a second.
            from weighttui.analysis import diagnose

            self._diagnose = diagnose
        # history from the log's index when it has one (built by open()/info or an earlier viewer):
        # the follower reads only what was appended since
        start = self.data.load_index()
        # history taken from the index is new to the alerts too (a finished run's follower delivers
        # nothing new after it: without this its alerts were never computed)
        self._alerts_dirty = start is not None and self._diagnose is not None
        self._preview_latest(HEADER_SIZE if start is None else start.offset)
        self.follower = Follower(self.path, self.pump.wake, start=start, **self._follower_options)
        self.follower.start()  # reads while the overview is being mounted (the pump waits for it)
        self._booted = True
        self.switch_screen(OverviewScreen())

    def _preview_latest(self, covered: int) -> None:
        """`watch` on a big log not covered by an index up to `covered`: show its latest snapshots now,
        read (and index) the rest behind them.

        Replay starts at the first snapshot, which the ordinary reading shows at once, and `--run N`
        may ask for an earlier run: both read the log from its start as before.
        """
        if self.mode != "watch" or self._run is not None:
            return
        from weighttui.data.latest import preview

        shown = preview(self.path, covered, max_rows=self._max_rows, min_bytes=PREVIEW_MIN_BYTES)
        if shown is None:
            return  # small, damaged, no snapshot yet, or a slow walk: read from the start as before
        self._building, self.data = self.data, shown
        size = max(shown.file_size, 1)
        self.loading = covered / size if covered > HEADER_SIZE else 0.0  # an index may cover the start

    def on_unmount(self) -> None:
        self.stop_follower()
        self.index_saver.finish()  # a save in flight is completed first: two saves never overlap
        # the next viewer starts from here (also from a big log's index built part of the way)
        data = self._building if self._building is not None else self._data
        if data is not None:
            data.save_index()

    def _save_index(self) -> None:
        data = self._building if self._building is not None else self._data
        if data is not None and self.return_code is None:
            self.index_saver.start(data)  # written on the saver's thread; skipped while one is in flight

    def on_index_saved(self, _message) -> None:  # tui.pump.IndexSaved
        self.index_saver.saved()

    def stop_follower(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    # ------------------------------------------------------------- ingest

    def on_follower_wake(self, _message) -> None:  # tui.pump.FollowerWake
        self.pump.on_wake()

    def _ingest(self, item: Delivery) -> bool:
        poll = item.poll
        building = self._building
        target = self.data if building is None else building
        before = target.snapshot_count
        changed = target.ingest(poll)
        if poll.waiting != self.waiting:
            self.waiting = poll.waiting
            changed = True
        self._pending_bytes = target.torn_tail  # (RunData's rule, as `info` says it: not damage being skipped)
        self.loading = None if item.caught_up or not poll.size else poll.offset / poll.size
        if building is not None and (item.caught_up or building.resets or poll.waiting):
            # indexed (or the file was replaced meanwhile): the whole history replaces the latest snapshots
            self._building = None
            self.data = building
            changed = True
        if item.caught_up and time.monotonic() - self._index_saved > INDEX_SAVE_S:
            self._index_saved = time.monotonic()
            # written on the index saver's thread (tens of ms, mostly waiting for the disk); what it
            # takes on this thread comes after the redraw this delivery asks for (1/MAX_REFRESH_HZ away)
            self.set_timer(1.5 / MAX_REFRESH_HZ, self._save_index)
        if self.display_paused:
            self.paused_new += max(0, target.snapshot_count - before)
        if self.data.resets != self._resets_seen:
            self._resets_seen = self.data.resets
            self._pos_step = None
            self._pause_step = None
            self._started = False
            self.notify("the log was truncated or replaced by a new run: reloaded", severity="warning",
                        timeout=6)
        if self.mode == "replay" and not self._started and self.data.n:
            self._started = True
            self._pos_step = int(self.data.steps[0])
        self._alerts_dirty = self._alerts_dirty or (changed and self._building is None)
        return True  # a delivery always moves something on screen (at least size or growth time)

    def _fail(self, message: str) -> None:
        self.error_message = message
        self.stop_follower()
        self.exit(return_code=2)

    # ------------------------------------------------------------ refresh

    def _refresh_now(self, *, force: bool = False) -> None:
        """Redraw the active screen now (`force`: even while the display is paused)."""
        self.pump.refresh_now(force=force)

    def _draw(self, force: bool = False) -> None:
        # Alerts are not computed here: diagnose over a long history takes a
        # while, and the first screen must not wait for it (see _tick).
        screen = self.screen if self.screen_stack else None
        if not isinstance(screen, RefreshableScreen):
            return  # a modal (help, go to) is on top: the screen below redraws when it comes back
        if (self.display_paused or (self._building is not None and self._shown_data)) and not force:
            # paused, or a big log's latest snapshots shown while it is indexed: only the header
            # (the progress) moves, and the table is not redrawn from the same data ten times a second
            screen.refresh_view(status_only=True)
            return
        with self.batch_update():
            screen.refresh_view()
        if not self._shown_data and self.data.n and screen.is_mounted:
            self._shown_data = True
            self.first_data_at = time.monotonic()
        self.refreshes += 1
        self.last_refresh_at = time.monotonic()

    def _tick(self) -> None:
        """Each second: alerts if stale, and the header's clock-driven parts (time since, stalled)."""
        if self.return_code is not None:
            return
        if self.pump.backlog():
            self.pump.drain()  # a safety net: a scheduled drain never lets the queue sit
        if self._alerts_dirty and self._update_alerts():
            self._refresh_now()
            return
        if self.pump.refresh_pending:
            return  # new data is about to be drawn: the header must not show a step the table does not yet
        screen = self.screen if self.screen_stack else None
        if isinstance(screen, RefreshableScreen):
            screen.refresh_view(status_only=True)

    def _update_alerts(self, force: bool = False) -> bool:
        """Recompute alerts (at most once a second); True if they changed."""
        if self._diagnose is None or not self._alerts_dirty or self._building is not None:
            return False  # (while a big log is indexed: alerts over its whole history once it is read)
        if not force and time.monotonic() - self._alerts_at < 1.0:
            return False
        self._alerts_dirty = False
        self._alerts_at = time.monotonic()
        as_of = None if self.position is None else (self._pause_step if self._pos_step is None else self._pos_step)
        # a replay position on a thinned row view: as of that snapshot, every snapshot near it
        rows = self.data if as_of is None else self.data.upto_snapshot(self._snapshot_at())
        try:
            if rows is not self.data:
                alerts, complete = self._diagnose.diagnose_within(rows, self.diagnose_config,
                                                                  budget_s=ALERTS_BUDGET_S)
            else:
                alerts, complete = self._diagnose.diagnose_within(
                    self.data, self.diagnose_config, upto_row=self.row if self.position is not None else None,
                    budget_s=ALERTS_BUDGET_S)
        except Exception as exc:  # a bug in one rule must not end the viewer: the data stays on screen
            self._diagnose = None
            self.notify(inert(f"alerts disabled: {type(exc).__name__}: {exc}"), severity="error", markup=False)
            return False
        if not complete:
            # the rules' first read of a long history, a budget at a time: the UI thread stays
            # responsive; what was read is kept, and the rest follows right after this is drawn
            self._alerts_dirty = True
            self._alerts_at = 0.0
            self.set_timer(0.05, self._tick)
        if alerts == self.alerts and as_of == self.alerts_as_of:
            return False
        self.alerts_as_of = as_of
        self.set_alerts(alerts, refresh=False)
        return True

    def set_alerts(self, alerts: list[Alert], *, refresh: bool = True) -> None:
        """Replace the alerts (normally from diagnose) and redraw the screen with them."""
        self.alerts = list(alerts)
        by: dict[str, list[Alert]] = {}
        for a in self.alerts:
            if a.tensor:
                by.setdefault(a.tensor, []).append(a)
        self.alerts_by_tensor = by
        if refresh:
            self._refresh_now(force=True)

    # ----------------------------------------------------------- timeline

    @property
    def position(self) -> int | None:
        """Row shown by the timeline, or None when following the latest snapshot."""
        step = self._pause_step if self._pos_step is None else self._pos_step
        if step is None or not self.data.n:
            return None
        return self._row_of_step(step)

    @position.setter
    def position(self, row: int | None) -> None:
        if row is None or not self.data.n:
            self._pos_step = None
        else:
            row = int(min(max(row, 0), self.data.n - 1))
            self._pos_step = int(self.data.steps[row])
        self._position_changed()

    @property
    def snapshot(self) -> int | None:
        """The position's snapshot (index among all the run's) when the row view lacks it (the
        replay cursor walks every snapshot; `max_rows` thins the row view); None: it is `row`'s."""
        step = self._pause_step if self._pos_step is None else self._pos_step
        data = self.data
        if step is None or not data.n:
            return None
        j = data.rows_for_steps(None, step + 1)[1] - 1
        row = self._row_of_step(step)
        if j < 0 or data.snapshot_count == data.n or int(data.steps[row]) == step:
            return None  # (a step recorded twice is shown from its row)
        return j

    def _snapshot_at(self) -> int:
        """Index among all the run's snapshots of the one at the position (the latest when following)."""
        step = self._pause_step if self._pos_step is None else self._pos_step
        data = self.data
        if step is None:
            return data.row_count - 1
        return max(0, data.rows_for_steps(None, step + 1)[1] - 1)

    def _go_snapshot(self, index: int) -> None:
        """Move the position to the run's snapshot `index` (full resolution)."""
        steps, _epochs, _times = self.data.snapshot_meta(index, index + 1)
        if steps.size:
            self._pos_step = int(steps[0])
            self._position_changed()

    @property
    def row(self) -> int:
        """The effective row: the position, else the latest (-1 with no snapshots)."""
        pos = self.position
        return self.data.n - 1 if pos is None else pos

    def _row_of_step(self, step: int) -> int:
        import numpy as np  # loaded by the reader already

        steps = self.data.steps
        return max(0, int(np.searchsorted(steps, step, side="right")) - 1)

    def on_seek_step(self, message: SeekStep) -> None:
        """A click on the timeline or a heatmap: the last snapshot at or before that step (at full
        resolution: a zoomed heatmap draws snapshots the row view lacks)."""
        if self.data.n:
            self._go_snapshot(max(0, self.data.rows_for_steps(None, message.step + 1)[1] - 1))

    def _position_changed(self) -> None:
        self._alerts_dirty = self._alerts_dirty or self._diagnose is not None
        self._refresh_now(force=True)
        if self._alerts_dirty and self._diagnose is not None:
            # Alerts for the new position once this move is on screen (still at most 1/s).
            self.set_timer(max(0.05, 1.0 - (time.monotonic() - self._alerts_at)), self._tick)

    def action_step(self, delta: int) -> None:
        """`delta` snapshots back or forward, at full resolution: every snapshot of the log, also
        those a long run's row view thinned away (their values are read from the store)."""
        data = self.data
        count = data.row_count
        if not data.n or not count:
            return
        here = self._snapshot_at()
        if delta < 0:  # from the first snapshot of this step (a step recorded twice is passed at once)
            here = data.rows_for_steps(None, int(data.snapshot_meta(here, here + 1)[0][0]))[1]
        new = min(max(here + delta, 0), count - 1)
        if self.mode == "watch" and new == count - 1 and delta > 0 and not self.display_paused:
            self.position = None  # reaching the newest snapshot follows again
        else:
            self._go_snapshot(new)

    def action_step_rows(self, delta: int) -> None:
        """`delta` rows of the timeline's row view (ten snapshots, or ten thinned rows of a long run)."""
        n = self.data.n
        if not n:
            return
        row = self.row
        if delta < 0 and self.snapshot is not None:
            row += 1  # between two rows: the one at or before counts as the first step back
        new = min(max(row + delta, 0), n - 1)
        if self.mode == "watch" and new == n - 1 and delta > 0 and not self.display_paused:
            self.position = None
        else:
            self.position = new

    def action_first(self) -> None:
        if self.data.n:
            self.position = 0

    def action_last(self) -> None:
        self._pause_step = None if not self.display_paused else self._pause_step
        self.position = None if not self.display_paused else self.data.n - 1

    def action_play(self) -> None:
        self.playing = not self.playing
        if self.playing and self.data.n and self.position is None:
            self.position = 0 if self.mode == "replay" else max(0, self.data.n - 1)
        self._restart_play_timer()
        self._refresh_now(force=True)

    def action_speed(self, direction: int) -> None:
        i = SPEEDS.index(self.speed) if self.speed in SPEEDS else 3
        self.speed = SPEEDS[min(max(i + direction, 0), len(SPEEDS) - 1)]
        self._restart_play_timer()
        self._refresh_now(force=True)

    def _restart_play_timer(self) -> None:
        if self._play_timer is not None:
            self._play_timer.stop()
            self._play_timer = None
        if self.playing:
            self._play_timer = self.set_interval(1.0 / min(self.speed, 20), self._play_tick)

    def _play_tick(self) -> None:
        """The speed is in snapshots a second, at full resolution (a thinned row view is walked
        through every snapshot too)."""
        count = self.data.row_count
        if not self.data.n or self.position is None:
            return
        new = self._snapshot_at() + max(1, round(self.speed / 20))
        if new >= count - 1:
            self.playing = False
            self._restart_play_timer()
            if self.mode == "watch":
                self.position = None
            else:
                self._go_snapshot(count - 1)
        else:
            self._go_snapshot(new)

    def action_goto(self) -> None:
        from weighttui.tui.widgets.timeline import GotoScreen

        self.push_screen(GotoScreen(), self._goto)

    def _goto(self, text: str | None) -> None:
        if not text:
            return
        from weighttui.tui.widgets.timeline import parse_goto

        steps, epochs, _times = self.data.snapshot_meta()  # every snapshot, not only the row view's
        index = parse_goto(text, steps, epochs)
        if index is None:
            self.notify(inert(f"no snapshot for {text!r} (type a step like 1200 or an epoch like e5)"),
                        severity="warning", markup=False)
            return
        self._go_snapshot(index)

    def action_pause(self) -> None:
        self.display_paused = not self.display_paused
        if self.display_paused:
            self.paused_new = 0
            if self._pos_step is None and self.data.n:
                self._pause_step = int(self.data.steps[-1])  # freeze what is on screen
        else:
            self._pause_step = None
            self.paused_new = 0
        self._refresh_now(force=True)

    # ------------------------------------------------------------ screens

    def set_tensor_order(self, names: list[str]) -> None:
        self.tensor_order = list(names)

    def open_tensor(self, name: str) -> None:
        from weighttui.tui.screens.detail import DetailScreen  # plotext and the charts: on first use

        self.push_screen(DetailScreen(name))

    def action_changes(self) -> None:
        from weighttui.tui.screens.change_table import ChangeTableScreen

        self._open_table(ChangeTableScreen, lambda: ChangeTableScreen(marks=self.change_marks))

    def action_alerts(self) -> None:
        from weighttui.tui.screens.alerts import AlertsScreen

        self._open_table(AlertsScreen, AlertsScreen)

    def _open_table(self, kind: type, make) -> None:
        """`c` / `!`: the change table or the alerts over the screen below. Its own key again closes it,
        the other's takes its place: never a stack of copies that takes as many escapes."""
        from weighttui.tui.screens.alerts import AlertsScreen
        from weighttui.tui.screens.change_table import ChangeTableScreen

        top = self.screen
        if isinstance(top, (AlertsScreen, ChangeTableScreen)):
            self.pop_screen()
            if isinstance(top, kind):
                return
        self.push_screen(make())

    def action_save_svg(self) -> None:
        """Save the current screen as SVG (Textual renders it) and say where."""
        directory = os.path.expanduser(os.environ.get(SCREENSHOT_DIR_ENV) or os.getcwd())
        try:
            saved = self.save_screenshot(filename=screenshot_name(self.path, directory), path=directory)
        except OSError as exc:  # a read-only or missing directory must not end the viewer
            self.notify(f"could not save the screen: {exc}", severity="error", timeout=6, markup=False)
            return
        self.notify(f"screen saved to {saved}", timeout=6, markup=False)

    def action_help(self) -> None:
        from weighttui.tui.screens.help import SCREENS, TIMELINE, HelpScreen

        screen = self.screen
        if isinstance(screen, RefreshableScreen):
            self.push_screen(HelpScreen((*screen.KEYS_HELP, TIMELINE, SCREENS),
                                        title=f"keys: {screen.HELP_TITLE}" if screen.HELP_TITLE else ""))

    async def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()

    # ------------------------------------------------------------ status

    def run_status(self) -> str:
        """live / finished / failed / interrupted / stalled / waiting / loading."""
        return run_status(self.data, waiting=self.waiting, loading=self.loading is not None,
                          growth_age=growth_age(self.path, self.data.last_growth, self.clock()))

    def _torn_bytes(self, status: str) -> int:
        """An incomplete final record once the writer is no longer live (while live it is just arriving)."""
        if self._pending_bytes and self.loading is None and status not in ("live", "loading", "waiting"):
            return self._pending_bytes
        return 0

    @property
    def torn_bytes(self) -> int:
        return self._torn_bytes(self.run_status())

    def since_last_record(self) -> float | None:
        t = self.data.last_time
        return None if t is None else self.clock() - t

    def snapshot_rate(self) -> float | None:
        """Snapshots per second from the log's own times: recent when no history was thinned."""
        data = self.data
        n = data.n
        if n < 2:
            return None
        times = data.times
        if data.snapshot_count == n:
            k = min(n, 11)
            span = times[-1] - times[-k]
            count = k - 1
        else:
            span = times[-1] - times[0]
            count = data.snapshot_count - 1
        return count / span if span > 0 else None


def screenshot_name(log_path: str, directory: str) -> str:
    """weighttui-<log name>-<date>-<time>.svg, with -2, -3 ... if that file exists already."""
    stem = os.path.splitext(os.path.basename(log_path))[0]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "run"
    base = f"weighttui-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base + ".svg", 1
    while os.path.exists(os.path.join(directory, name)):
        n += 1
        name = f"{base}-{n}.svg"
    return name


def run_app(path, *, mode: str = "watch", title: str | None = None, max_rows: int = 2048,
            diagnose_config: DiagnoseConfig | None = None, run: int | None = None,
            directory_ok: bool = False) -> int:
    """Run the app in this terminal; the exit status (0, or 2 for bad input found while running).

    `run`: which run of an appended log to show (0-based; default: the latest, following new ones).
    `directory_ok`: a path that appears as a directory (a trainer's checkpoint folder) is not an error:
    the app ends and returns DIRECTORY_APPEARED, for the caller to follow the directory.
    """
    app = WeightApp(path, mode=mode, title=title, max_rows=max_rows, diagnose_config=diagnose_config, run=run)
    try:
        app.run()
    finally:
        app.stop_follower()
    if app.error_message and directory_ok and os.path.isdir(path):
        return DIRECTORY_APPEARED
    if app.error_message:
        print(f"weighttui: {inert(app.error_message)}", file=sys.stderr)
    return app.return_code or 0
