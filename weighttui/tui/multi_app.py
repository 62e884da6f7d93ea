"""The Textual app behind `weighttui watch a.sock b.sock` and `weighttui watch DIR`.

Several runs side by side (a learning-rate sweep): a run list (status, loss,
meta) and a comparison of one tensor's statistic across the runs. It is a
separate app from the single-run viewer (`app.py`) and shares only the
follower thread, the widgets and the chart with it.

- One `Follower` thread per log reads and decodes off the UI thread; each
  run's `RunData` is only mutated here, on the UI thread (`_drain`).
- With a directory, it is rescanned every `scan_interval` seconds; new logs
  join the list, files that are not logs are ignored with a note.
- Ingest and redraws go through the `Pump` shared with the single-run app;
  redraws are coalesced to at most `MAX_REFRESH_HZ` a second. Screens read
  the app through the `RunsHost` protocol (`weighttui.tui.state`).
- A run whose file turns into something unreadable shows as "error" with the
  reason; the other runs go on.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import App, SuspendNotSupported
from textual.binding import Binding

from weighttui.analysis.multirun import (
    DirectoryWatch,
    Metric,
    RunRow,
    common_tensors,
    meta_text,
    metrics,
    run_names,
    summarize,
)
from weighttui.data.follower import Delivery, Failure, Follower
from weighttui.data.latest import preview
from weighttui.data.liveness import growth_age, run_status
from weighttui.data.malloc import release_freed_memory, share_malloc_arena
from weighttui.data.run import RunData
from weighttui.log.format import HEADER_SIZE
from weighttui.log.text import inert
from weighttui.tui.app import INDEX_SAVE_S  # the single-run viewer's rule for keeping the index
from weighttui.tui.pump import FollowerWake, IndexSaved, IndexSaver, Pump
from weighttui.tui.screens.base import RefreshableScreen
from weighttui.tui.screens.runs_compare import CompareScreen
from weighttui.tui.screens.runs_help import RunsHelpScreen
from weighttui.tui.screens.runs_list import RunListScreen

if TYPE_CHECKING:
    from weighttui.analysis.diagnose import Alert, DiagnoseConfig

MAX_REFRESH_HZ = 5
# Runs reading their history at once; the others wait their turn (showing their index or their
# latest snapshots meanwhile). Each reader holds its follower's queue of chunks and a store tail
# being sealed, so this, not the number of runs, bounds the memory a sweep takes while loading.
LOAD_AT_ONCE = 2
PREPARE_BUDGET_S = 0.03  # UI-thread time per batch of runs prepared (index loaded or preview read)
ALERTS_EVERY_S = 5.0  # a growing run's alerts are computed again at most this often
ALERTS_TICK_S = 0.5  # how often runs whose alerts are due are looked for ...
ALERTS_BUDGET_S = 0.1  # ... and the UI-thread time spent on them each time (at least one run)
SCAN_INTERVAL_S = 1.0
DEFAULT_METRIC = Metric("weights norm", "weights", "norm")


class RunSlot:
    """One log of the set: its path, short name, data and follower.

    A slot goes through: queued (nothing read) -> prepared (history from the log's index, or
    without one on a big log its latest snapshots: `data` is then a preview and `building`
    receives the whole history) -> reading (its follower reads what the index does not cover)
    -> caught up (read to the end once; it follows the log from then on).
    """

    def __init__(self, path: str, name: str, *, max_rows: int | None, clock: Callable[[], float]):
        self.path = path
        self.name = name
        self.max_rows = max_rows
        self.data = RunData(path, max_rows=max_rows)  # what the screens show
        self.building: RunData | None = None  # the whole history, read while `data` is a preview
        self.follower: Follower | None = None
        self.prepared = False
        self.caught_up = False
        self.generation = 0  # bumped when `data` is replaced by another RunData
        self.waiting: str | None = None
        self.loading = False
        self.error: str | None = None
        self.alerts: list[Alert] | None = None  # diagnose's, once the whole run is read; None: not yet
        self._alerts_key: tuple | None = None  # version() they were computed for
        self._alerts_at = 0.0
        self._start = None  # where the index ends (a ScanState), where the follower starts
        self._saved_at = 0.0
        self.save_due = False  # a periodic save of the index is due (MultiRunApp starts it)
        self._clock = clock
        self._row_key: tuple | None = None
        self._row: RunRow | None = None

    def prepare(self) -> None:
        """Take the run as far as its index covers it; on a big log not (fully) covered, show its
        latest snapshots while the rest is read (data/latest.py: the single-run viewer's rule)."""
        self._start = self.data.load_index()
        shown = preview(self.path, HEADER_SIZE if self._start is None else self._start.offset,
                        max_rows=self.max_rows)
        if shown is not None:
            self.building, self.data = self.data, shown
            self.generation += 1
        self.prepared = True

    def start(self, notify: Callable[[], None], options: dict) -> None:
        self.follower = Follower(self.path, notify, start=self._start, **options)
        self.follower.start()

    @property
    def reading(self) -> bool:
        """Its follower is reading the log's history (it holds a chunk queue and a store tail)."""
        return self.follower is not None and not self.caught_up and self.error is None

    def ingest(self, item: Delivery) -> None:
        poll = item.poll
        target = self.building if self.building is not None else self.data
        target.ingest(poll)
        self.waiting = poll.waiting
        self.loading = not item.caught_up and bool(poll.size)
        building = self.building
        if building is not None and (item.caught_up or building.resets or poll.waiting):
            self.data, self.building = building, None  # the whole history replaces the preview
            self.generation += 1
        if item.caught_up:
            first, self.caught_up = not self.caught_up, True
            now = time.monotonic()
            if first:
                # the store's rule: what was read goes to the log's index (and out of memory: the
                # store's tail is sealed and written there) -- once, at the end of loading
                self._saved_at = now
                self.data.save_index()
            elif now - self._saved_at > INDEX_SAVE_S:
                self.save_due = True  # live: the app's IndexSaver writes it off the UI thread

    def alerts_due(self, now: float) -> bool:
        """Read to the end, changed since its alerts were computed, and not computed just now."""
        return (self.caught_up and self.building is None and self.error is None
                and self._alerts_key != self.version()
                and (self.alerts is None or now - self._alerts_at >= ALERTS_EVERY_S))

    def update_alerts(self, diagnose: Callable[[RunData], list[Alert]], now: float) -> None:
        self._alerts_key = self.version()
        self._alerts_at = now
        self.alerts = diagnose(self.data)
        # (the rules read every snapshot from the store in blocks and keep no matrix; the row view's
        # matrices built meanwhile are dropped here too: rebuilt when next asked for, not kept for
        # every run of a sweep, the run list needs three)
        self.data.release_views()

    def save_index(self) -> None:
        data = self.building if self.building is not None else self.data
        data.save_index()

    def start_save(self, saver: IndexSaver) -> None:
        """A due periodic save, on the saver's thread (left due while another run's save is in flight)."""
        if saver.busy:
            return
        self.save_due = False
        self._saved_at = time.monotonic()
        saver.start(self.building if self.building is not None else self.data)

    def status(self) -> str:
        if self.error:
            return "error"
        if not self.prepared or (self.follower is None and self.data.run is None):
            return "queued"
        return run_status(self.data, waiting=self.waiting, loading=self.loading or not self.caught_up,
                          growth_age=growth_age(self.path, self.data.last_growth, self._clock()))

    def meta_text(self) -> str:
        run = self.data.run
        return meta_text(run.meta if run else None, width=24)

    def row(self) -> RunRow:
        """The run list's row, rebuilt only when the log or the status moved on
        (copying a long loss history five times a second for every run adds up)."""
        status = self.status()
        key = (self.name, status, self.error, self.version(), self._alerts_key, self._alerts_at)
        if key != self._row_key or self._row is None:
            self._row_key = key
            self._row = summarize(self.name, self.data, status, error=self.error,
                                  partial=self.building is not None or not self.prepared,
                                  alerts=self.alerts)
        return self._row

    def version(self) -> tuple:
        """Changes whenever anything the screens show from this run's data may have changed."""
        d = self.data
        return (self.generation, d.resets, d.snapshot_count, d.n, d.record_counts.get("scalars", 0),
                len(d.corruptions), d.end is not None, d.run is not None)


class MultiRunApp(App[int]):
    ENABLE_COMMAND_PALETTE = False
    MODES = {"list": RunListScreen, "compare": CompareScreen}
    DEFAULT_MODE = "list"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("tab", "switch", "list/compare", priority=True),
    ]

    def __init__(self, paths=(), *, directory=None, mode: str = "watch", title: str | None = None,
                 max_rows: int | None = 1024, clock: Callable[[], float] | None = None,
                 scan_interval: float = SCAN_INTERVAL_S, follower_options: dict | None = None,
                 alerts: bool = True, diagnose_config: DiagnoseConfig | None = None):
        if mode not in ("watch", "replay"):
            raise ValueError(f"mode must be 'watch' or 'replay', not {mode!r}")
        super().__init__()
        self.mode = mode
        self.directory = None if directory is None else os.fspath(directory)
        self.title_text = inert(title or "weighttui · runs")
        self.title = self.title_text
        self.clock = clock or time.time  # injectable: snapshot tests freeze "stalled"
        self.max_rows = max_rows
        self.scan_interval = scan_interval
        self._follower_options = follower_options or {}
        self.slots: list[RunSlot] = []
        self.ignored: dict[str, str] = {}  # path -> why it is not a run log
        self.watch_dir = DirectoryWatch(self.directory) if self.directory is not None else None
        self.tensor: str | None = None
        self.log_y = True
        self._metric_label = DEFAULT_METRIC.label
        self._tensor_key: tuple | None = None
        self._tensor_names: list[str] = []
        self.refreshes = 0
        self.opened: list[str] = []  # runs `enter` asked to open (for tests)
        self.index_saver = IndexSaver(self)
        self.pump: Pump[RunSlot] = Pump(self, sources=self._sources, ingest=self._ingest, failed=self._failed,
                                        redraw=self._draw, hz=MAX_REFRESH_HZ)
        self._initial = [os.fspath(p) for p in paths]
        self._prepare_queued = False
        # alerts per run (the run list's column), under `watch --threshold` when given
        self.alerts_enabled = alerts
        self.diagnose_config = diagnose_config
        self._alert_next = 0  # where the next look for due alerts starts (round robin)

    # ---------------------------------------------------------- lifecycle

    def on_mount(self) -> None:
        for path in self._initial:
            self._add(path)
        if self.watch_dir is not None:
            self._scan(initial=True)
            self.set_interval(self.scan_interval, self._scan)
        self.set_interval(1.0, self._tick)
        if self.alerts_enabled:
            self.set_interval(ALERTS_TICK_S, self._update_alerts)
        self.pump.refresh_now()

    def on_unmount(self) -> None:
        self.stop_followers()
        self.index_saver.finish()  # a save in flight is completed first: two saves never overlap
        for slot in self.slots:  # the next viewer starts from here (also from a log read part of the way)
            if slot.prepared:
                slot.save_index()

    def stop_followers(self) -> None:
        for slot in self.slots:
            if slot.follower is not None:
                slot.follower.stop()

    def _add(self, path: str) -> None:
        if any(s.path == path for s in self.slots):
            return
        slot = RunSlot(path, os.path.basename(path), max_rows=self.max_rows, clock=self.clock)
        self.slots.append(slot)
        for s, name in zip(self.slots, run_names([s.path for s in self.slots], self.directory), strict=True):
            s.name = name
        # read later, a few runs at a time (LOAD_AT_ONCE): the list shows every run at once
        self._prepare_soon()

    def _prepare_soon(self) -> None:
        if not self._prepare_queued:
            self._prepare_queued = True
            self.call_after_refresh(self._prepare)

    def _prepare(self) -> None:
        """Prepare queued runs (index or latest snapshots) for a moment, then let the screen draw."""
        self._prepare_queued = False
        if self.return_code is not None or not self.is_running:
            return
        t0 = time.perf_counter()
        for slot in [s for s in self.slots if not s.prepared]:
            if time.perf_counter() - t0 > PREPARE_BUDGET_S:
                self._prepare_soon()  # the rest after this frame: keys and drawing first
                break
            try:
                slot.prepare()
            except Exception as exc:  # a log that cannot be read shows as "error"; the others go on
                slot.prepared = True
                slot.error = f"{type(exc).__name__}: {exc}"
        else:
            # every run is on the list with what is quick to show: now read their history
            self._start_readers()
        self.pump.request_refresh()

    def _start_readers(self) -> None:
        """Start the followers of prepared runs while fewer than LOAD_AT_ONCE read their history."""
        busy = sum(s.reading for s in self.slots)
        for slot in self.slots:
            if busy >= LOAD_AT_ONCE:
                return
            if slot.prepared and slot.follower is None and slot.error is None and not slot.caught_up:
                slot.start(self.pump.wake, self._follower_options)
                busy += 1

    def _scan(self, initial: bool = False) -> None:
        if self.watch_dir is None:
            return
        found = self.watch_dir.scan()
        for path in found.logs:
            self._add(path)
        for path, why in found.ignored:
            self.ignored[path] = why
            if not initial:
                self.notify(inert(f"ignored {os.path.relpath(path, self.directory)}: {why}"), severity="warning",
                            markup=False)
        for path in [p for p in self.ignored if p not in self.watch_dir.ignored]:
            del self.ignored[path]  # it became a log after all
        if found.logs or found.ignored:
            self.pump.request_refresh()

    def ignored_names(self) -> dict[str, str]:
        base = self.directory
        return {(os.path.relpath(p, base) if base else p): why for p, why in sorted(self.ignored.items())}

    # ------------------------------------------------------------- ingest

    def on_follower_wake(self, _message: FollowerWake) -> None:
        self.pump.on_wake()

    def on_index_saved(self, _message: IndexSaved) -> None:
        self.index_saver.saved()

    def _sources(self) -> Iterable[tuple[RunSlot, Follower | None]]:
        return [(slot, slot.follower) for slot in self.slots]

    def _ingest(self, slot: RunSlot, item: Delivery) -> bool:
        was_reading = slot.reading
        slot.ingest(item)
        if slot.save_due:
            slot.start_save(self.index_saver)
        if was_reading and not slot.reading:
            release_freed_memory()  # what reading it took (chunks, the store's tail) back to the system
            self._start_readers()  # this one has read its history: the next run's turn
        return True

    def _failed(self, slot: RunSlot, failure: Failure) -> None:
        """This run's file became unreadable: it shows as "error"; the other runs go on."""
        slot.error = failure.message.removeprefix(f"{slot.path}: ")
        slot.follower = None
        self._start_readers()

    # ------------------------------------------------------------ refresh

    def _refresh_now(self) -> None:
        self.pump.refresh_now()

    def _draw(self, _force: bool = False) -> None:
        screen = self.screen if self.screen_stack else None
        if isinstance(screen, RefreshableScreen):
            with self.batch_update():
                screen.refresh_view()
        self.refreshes += 1

    def _tick(self) -> None:
        """Each second: statuses move with the clock (stalled) even when no log grows."""
        screen = self.screen if self.screen_stack and self.return_code is None else None
        if isinstance(screen, RefreshableScreen):
            screen.refresh_view(status_only=True)

    def _update_alerts(self) -> None:
        """Alerts of the runs that changed (read to the end, at most every ALERTS_EVERY_S), a
        few at a time so that keys and drawing go on between them."""
        if not self.alerts_enabled or self.return_code is not None or not self.slots:
            return
        if any(not s.prepared for s in self.slots):
            return  # every run on the list first
        reading = any(s.reading for s in self.slots)  # then one run's alerts a tick while runs are read
        from weighttui.analysis.diagnose import diagnose

        t0 = time.perf_counter()
        now = time.monotonic()
        changed = False
        n = len(self.slots)
        for k in range(n):
            if changed and (reading or time.perf_counter() - t0 > ALERTS_BUDGET_S):
                break
            i = (self._alert_next + k) % n
            slot = self.slots[i]
            if not slot.alerts_due(now):
                continue
            try:
                slot.update_alerts(lambda d: diagnose(d, self.diagnose_config), now)
            except Exception as exc:  # a bug in one rule must not end the viewer: the runs stay on screen
                self.alerts_enabled = False
                self.notify(inert(f"alerts disabled: {type(exc).__name__}: {exc}"), severity="error",
                            markup=False)
                return
            changed = True
            self._alert_next = (i + 1) % n
        if changed:
            self.pump.request_refresh()

    # ------------------------------------------------------- shared state

    def run_rows(self) -> list[RunRow]:
        return [slot.row() for slot in self.slots]

    def title_line(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(self.title_text, style="bold")
        n = len(self.slots)
        line.append(f"  {n} run{'s' if n != 1 else ''}")
        if self.directory is not None:
            line.append(f" in {inert(self.directory)}", style="dim")
            if self.mode == "watch":
                line.append(" (new logs join as they appear)", style="dim")
        counts: dict[str, int] = {}
        for slot in self.slots:
            st = slot.row().status  # as the run list shows it ("diverged" included)
            counts[st] = counts.get(st, 0) + 1
        if counts:
            line.append("  · " + " · ".join(f"{k} {v}" for k, v in sorted(counts.items())), style="dim")
        return line

    def tensor_names(self) -> list[str]:
        """Tensor names the runs share (recomputed only when some run's tensors changed)."""
        key = tuple((s.path, s.generation, s.data.resets, len(s.data.tensors)) for s in self.slots)
        if key != self._tensor_key:
            self._tensor_key = key
            self._tensor_names = common_tensors([s.data for s in self.slots])
        return self._tensor_names

    def metric_list(self) -> list[Metric]:
        return metrics([s.data for s in self.slots]) or [DEFAULT_METRIC]

    @property
    def metric(self) -> Metric:
        items = self.metric_list()
        for m in items:
            if m.label == self._metric_label:
                return m
        return items[0]

    def metric_position(self) -> str:
        items = self.metric_list()
        labels = [m.label for m in items]
        i = labels.index(self.metric.label)
        return f"{i + 1}/{len(items)}"

    def cycle_metric(self, direction: int = 1) -> None:
        items = self.metric_list()
        labels = [m.label for m in items]
        i = labels.index(self.metric.label)
        self._metric_label = labels[(i + direction) % len(labels)]

    def set_metric(self, label: str) -> None:
        if label not in [m.label for m in self.metric_list()]:
            raise KeyError(f"no statistic {label!r}; the runs have {[m.label for m in self.metric_list()]}")
        self._metric_label = label

    # --------------------------------------------------------------- keys

    def action_switch(self) -> None:
        if len(self.screen_stack) > 1:  # a modal (help) is open: leave it first
            return
        self.switch_mode("compare" if self.current_mode == "list" else "list")

    def action_help(self) -> None:
        if not isinstance(self.screen, RunsHelpScreen):
            self.push_screen(RunsHelpScreen())

    def viewer_command(self, path: str) -> list[str]:
        """The single-run viewer of one run, with the same alert thresholds as this view."""
        return [sys.executable, "-m", "weighttui.cli", self.mode, path, *self.threshold_options()]

    def threshold_options(self) -> list[str]:
        """`--threshold KEY=VALUE` options that give the single-run viewer this view's thresholds."""
        if self.diagnose_config is None:
            return []
        from weighttui.analysis.diagnose import DiagnoseConfig

        out: list[str] = []
        default = DiagnoseConfig()
        for f in dataclasses.fields(self.diagnose_config):
            value = getattr(self.diagnose_config, f.name)
            if value != getattr(default, f.name):
                out += ["--threshold", f"{f.name}={value}"]
        return out

    def open_run(self, path: str) -> None:
        """Hand the terminal to the single-run viewer for this log; back here when it quits.

        The followers keep reading meanwhile (their queues are bounded), so
        the list is current again as soon as the viewer exits.
        """
        self.opened.append(path)
        try:
            with self.suspend():
                subprocess.run(self.viewer_command(path), check=False)
        except SuspendNotSupported:
            self.notify(inert(f"cannot hand over the terminal here; run: {shlex.join(['weighttui', self.mode, path])}"),
                        markup=False,
                        timeout=8)
        except OSError as exc:
            self.notify(inert(f"could not start the viewer: {exc}"), severity="error", markup=False)
        self._refresh_now()


def run_multi_app(paths: list[str], *, directory: str | None = None, mode: str = "watch",
                  title: str | None = None, max_rows: int = 1024,
                  diagnose_config: DiagnoseConfig | None = None) -> int:
    """Run the multi-run app in this terminal; its exit status."""
    share_malloc_arena()  # this process is the viewer's: before the followers' threads start
    app = MultiRunApp(paths, directory=directory, mode=mode, title=title, max_rows=max_rows,
                      diagnose_config=diagnose_config)
    try:
        app.run()
    finally:
        app.stop_followers()
    return app.return_code or 0
