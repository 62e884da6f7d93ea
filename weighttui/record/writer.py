"""The log file and the thread that writes it: a bounded queue of jobs, drops counted, the end record.

The training thread only queues (`put`); encoding and I/O happen here. A write
error stops the writing (reported once), never the training.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass, field

from weighttui.log.format import HEADER, FrameType, LogFormatError, encode_frame
from weighttui.log.sniff import HeadState, sniff_file
from weighttui.record.encode import declarations_frame, encode_snapshot, values_frames
from weighttui.record.reporting import Reporter

DEFAULT_QUEUE_SIZE = 32
END_STATUSES = ("finished", "failed", "interrupted")

_STOP = object()


@dataclass
class Job:
    """One unit of work for the writer thread: frames to encode, in order."""

    declarations: list = field(default_factory=list)  # TensorInfo not yet declared
    snapshot: dict | None = None  # payload with numpy arrays still unencoded
    values: list = field(default_factory=list)  # (step, epoch, TensorInfo, ndarray)
    frames: list = field(default_factory=list)  # (FrameType, payload) written as is


class LogWriter:
    """Opens `path` (mode "w": anew, "a": a new run after those already there) and writes jobs.

    `lock` is held by callers of `put` (the recorder's lock, shared with its
    registry); the counters below are changed under it.
    """

    def __init__(self, path: str, *, mode: str, run_frame: bytes, lock: threading.Lock, reporter: Reporter,
                 queue_size: int = DEFAULT_QUEUE_SIZE, fsync_every: float | None = None,
                 file_mode: int = 0o600):
        self.path = path
        self.lock = lock
        self.reporter = reporter
        self.fsync_every = fsync_every
        self.file_mode = file_mode
        self.fd: int | None = None
        self.failed = False
        self.queued = 0  # snapshots queued
        self.written = 0  # snapshots written
        self.dropped = 0  # snapshots skipped: the writer fell behind, or failed
        self._dropped_reported = 0
        self._missed_step: int | None = None  # last step counted by count_missed
        self._last_fsync = time.monotonic()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._open(mode, run_frame)
        self._thread = threading.Thread(target=self._loop, name="weighttui-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ open

    def _open(self, mode: str, run_frame: bytes) -> None:
        try:
            restart = mode == "a" and self._unfinished_header()
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            if mode == "w" or restart:
                flags |= os.O_TRUNC
            self.fd = os.open(self.path, flags, self.file_mode)
            prefix = b""
            if mode == "w" or restart or os.fstat(self.fd).st_size == 0:
                prefix = HEADER
            self._write(prefix + run_frame + (self._restart_event() if restart else b""))
        except OSError as exc:
            self._fail(exc, "opening the log")

    def _unfinished_header(self) -> bool:
        """Appending: True if the file holds only the first bytes of a header (a log
        whose writer never got further), to be started anew; LogFormatError if it
        is not a weighttui log."""
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return False
        head = sniff_file(self.path)
        if head.state is HeadState.FOREIGN:
            raise LogFormatError(f"{self.path}: cannot append: {head.reason}")
        return head.state is HeadState.PENDING

    def _restart_event(self) -> bytes:
        message = f"{self.path} held only the start of a header (a log never written past it): started anew"
        self.reporter.once("restarted", f"weighttui: {message}")
        return encode_frame(FrameType.EVENT, {
            "step": None, "time": time.time(), "level": "warning", "kind": "restarted",
            "message": message, "tensor": None,
        })

    # ----------------------------------------------------------------- queue

    def put(self, job: Job) -> bool:
        """Queue a job without waiting (caller holds `lock`); False if the queue is full
        (a snapshot then counts as dropped)."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            if job.snapshot is not None:
                self.dropped += 1
            return False
        if job.snapshot is not None:
            self.queued += 1
        return True

    def count_missed(self, step: int) -> None:
        """After a write failure, a snapshot the schedule asked for counts as dropped
        (once per step), so `dropped` says how much of the run the log lacks."""
        with self.lock:
            if step != self._missed_step:
                self._missed_step = step
                self.dropped += 1

    # ---------------------------------------------------------------- thread

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self.failed:
                if job.snapshot is not None:
                    self._add_dropped()
                continue
            try:
                if _unlinked(self.fd):
                    # Writes to a removed file succeed but reach nobody: stop instead.
                    raise FileNotFoundError("the log file (or its directory) was removed")
                self._write_job(job)
                self._report_drops()
                if self.fsync_every is not None and time.monotonic() - self._last_fsync >= self.fsync_every:
                    os.fsync(self._fd())
                    self._last_fsync = time.monotonic()
            except Exception as exc:  # whatever stops the writing stops only the writing
                if job.snapshot is not None:
                    self._add_dropped()
                self._fail(exc, "writing the log")

    def _add_dropped(self) -> None:
        # the training thread counts drops too: += is not atomic across threads
        with self.lock:
            self.dropped += 1

    def _write_job(self, job: Job) -> None:
        out = []
        if job.declarations:
            out.append(declarations_frame(job.declarations))
        if job.snapshot is not None:
            out.append(encode_frame(FrameType.SNAPSHOT, encode_snapshot(job.snapshot)))
        for ftype, payload in job.frames:
            out.append(encode_frame(ftype, payload))
        for frame in out:
            self._write(frame)
        for step, epoch, info, value in job.values:
            for frame in values_frames(step, epoch, info, value):
                self._write(frame)
        if job.snapshot is not None:
            self.written += 1

    def _report_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._dropped_reported:
            n = dropped - self._dropped_reported
            self._dropped_reported = dropped
            self._write(encode_frame(FrameType.EVENT, {
                "step": None, "time": time.time(), "level": "warning", "kind": "dropped",
                "message": f"{n} snapshot(s) dropped: the disk was slower than training "
                           f"({dropped} in all)", "tensor": None,
            }))

    def _fd(self) -> int:
        if self.fd is None:
            raise OSError("the log is not open")
        return self.fd

    def _write(self, data: bytes) -> None:
        fd = self._fd()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    # ----------------------------------------------------------------- close

    def close(self, status: str = "finished") -> None:
        """Write what is queued, then the end record; fsync and close the file."""
        try:
            self._queue.put(_STOP, timeout=30)
            self._thread.join(timeout=60)
        except Exception:  # a stuck writer: the file is closed without an end record
            pass
        if self.fd is None:
            return
        try:
            if not self.failed and not self._thread.is_alive():
                self._report_drops()
                self._write(encode_frame(FrameType.END, {
                    "time": time.time(), "status": status if status in END_STATUSES else "finished",
                    "snapshots": self.written,
                    "dropped": self.dropped,
                }))
                os.fsync(self.fd)
        except OSError as exc:
            self._fail(exc, "closing the log")
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def _fail(self, exc: BaseException, doing: str) -> None:
        """A write problem: report once, stop writing, training goes on."""
        self.failed = True
        self.reporter.once("fail", f"weighttui: error {doing} {self.path}: {exc}; "
                                   "recording stopped, training continues")


def _unlinked(fd: int | None) -> bool:
    """True if fd is a regular file that no longer has a name (deleted under us)."""
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 0
