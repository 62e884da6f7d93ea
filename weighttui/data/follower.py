"""The follower thread: reads a run log off the UI thread.

It owns a `LogTail`, polls it, and queues what each poll found (decoded
frames, corruptions, resets). The UI thread drains the queue and ingests into
its RunData, so `app.data` is only ever mutated on the UI thread. The thread
tells the UI at most once per drain (`notify` is called only when the queue
goes from empty to non-empty), which coalesces bursts of appends into one
update. The queue is bounded in polls, and each poll in bytes, so reading a
large log never holds more than a few chunks of decoded frames at a time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from weighttui.log.format import LogFormatError
from weighttui.log.tail import LogTail, Poll

# One poll reads at most this much, so the first screen of a big log comes
# after the first chunk, not after the whole file.
CHUNK_BYTES = 4 * 1024 * 1024
# The very first poll reads less: enough for the run, the tensors and the
# first snapshots, decoded in milliseconds, so the first screen does not wait
# for a whole chunk to be decoded and ingested.
FIRST_CHUNK_BYTES = 256 * 1024
MAX_QUEUED = 4  # polls waiting for the UI thread before the reader waits too
FAST_INTERVAL = 0.03  # seconds between polls right after the file grew
IDLE_INTERVAL = 0.12  # ... and when it has been quiet for a while


@dataclass
class Delivery:
    """One poll's result, as handed to the UI thread."""

    poll: Poll
    pending: int  # bytes after the last complete frame (torn tail if the writer died)
    caught_up: bool  # the reader reached the end of the file with this poll


@dataclass
class Failure:
    """The log cannot be read any more (replaced by something that is not a log); always final."""

    message: str


class Follower(threading.Thread):
    """Polls a log and queues `Delivery` / `Failure` items for the UI thread."""

    def __init__(self, path, notify: Callable[[], None], *, chunk_bytes: int = CHUNK_BYTES,
                 fast_interval: float = FAST_INTERVAL, idle_interval: float = IDLE_INTERVAL, start=None):
        super().__init__(name="weighttui-follower", daemon=True)
        self.path = path
        self._notify = notify
        # start: where the RunData's index of the log ends (RunData.load_index), so only what
        # was appended since is read
        self._tail = LogTail(path, max_bytes_per_poll=min(chunk_bytes, FIRST_CHUNK_BYTES), start=start)
        self._chunk_bytes = chunk_bytes
        self._fast = fast_interval
        self._idle = idle_interval
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._notified = False
        self._last_waiting: str | None = "?"
        self._last_size = -1
        self.polls = 0  # for tests and the benchmark: polls done so far

    # -- UI thread side

    def drain(self, limit: int | None = None) -> list:
        """Take up to `limit` queued items (all by default); re-arms the notification."""
        with self._cond:
            out: list[Delivery | Failure] = []
            while self._items and (limit is None or len(out) < limit):
                out.append(self._items.popleft())
            if not self._items:
                self._notified = False
            self._cond.notify_all()
            return out

    @property
    def backlog(self) -> int:
        return len(self._items)

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    # -- reader thread side

    def run(self) -> None:
        quiet_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    poll = self._tail.poll()
                except LogFormatError as exc:
                    self._put(Failure(f"{self.path}: {exc}"))
                    return
                except OSError as exc:
                    self._put(Failure(f"{self.path}: {exc}"))
                    return
                self.polls += 1
                if poll.frames:  # the first screen's worth has been read: full chunks from now on
                    self._tail.max_bytes_per_poll = self._chunk_bytes
                caught_up = poll.offset + self._tail.pending >= poll.size
                if self._worth_sending(poll):
                    self._put(Delivery(poll, self._tail.pending, caught_up))
                if poll.frames or poll.corruptions or not caught_up:
                    quiet_since = time.monotonic()
                if not caught_up:
                    continue  # more to read right now (a big log loading)
                quiet = time.monotonic() - quiet_since
                self._stopping.wait(self._fast if quiet < 2.0 else self._idle)
        finally:
            self._tail.close()

    def _worth_sending(self, poll: Poll) -> bool:
        changed = bool(poll.frames or poll.corruptions or poll.reset)
        if poll.waiting != self._last_waiting:
            self._last_waiting = poll.waiting
            changed = True
        if poll.size != self._last_size:  # growth without a whole frame yet still moves "last growth"
            self._last_size = poll.size
            changed = True
        return changed

    def _put(self, item) -> None:
        with self._cond:
            while len(self._items) >= MAX_QUEUED and not self._stopping.is_set():
                self._cond.wait(0.5)
            self._items.append(item)
            should_notify = not self._notified
            self._notified = True
        if should_notify:
            try:
                self._notify()
            except Exception:  # the app is gone; nothing left to tell
                self._stopping.set()
