"""What a file's first bytes say it is: the one rule every reader and the appending writer use.

A writer creates the log before its first write, so an empty file, or one that
holds only the first bytes of a header, is a log that has not started yet
(`PENDING`), not a foreign file. A whole header is checked by
`format.check_header` (bad magic, a newer format). A file whose start is not a
header is a damaged log if a header or a verified frame header begins in its
first bytes (`sniff_file` asks format.FrameDecoder, the readers' own rule),
else it is not a log.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass

from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    MAGIC,
    FrameDecoder,
    LogFormatError,
    check_header,
)


class HeadState(enum.Enum):
    LOG = "log"  # a whole header this reader can read
    PENDING = "pending"  # empty, or a prefix of a header: not started yet
    FOREIGN = "foreign"  # not a weighttui log, or a format this reader cannot read


@dataclass(frozen=True)
class Head:
    state: HeadState
    reason: str = ""  # FOREIGN: why, a sentence for a person
    version: int | None = None  # LOG: the format version
    damaged: bool = False  # LOG: its start is damaged (readers skip it and report a corruption at 0)

    def raise_if_foreign(self) -> None:
        if self.state is HeadState.FOREIGN:
            raise LogFormatError(self.reason)


def classify_head(head: bytes) -> Head:
    """Classify up to the first HEADER_SIZE bytes of a file."""
    head = head[:HEADER_SIZE]
    if len(head) < HEADER_SIZE:
        if MAGIC.startswith(head[: len(MAGIC)]):
            return Head(HeadState.PENDING)
        return Head(HeadState.FOREIGN, "not a weighttui run log (bad magic bytes)")
    try:
        return Head(HeadState.LOG, version=check_header(head))
    except LogFormatError as exc:
        return Head(HeadState.FOREIGN, str(exc))


def not_a_file(mode: int, *, devices: bool = False) -> str | None:
    """What a file type that cannot hold a run log is called (a FIFO would block
    whoever opens it, a socket cannot be opened); None for a regular file, and
    for a character device when `devices` (a writer may write to /dev/null)."""
    if stat.S_ISREG(mode) or (devices and stat.S_ISCHR(mode)):
        return None
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISCHR, "a character device")):
        if test(mode):
            return name
    return "not a regular file"


def open_readonly(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the file at `path`, never blocking: LogFormatError
    (one line) for anything but a regular file, OSError if it cannot be opened."""
    kind = not_a_file(os.stat(path).st_mode)
    if kind is None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        kind = not_a_file(os.fstat(fd).st_mode)  # replaced by a FIFO in between
        if kind is None:
            return fd
        os.close(fd)
    raise LogFormatError(f"{os.fspath(path)} is {kind}, not a regular file: not a run log")


def sniff_file(path: str | os.PathLike[str], *, search: int | None = None) -> Head:
    """Classify the file at `path` (OSError if it cannot be opened). Anything but a
    regular file is FOREIGN, without being opened (a FIFO would block).

    A file whose first bytes are not a header is a LOG with a damaged start
    (`damaged`) when a header or a verified frame header begins in its first
    `search` bytes (format.START_SEARCH by default), as a reader would find it
    (format.FrameDecoder); a smaller
    `search` bounds what is read of each file (directory discovery)."""
    kind = not_a_file(os.stat(path).st_mode)
    if kind is not None:
        return Head(HeadState.FOREIGN, f"{os.fspath(path)} is {kind}, not a regular file: not a run log")
    fd = open_readonly(path)
    try:
        return sniff_fd(fd, search=search)
    finally:
        os.close(fd)


def sniff_fd(fd: int, *, search: int | None = None) -> Head:
    """`sniff_file` of an open, readable regular file."""
    head = classify_head(os.pread(fd, HEADER_SIZE, 0))
    if head.state is not HeadState.FOREIGN or not head.reason.endswith("(bad magic bytes)"):
        return head
    dec = FrameDecoder(0, file_start=True, search=search)
    size = os.fstat(fd).st_size
    at = 0
    try:
        while dec.at_start and at < min(size, dec.search + FRAME_HEADER_SIZE):
            data = os.pread(fd, min(1 << 20, size - at), at)
            if not data:
                break
            at += len(data)
            dec.feed(data)
            for _item in dec.frames():
                break  # the first item decides: the damaged start was skipped to a header or frame
        if dec.at_start and at >= size:
            dec.end_of_data()
    except LogFormatError as exc:
        return Head(HeadState.FOREIGN, str(exc))
    if dec.at_start:
        return Head(HeadState.PENDING)  # it ends inside what may become a header or frame: wait
    return Head(HeadState.LOG, version=dec.version, damaged=True)
