"""The log file and the thread that writes it: a queue of jobs, drops counted, the end record.

The training thread only queues (`put`); encoding and I/O happen here. A write
error stops the writing (reported once), never the training.

The queue holds at most `queue_size` heavy jobs (snapshots, complete values);
light ones (scalars, events) have their own, much larger bound, so a loop that
records a scalar every step never pushes a snapshot out. The writer thread
alone writes to the descriptor and closes it: close() waits a bounded time and,
if the thread is still stuck in write() (a hung mount), leaves the descriptor
to it instead of closing it under it (its number would be reused by the next
file the program opens, and the late frames would land there).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from weighttui.log.format import HEADER, FrameType, encode_frame
from weighttui.record.encode import declarations_frame, encode_snapshot, values_frames
from weighttui.record.logfile import LogBusy, NotALogFile, open_log, release
from weighttui.record.reporting import Reporter

DEFAULT_QUEUE_SIZE = 32
LIGHT_QUEUE_SIZE = 65536  # scalars and events waiting (a few hundred bytes each)
END_STATUSES = ("finished", "failed", "interrupted")
# close() gives up on a writer that made no progress for this long (a hung mount)
DEFAULT_CLOSE_TIMEOUT = 15.0
MAX_ERROR_CHARS = 4000  # of an exception message in the end record

_STOP = object()


@dataclass
class Job:
    """One unit of work for the writer thread: frames to encode, in order."""

    declarations: list = field(default_factory=list)  # TensorInfo not yet declared
    snapshot: dict | None = None  # payload with numpy arrays still unencoded
    values: list = field(default_factory=list)  # (step, epoch, TensorInfo, ndarray)
    frames: list = field(default_factory=list)  # (FrameType, payload) written as is
    done: threading.Event | None = None  # set once the writer is past this job (Recorder.drain)

    @property
    def heavy(self) -> bool:
        return self.snapshot is not None or bool(self.values)


class JobQueue:
    """FIFO of jobs with separate bounds for heavy and light ones.

    Its lock is reentrant: a SIGTERM handler that closes the log may run in the
    main thread while that thread is inside put().
    """

    def __init__(self, heavy_max: int, light_max: int = LIGHT_QUEUE_SIZE):
        self.heavy_max = heavy_max
        self.light_max = light_max
        self._items: deque = deque()
        self._cond = threading.Condition(threading.RLock())
        self.heavy = 0
        self.light = 0

    def put(self, job) -> bool:
        with self._cond:
            if job is not _STOP:
                if job.heavy:
                    if self.heavy >= self.heavy_max:
                        return False
                    self.heavy += 1
                else:
                    if self.light >= self.light_max:
                        return False
                    self.light += 1
            self._items.append(job)
            self._cond.notify()
            return True

    def get(self):
        with self._cond:
            while not self._items:
                # a timeout, not a bare wait: a KeyboardInterrupt raised in the main thread inside
                # Condition.notify can lose the wake-up, and close() then waited for a writer that slept on
                self._cond.wait(0.5)
            job = self._items.popleft()
            if job is not _STOP:
                if job.heavy:
                    self.heavy -= 1
                else:
                    self.light -= 1
            return job

    def pending(self) -> tuple[int, int, int]:
        """(snapshots, complete-values jobs, other records) still queued."""
        with self._cond:
            items = [j for j in self._items if j is not _STOP]
        snaps = sum(j.snapshot is not None for j in items)
        values = sum(j.snapshot is None and bool(j.values) for j in items)
        return snaps, values, len(items) - snaps - values


class LogWriter:
    """Opens `path` (mode "w": anew, "a": a new run after those already there) and writes jobs.

    `lock` is held by callers of `put` (the recorder's lock, shared with its
    registry); the training-side counters are changed under it, the writer
    thread's under none (each counter has one writing thread).
    """

    def __init__(self, path: str, *, mode: str, run_frame: bytes, lock: threading.Lock, reporter: Reporter,
                 queue_size: int = DEFAULT_QUEUE_SIZE, fsync_every: float | None = None,
                 file_mode: int = 0o600, close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
                 supersede=None):
        self.path = path
        self.lock = lock
        self.reporter = reporter
        self.fsync_every = fsync_every
        self.file_mode = file_mode
        self.close_timeout = float(close_timeout)
        self.fd: int | None = None
        self.failed = False
        self.queue_size = queue_size
        self.queued = 0  # snapshots queued
        self.written = 0  # snapshots written
        self._dropped_put = 0  # snapshots refused: the queue was full (training thread)
        self._dropped_write = 0  # snapshots lost to a write failure (writer thread)
        self._dropped_call = 0  # snapshots a failed snapshot() call cost (reported as the failure it was)
        self.values_dropped = 0  # complete-values jobs refused: the queue was full
        self.records_dropped = 0  # scalars/events refused: their queue was full
        self._dropped_reported = 0
        self._missed_step: int | None = None  # last step counted by count_missed
        self._last_fsync = time.monotonic()
        self._queue = JobQueue(queue_size)
        self._run_frame = run_frame
        self._declared: list = []  # every declaration written, for a restart after truncation
        self._size = 0  # the file's size after our latest write (truncation check)
        self.progress = 0  # bytes written, for close()'s stall timer
        self._abandoned = False
        self._supersede = supersede or (lambda reason: None)
        self._key: tuple[int, int] | None = None
        self._open(mode, run_frame)
        self._thread = threading.Thread(target=self._loop, name="weighttui-writer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the writer thread is still there to take jobs."""
        return self._thread.is_alive()

    @property
    def dropped(self) -> int:
        """Snapshots skipped: the writer fell behind, or failed, or the call that asked for it did."""
        return self._dropped_put + self._dropped_write + self._dropped_call

    # ------------------------------------------------------------------ open

    def _open(self, mode: str, run_frame: bytes) -> None:
        try:
            opened = open_log(self.path, mode=mode, file_mode=self.file_mode, supersede=self._supersede)
        except OSError as exc:
            self._fail(exc, "opening the log")
            return
        self.fd, self._key = opened.fd, opened.key
        try:
            self._write((HEADER if opened.fresh else b"") + run_frame
                        + (self._restart_event() if opened.restarted else b""))
            self._size = os.fstat(self.fd).st_size
        except OSError as exc:
            self._fail(exc, "opening the log")

    def _restart_event(self) -> bytes:
        message = f"{self.path} held only the start of a header (a log never written past it): started anew"
        self.reporter.once("restarted", f"weighttui: {message}")
        return _event_frame("restarted", message, "warning")

    # ----------------------------------------------------------------- queue

    def put(self, job: Job) -> bool:
        """Queue a job without waiting (caller holds `lock`); False if its part of
        the queue is full (a snapshot then counts as dropped, and the first drop
        of each kind is said once on stderr)."""
        if self._queue.put(job):
            if job.snapshot is not None:
                self.queued += 1
            return True
        if job.snapshot is not None:
            self._dropped_put += 1
            self.reporter.once("dropped", (
                f"weighttui: warning: snapshot at step {job.snapshot['step']} dropped: {self.queue_size} "
                "snapshots were still waiting to be written (the writer thread or the disk is slower "
                "than training); later drops are counted in the log (weighttui info), not printed. "
                "Record less often (every=), or give Recorder(queue_size=) more room"))
        elif job.values:
            self.values_dropped += 1
            self.reporter.once("values_dropped", (
                f"weighttui: warning: complete values at step {job.values[0][0]} dropped: "
                f"{self.queue_size} snapshots were still waiting to be written"))
        else:
            self.records_dropped += 1
            self.reporter.once("records_dropped", (
                f"weighttui: warning: scalars/events dropped: {self._queue.light_max} were still "
                "waiting to be written (the disk is slower than training)"))
        return False

    def count_missed(self, step: int, *, failed_call: bool = False) -> None:
        """After a write failure (or a `failed_call`: the snapshot() call raised), a snapshot the
        schedule asked for counts as dropped (once per step), so `dropped` says how much of the
        run the log lacks."""
        with self.lock:
            if step != self._missed_step:
                self._missed_step = step
                if failed_call:
                    self._dropped_call += 1
                else:
                    self._dropped_put += 1

    # ---------------------------------------------------------------- thread

    def _loop(self) -> None:
        try:
            with np.errstate(all="ignore"):  # finishing rows of extreme values: no warnings from this thread
                self._run()
        finally:
            if self._abandoned:
                self._close_fd()  # close() left the descriptor to this thread

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP or self._abandoned:
                return
            try:
                self._do(job)
            finally:
                if job.done is not None:  # Recorder.drain: everything queued up to this job is written
                    job.done.set()

    def _do(self, job: Job) -> None:
        if self.failed:
            if job.snapshot is not None:
                self._dropped_write += 1
            return
        written = self.written
        try:
            self._check_file()
            self._write_job(job)
            self._report_drops()
            if self.fsync_every is not None and time.monotonic() - self._last_fsync >= self.fsync_every:
                os.fsync(self._fd())
                self._last_fsync = time.monotonic()
        except Exception as exc:  # whatever stops the writing stops only the writing
            if job.snapshot is not None and self.written == written:  # its frame did not reach the log
                self._dropped_write += 1
            self._fail(exc, "writing the log")

    def _check_file(self) -> None:
        """Before a job: the file must still have a name and hold what we wrote."""
        if self.fd is None:
            return
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_nlink == 0:
            # Writes to a removed file succeed but reach nobody: stop instead.
            raise FileNotFoundError("the log file (or its directory) was removed")
        if st.st_size < self._size:
            self._restart_truncated(st.st_size)
        else:
            self._size = st.st_size  # another appender may have added to it

    def _restart_truncated(self, size: int) -> None:
        """The file shrank under us (`: > run.sock`, logrotate copytruncate): start a
        valid log again, so that what follows can be read."""
        message = (f"{self.path} was truncated while being written ({self._size} -> {size} bytes): "
                   "started the log again (header, run, tensors); what was before is gone")
        self.reporter.once("truncated", f"weighttui: warning: {message}")
        if size:
            # someone wrote after truncating it: what is there is not a log we can continue
            os.ftruncate(self._fd(), 0)
        self._size = 0
        out = HEADER + self._run_frame
        if self._declared:
            out += declarations_frame(self._declared)
        self._write(out + _event_frame("truncated", message, "warning"))

    def _write_job(self, job: Job) -> None:
        out = []
        if job.declarations:
            out.append(declarations_frame(job.declarations))
            self._declared.extend(job.declarations)
        if job.snapshot is not None:
            out.append(encode_frame(FrameType.SNAPSHOT, encode_snapshot(job.snapshot)))
        for frame in out:
            self._write(frame)
        if job.snapshot is not None:  # in the log now, whatever happens to the frames after it
            self.written += 1
        for ftype, payload in job.frames:
            self._write(encode_frame(ftype, payload))
        for step, epoch, info, value in job.values:
            for pieces in values_frames(step, epoch, info, value):
                for piece in pieces:  # the data piece is a view of the values (no copy)
                    self._write(piece)

    def _report_drops(self) -> None:
        dropped = self._dropped_put + self._dropped_write  # (a failed call's were reported as that failure)
        if dropped > self._dropped_reported:
            n = dropped - self._dropped_reported
            self._dropped_reported = dropped
            self._write(_event_frame("dropped", (
                f"{n} snapshot(s) dropped: {self.queue_size} snapshots were still waiting to be "
                f"written (the writer or the disk was slower than training; {dropped} in all)"), "warning"))

    def _fd(self) -> int:
        if self.fd is None:
            raise OSError("the log is not open")
        return self.fd

    def _write(self, data) -> None:
        fd = self._fd()
        view = memoryview(data).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]
            self.progress += n
        self._size += len(data)

    # ----------------------------------------------------------------- close

    def close(self, status: str = "finished", *, error=None, deadline: float | None = None) -> None:
        """Write what is queued, then the end record; fsync and close the file.

        Waits while the writer makes progress; gives up after `close_timeout`
        seconds without any (or at `deadline`, a time.monotonic() value), says
        what was left unwritten, and leaves the descriptor to the stuck thread.
        """
        self._queue.put(_STOP)
        start = last = time.monotonic()
        seen = self.progress
        while self._thread.is_alive():
            self._thread.join(0.05)
            now = time.monotonic()
            if self.progress != seen:
                seen, last = self.progress, now
            if now - last >= self.close_timeout or (deadline is not None and now >= deadline):
                break
        if self._thread.is_alive():
            self._give_up(time.monotonic() - start)
            return
        if self.fd is None:
            return
        try:
            if not self.failed:
                self._check_file()
                self._report_drops()
                self._write(encode_frame(FrameType.END, end_payload(status, self.written, self.dropped, error)))
                os.fsync(self.fd)
        except OSError as exc:
            self._fail(exc, "closing the log")
        finally:
            self._close_fd()

    def _give_up(self, waited: float) -> None:
        self._abandoned = True
        snaps, values, other = self._queue.pending()
        self.reporter.once("stuck", (
            f"weighttui: error closing {self.path}: the writer thread has been stuck in write() "
            f"for {waited:.0f} s (a hung or very slow filesystem?); gave up waiting: {snaps} snapshot(s), "
            f"{values} complete-values record(s) and {other} other record(s) left unwritten, plus the one "
            "being written; the log has no end record. The descriptor stays open until the write "
            "returns, so no other file receives its bytes"))
        self._dropped_write += snaps

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if self._key is not None:
            release(self._key, self._supersede)
        try:
            os.close(fd)
        except OSError:
            pass

    def forget_in_child(self) -> None:
        """A forked child: this process owns neither the thread nor the log."""
        fd, self.fd = self.fd, None
        self.failed = True
        if fd is not None:
            try:
                os.close(fd)  # the child's copy only; the parent's stays open
            except OSError:
                pass

    def _fail(self, exc: BaseException, doing: str) -> None:
        """A write problem: report once, stop writing, training goes on."""
        self.failed = True
        if isinstance(exc, (NotALogFile, LogBusy)):  # refused at the open: the reason says it all
            message = f"weighttui: error: {exc}; {self.reporter.goes_on}"
        else:
            message = f"weighttui: error {doing} {self.path}: {exc}; recording stopped, {self.reporter.goes_on}"
        self.reporter.once("fail", message)


def _event_frame(kind: str, message: str, level: str) -> bytes:
    return encode_frame(FrameType.EVENT, {
        "step": None, "time": time.time(), "level": level, "kind": kind, "message": message, "tensor": None,
    })


def end_payload(status: str, snapshots: int, dropped: int, error=None) -> dict:
    """The end record; `error`: what ended the run, an exception or (type, message)."""
    out = {"time": time.time(), "status": status if status in END_STATUSES else "finished",
           "snapshots": int(snapshots), "dropped": int(dropped)}
    if error is not None:
        if isinstance(error, tuple):
            kind, message = error
        else:
            kind = type(error).__qualname__
            try:
                message = str(error)
            except Exception:  # an exception whose __str__ fails still has a type
                message = ""
        out["error_type"] = str(kind)
        out["error_message"] = str(message)[:MAX_ERROR_CHARS]
    return out
