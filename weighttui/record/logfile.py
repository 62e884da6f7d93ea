"""Opening a run log for writing: what may be written to, who may write it, how it starts.

- Only a regular file (or a path to be created) takes a log. A FIFO, a socket,
  a directory or a block device is refused with one line (`NotALogFile`)
  before anything could block: the open itself is non-blocking. Character
  devices (/dev/null, /dev/full) are accepted: their writes never wait.
- One writer per log: an advisory lock (`flock`) is taken on the file before
  it is truncated. A second writer in another process is refused (`LogBusy`);
  a second Recorder in this process on the same file (a notebook cell run
  again without close()) first closes the earlier one, which is told why.
- mode="a" on a file that holds only the start of a header (a writer killed
  while writing it) starts the log anew, and says so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass

from weighttui.log.format import HEADER_SIZE, LogFormatError
from weighttui.log.sniff import Head, HeadState, classify_head, not_a_file, sniff_fd

# (st_dev, st_ino) -> a callable that closes the recorder writing it, in this process
_writers: dict[tuple[int, int], Callable[[str], None]] = {}
_writers_lock = threading.Lock()


class NotALogFile(OSError):
    """The path names something that is not a regular file."""


class LogBusy(OSError):
    """Another process holds the log's lock."""


@dataclass
class OpenedLog:
    fd: int
    key: tuple[int, int]  # (st_dev, st_ino)
    fresh: bool  # the file is empty: a header goes first
    restarted: bool  # it held only the start of a header and was started anew
    locked: bool


def _refuse_special(path: str, mode: int) -> None:
    kind = not_a_file(mode, devices=True)
    if kind is not None:
        raise NotALogFile(f"{path} is {kind}, not a regular file: a run log must be a file")


def open_log(path: str, *, mode: str, file_mode: int, supersede: Callable[[str], None]) -> OpenedLog:
    """Open `path` for appending frames, locked; truncated for mode "w".

    `supersede(reason)` is what a later Recorder on the same file in this
    process calls to close this one. Raises NotALogFile, LogBusy, OSError and,
    when appending to a foreign file, LogFormatError.
    """
    try:
        _refuse_special(path, os.stat(path).st_mode)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, file_mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a socket, created meanwhile
            raise NotALogFile(f"{path} is a FIFO or socket, not a regular file: a run log must be a file") from None
        raise
    try:
        st = os.fstat(fd)
        _refuse_special(path, st.st_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        key = (st.st_dev, st.st_ino)
        locked = stat.S_ISREG(st.st_mode) and _lock(fd, path, key)
        restarted = False
        if stat.S_ISREG(st.st_mode):
            if mode == "a":
                restarted = _pending_header(fd, path)
            if mode == "w" or restarted:
                os.ftruncate(fd, 0)
        fresh = os.fstat(fd).st_size == 0
        if locked:
            with _writers_lock:
                _writers[key] = supersede
        return OpenedLog(fd=fd, key=key, fresh=fresh, restarted=restarted, locked=locked)
    except BaseException:
        os.close(fd)
        raise


def _lock(fd: int, path: str, key: tuple[int, int]) -> bool:
    """Take the log's advisory lock; True if taken (False: the filesystem has no locks)."""
    for attempt in range(2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            with _writers_lock:
                earlier = _writers.pop(key, None)
            if earlier is None or attempt:
                raise LogBusy(f"{path} is being written by another process (it holds the log's lock): "
                              "not recording to it; give this run another path, or mode='a' once "
                              "the other writer has closed") from None
            earlier(f"a new Recorder in this process opened {path} without this one being closed")
        except OSError:  # ENOLCK, EINVAL: a filesystem without flock (some NFS mounts)
            return False
    return False  # not reached


def held_by_a_writer(path) -> bool:
    """Whether a writer (another process, or another Recorder here) holds the log's lock now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:  # not there (or unreadable): nobody writes it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without flock: nothing tells
        return False
    finally:
        os.close(fd)  # (a shared lock taken goes with the descriptor)
    return False


def release(key: tuple[int, int], supersede: Callable[[str], None]) -> None:
    """Forget this process's writer of `key` (it closed)."""
    with _writers_lock:
        if _writers.get(key) is supersede:
            del _writers[key]


def forget_all() -> None:
    """In a forked child: the parent's writers are not this process's."""
    _writers.clear()


def _pending_header(fd: int, path: str) -> bool:
    """Appending: True if the file holds only the first bytes of a header (a log
    whose writer never got further); LogFormatError if it is not a weighttui log.
    A log whose start is damaged (a header or frame after it: log/sniff.py) is
    appended to; readers skip its damaged start and report it."""
    if os.fstat(fd).st_size == 0:
        return False
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        head = classify_head(os.pread(rfd, HEADER_SIZE, 0))
        if head.state is HeadState.FOREIGN and head.reason.endswith("(bad magic bytes)"):
            head = sniff_fd(rfd)
            if head.state is HeadState.PENDING:  # garbage ending in a partial frame header: not a log to append to
                head = Head(HeadState.FOREIGN, "not a weighttui run log (bad magic bytes)")
    finally:
        os.close(rfd)
    if head.state is HeadState.FOREIGN:
        raise LogFormatError(f"{path}: cannot append: {head.reason}")
    return head.state is HeadState.PENDING
