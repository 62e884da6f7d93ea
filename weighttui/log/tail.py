"""Reading a run log from a path, whole or live.

`LogTail.poll()` returns whatever frames were appended since the last poll.
It handles the file not existing yet, a header not written yet, a damaged start
(skipped to the first header or frame after it, reported as a corruption at
offset 0: format.FrameDecoder), torn tails
(kept and retried while live), corruption (counted, resynchronised) and the
file being truncated or replaced by a new run (reported as a reset, reading
starts over from offset 0). It never writes anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO

from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAGIC,
    Corruption,
    Frame,
    FrameDecoder,
    parse_frame_header,
)
from weighttui.log.sniff import open_readonly

READ_CHUNK = 8 * 1024 * 1024
_FIRST_MAX = 65536  # the first bytes kept (header, any damaged start, first frame) to notice a rewrite


@dataclass
class Poll:
    """What one poll found."""

    frames: list = field(default_factory=list)  # Frame, in file order
    corruptions: list = field(default_factory=list)  # Corruption
    reset: bool = False  # the file was truncated or replaced: drop what you had
    waiting: str | None = None  # "missing" or "no header" while the run has not started
    size: int = 0  # file size seen by this poll
    offset: int = 0  # bytes consumed so far (header and complete frames)
    resyncing: bool = False  # the reader is skipping damage at `offset`
    pending: int = 0  # bytes read after `offset` and held (a frame not complete yet, or damage being skipped)


class LogTail:
    """Incremental reader of one log file. Not thread-safe; one owner."""

    def __init__(self, path, *, max_bytes_per_poll: int | None = None, start=None):
        """start: a ScanState (log/reader.py) to go on from, e.g. where an index of the log ends;
        used for the first open of the path only (a replaced file is read from its start)."""
        self.path = os.fspath(path)
        self.max_bytes_per_poll = max_bytes_per_poll
        self._start = start
        self._fh: BinaryIO | None = None
        self._ino: int | None = None
        self._decoder: FrameDecoder | None = None
        self._first = b""  # header + first frame, to notice an in-place rewrite
        self.version: int | None = None

    # The decoder's consumed offset; what is left after it is pending bytes.
    @property
    def offset(self) -> int:
        return self._decoder.offset if self._decoder else 0

    @property
    def pending(self) -> int:
        """Bytes after the last complete frame (a torn tail if the writer is gone)."""
        return self._decoder.pending if self._decoder else 0

    @property
    def resyncing(self) -> bool:
        return bool(self._decoder and self._decoder.resyncing)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._decoder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _reopen(self) -> bool:
        """Open (or reopen) the path; False if it does not exist."""
        self.close()
        try:
            fh = os.fdopen(open_readonly(self.path), "rb")  # read-only: a viewer never writes
        except FileNotFoundError:
            return False
        self._fh = fh
        self._ino = os.fstat(fh.fileno()).st_ino
        self._decoder = None
        self._first = b""
        return True

    def poll(self) -> Poll:
        """Read what was appended since the last poll.

        Raises LogFormatError for a file that is not a log or is too new, and
        FileNotFoundError never: a missing file is reported as waiting.
        """
        out = Poll()
        reset = self._check_replaced()
        out.reset = reset
        if self._fh is None and not self._reopen():
            out.waiting = "missing"
            return out
        fh = self._fh
        assert fh is not None  # open, or _reopen() just opened it
        size = os.fstat(fh.fileno()).st_size
        out.size = size
        if self._decoder is None:
            start, self._start = self._start, None
            if start is not None and 0 < start.offset <= size:
                self._decoder = FrameDecoder(start.offset, resyncing=start.resyncing)
                self._first = self._first_frame(fh.fileno(), start.offset)
            else:  # from the file's start: the decoder checks the header (or skips a damaged start)
                self._decoder = FrameDecoder(0, file_start=True)
        dec = self._decoder
        budget = self.max_bytes_per_poll
        read_at = dec.offset + dec.pending
        while read_at < size and (budget is None or budget > 0):
            want = max(READ_CHUNK, dec.wanted())
            if budget is not None:
                want = min(want, max(budget, dec.wanted()))
            fh.seek(read_at)
            data = fh.read(min(want, size - read_at))
            if not data:
                break
            read_at += len(data)
            if budget is not None:
                budget -= len(data)
            dec.feed(data)
            for item in dec.frames():
                if isinstance(item, Frame):
                    if not self._first and item.offset + item.size <= _FIRST_MAX:
                        self._first = os.pread(fh.fileno(), item.offset + item.size, 0)
                    out.frames.append(item)
                elif isinstance(item, Corruption):
                    out.corruptions.append(item)
        if read_at >= size:
            dec.end_of_data()  # a damaged start with nothing of a log after it: not a log
        if dec.at_start:
            out.waiting = "no header"
        else:
            self.version = dec.version or self.version
        out.offset = dec.offset
        out.resyncing = dec.resyncing
        out.pending = dec.pending
        return out

    @staticmethod
    def _first_frame(fd: int, covered: int) -> bytes:
        """Header + first frame (as kept when read from the start), to notice an in-place
        rewrite; for a damaged start, the first bytes (at most 4 KiB) of the `covered` ones."""
        head = os.pread(fd, HEADER_SIZE + FRAME_HEADER_SIZE, 0)
        if head[: len(MAGIC)] != MAGIC:
            return os.pread(fd, min(covered, 4096), 0)
        parsed = parse_frame_header(head, HEADER_SIZE) if len(head) == HEADER_SIZE + FRAME_HEADER_SIZE else None
        if parsed is None or HEADER_SIZE + parsed[0] + FRAME_OVERHEAD > _FIRST_MAX:
            return b""
        return os.pread(fd, HEADER_SIZE + FRAME_OVERHEAD + parsed[0], 0)

    def _check_replaced(self) -> bool:
        """True (and reopen) if the path now names another file or shrank."""
        if self._fh is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            # Removed: keep reading the open file (the writer may still hold it).
            return False
        replaced = st.st_ino != self._ino or st.st_size < self.offset + self.pending
        if not replaced and self._first:
            # Truncated and rewritten in place (mode "w" keeps the inode): the
            # first frame, which holds the run id, is no longer the same.
            try:
                replaced = os.pread(self._fh.fileno(), len(self._first), 0) != self._first
            except OSError:
                replaced = True
        if replaced:
            self._reopen()
            return True
        return False
