"""From follower threads to the screen, shared by both apps: ingest in time-boxed batches, redraw coalesced.

- A follower thread posts `FollowerWake`; a wake still queued stands for any
  number of later ones (`can_replace`), so a burst of appends is one message.
- `Pump.drain()` takes the followers' deliveries on the UI thread (the only
  thread that mutates a RunData) until `INGEST_BUDGET_S` is spent, then lets
  keys and rendering in and reads on from a timer: a big log loads without
  freezing the keys.
- `Pump.request_refresh()` redraws at most `hz` times a second: requests
  inside the interval fold into one redraw at its end.
- `IndexSaver` writes a log's index on a thread of its own (one save at a time):
  a live run's appends reach the screen while the index is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from textual.message import Message

if TYPE_CHECKING:  # the single-run app imports this module before its first frame; the reader loads after it
    from textual.app import App
    from textual.timer import Timer

    from weighttui.data.follower import Delivery, Failure, Follower
    from weighttui.data.run import IndexSave, RunData

INGEST_BUDGET_S = 0.05  # UI-thread time per ingest batch before yielding to input/render
FIRST_PAINT_S = 0.1  # after the first snapshots are drawn: a few frames' time for them to be painted
READY_POLL_S = 0.01  # deliveries that arrive before the first screen is mounted wait this long at a time

K = TypeVar("K")


class FollowerWake(Message):
    """A follower queued new polls (posted from its thread)."""

    bubble = False

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FollowerWake)


class IndexSaved(Message):
    """The index saver's thread finished a save (posted from it)."""

    bubble = False


class IndexSaver:
    """Saves runs' indexes off the UI thread, one save at a time (docs/tui.md).

    `start(data)` takes what is to be saved on the UI thread (RunData.index_save:
    cheap, nothing waited for) and writes it on a thread; the app hands the
    `IndexSaved` it posts to `saved()`, which lets the run read from the index's
    files. `finish()` (quitting) waits for a save in flight and completes it. A
    failing save is only a missing cache: nothing here raises.
    """

    def __init__(self, app: App):
        self.app = app
        self._job: IndexSave | None = None
        self._thread: threading.Thread | None = None
        self._written = threading.Event()
        self.saves = 0  # saves completed (for tests)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def start(self, data: RunData) -> bool:
        """Start saving `data`'s index; False when a save is in flight (skipped) or nothing is to save."""
        if self._job is not None:
            return False
        try:
            job = data.index_save()
        except Exception:  # the index is a cache: the viewer goes on without it
            return False
        if job is None:
            return False
        self._job = job
        self._written.clear()
        self._thread = threading.Thread(target=self._write, args=(job,), name="weighttui-index-save", daemon=True)
        self._thread.start()
        return True

    def _write(self, job: IndexSave) -> None:
        job.write()  # never raises
        self._written.set()
        try:  # (not call_from_thread: finish() may be joining this thread)
            self.app.post_message(IndexSaved())
        except RuntimeError:  # the app's loop is gone: finish() completed it, or nobody will
            pass

    def saved(self) -> None:
        """On the UI thread once the thread posted IndexSaved."""
        if self._job is not None and self._written.is_set():
            self._complete()

    def finish(self) -> None:
        """On the UI thread: wait for a save in flight and complete it (quitting, before the last save)."""
        if self._thread is not None:
            self._thread.join()
            self._complete()

    def _complete(self) -> None:
        job, self._job, self._thread = self._job, None, None
        if job is not None:
            try:
                job.commit()
            except Exception:  # (the live store keeps reading the files it read before)
                pass
            self.saves += 1


class Pump(Generic[K]):
    """Deliveries from `sources()` (key, follower) into `ingest(key, delivery)`; redraws by `redraw(force)`.

    `failed(key, failure)` is told when a log cannot be read any more (that
    follower is not read further). `paint_first()` True means: stop reading
    and paint now (the first snapshots go on screen before the rest loads).
    `ready()` False means: nothing can be drawn yet (the first screen is being
    mounted), so nothing is ingested yet either.
    """

    def __init__(self, app: App, *, sources: Callable[[], Iterable[tuple[K, Follower | None]]],
                 ingest: Callable[[K, Delivery], bool], failed: Callable[[K, Failure], None],
                 redraw: Callable[[bool], None], hz: float, paint_first: Callable[[], bool] | None = None,
                 budget: float = INGEST_BUDGET_S, ready: Callable[[], bool] | None = None):
        self.app = app
        self._sources = sources
        self._ingest = ingest
        self._failed = failed
        self._redraw = redraw
        self._interval = 1.0 / hz
        self._paint_first = paint_first
        self._ready = ready
        self.budget = budget
        self._last_redraw = 0.0
        self._redraw_timer: Timer | None = None
        self._drain_timer: Timer | None = None

    def _closing(self) -> bool:
        # exit() was called, or the app is shutting down (run_test's end): nothing more to draw
        return self.app.return_code is not None or not self.app.is_running

    def wake(self) -> None:
        """From a follower thread."""
        self.app.post_message(FollowerWake())

    # ------------------------------------------------------------- ingest

    def on_wake(self) -> None:
        """A follower's wake reached the UI thread: drain, unless a drain is already timed (after the
        first paint, or between batches), which then reads what the wake announced."""
        if self._drain_timer is None:
            self.drain()

    def backlog(self) -> bool:
        return any(f is not None and f.backlog for _, f in self._sources())

    def drain(self) -> None:
        """Ingest what the followers queued, for at most `budget` seconds; read on later if more is queued."""
        self._drain_timer = None
        if self._closing():
            return
        if self._ready is not None and not self._ready():
            self._drain_timer = self.app.set_timer(READY_POLL_S, self.drain)  # the screen is being mounted
            return
        from weighttui.data.follower import Failure

        start = time.perf_counter()
        changed = False
        paint = False
        for key, follower in list(self._sources()):
            while follower is not None and time.perf_counter() - start < self.budget:
                items = follower.drain(limit=1)
                if not items:
                    break
                item = items[0]
                if isinstance(item, Failure):
                    follower.stop()
                    self._failed(key, item)
                    changed = True
                    break
                changed |= self._ingest(key, item)
                if self._paint_first is not None and self._paint_first():
                    paint = True
                    break
            if paint or self._closing():
                break
        if paint:
            self.refresh_now()  # the first snapshots: drawn now, not at the end of the redraw interval
        elif changed:
            self.request_refresh()
        if self._closing() or self._drain_timer is not None:
            return
        if paint:
            # Hold reading (wakes included) until the first screen reached the terminal: a queue
            # kept busy with ingest holds Textual's next frame back until the whole log was read.
            self._drain_timer = self.app.set_timer(FIRST_PAINT_S, self.drain)
        elif self.backlog():
            self._drain_timer = self.app.set_timer(0.001, self.drain)  # keys and rendering first

    # ------------------------------------------------------------ redraws

    @property
    def refresh_pending(self) -> bool:
        """New data is about to be drawn."""
        return self._redraw_timer is not None

    def request_refresh(self) -> None:
        wait = self._last_redraw + self._interval - time.monotonic()
        if wait <= 0:
            self.refresh_now()
        elif self._redraw_timer is None:
            self._redraw_timer = self.app.set_timer(wait, self.refresh_now)

    def refresh_now(self, force: bool = False) -> None:
        """Redraw now (`force` is handed to `redraw`: the single-run app redraws even while paused)."""
        if self._redraw_timer is not None:
            self._redraw_timer.stop()
            self._redraw_timer = None
        self._last_redraw = time.monotonic()
        if not self._closing():
            self._redraw(force)
