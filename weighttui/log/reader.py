"""Reading a run log file by position: whole-file scans and single frames by offset.

One reading rule for every reader: `scan_frames` drives format.FrameDecoder (frame
verification, resynchronisation after damage, an incomplete frame followed by an
appended one, a torn tail) over a file descriptor, and `read_frame_at` re-reads
one frame whose offset an index recorded, with the same checks. Nothing here
writes.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Any

from weighttui.log import format as fmt
from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    FrameDecoder,
    FrameType,
    crc32,
    decode_payload,
    parse_frame_header,
)
from weighttui.log.worker import SharedWorker

# (2 MiB chunks decode a little faster, but freed 8 MiB chunks also raise glibc's mmap threshold,
# so that the index writer's arrays are reused from the heap: with 2 MiB its page faults went
# from 5k to 51k on the 1 GiB benchmark log, +0.3 s system time)
READ_CHUNK = 8 * 1024 * 1024
_U32 = struct.Struct("<I")


@dataclass
class ScanState:
    """Where a scan of a file stopped, so the next one can go on from there.

    offset: first byte not consumed (the start of an incomplete frame, or of the
    bytes kept while resynchronising; 0: the file's start, its header not read
    yet); resyncing: damage was being skipped; pending: bytes after `offset`
    (a torn tail when not resyncing).
    """

    offset: int = 0
    resyncing: bool = False
    pending: int = 0

    @property
    def torn_tail(self) -> int:
        return 0 if self.resyncing or self.offset == 0 else self.pending


def scan_frames(fd: int, state: ScanState, size: int, *, chunk: int = READ_CHUNK, prepared: bool = False,
                light: bool = False):
    """Frames and corruptions of the file `fd` from `state.offset` up to `size`.

    Every reader goes through this (or through FrameDecoder, its engine, when it
    is fed from a pipe): frame verification, resynchronisation after damage, an
    incomplete frame followed by an appended one, a torn tail; from offset 0, the
    file header and a damaged start (FrameDecoder's file_start). `state` is
    updated when the generator is exhausted; reading never writes. Raises
    LogFormatError for a file that is not a log or is too new. prepared: snapshot payloads may come as
    format.decode_snapshot's tuples (for store.builder, which reads both; FrameDecoder); light (with
    prepared): their usual histograms and samples as records.Omitted stand-ins, for a store that leaves
    them in the log (FrameDecoder).
    """
    dec = FrameDecoder(state.offset, resyncing=state.resyncing, file_start=state.offset == 0, prepared=prepared,
                       light=light)
    read_at = state.offset
    # A long scan reads its next chunk on another thread while this one's frames are decoded
    # (os.preadv runs without the GIL: the copy out of the page cache overlaps the decoding), into a
    # buffer with room in front for the bytes the last chunk left pending (a frame cut by the chunk's
    # end), so that the decoder takes it as it is instead of copying it (FrameDecoder.feed_reserved).
    ahead = READ_AHEAD.executor() if size - read_at > READ_AHEAD_MIN else None
    nxt = None
    try:
        while read_at < size:
            want = min(max(chunk, dec.wanted()), size - read_at)
            # (read here, the pending bytes are known: room for just them)
            data, room = nxt.result() if nxt is not None else _read_with_room(fd, want, read_at, dec.pending)
            nxt = None
            if len(data) == room:
                break  # the file shrank under us: stop, the caller notices the reset
            read_at += len(data) - room
            dec.feed_reserved(data, room)
            if ahead is not None and read_at < size:
                nxt = ahead.submit(_read_with_room, fd, min(max(chunk, dec.wanted()), size - read_at), read_at, ROOM)
            yield from dec.frames()
    finally:
        if nxt is not None:  # (closed early: the read must not outlive the caller's fd)
            with contextlib.suppress(OSError):
                nxt.result()
    if read_at >= size:
        dec.end_of_data()
    state.offset, state.resyncing, state.pending = dec.offset, dec.resyncing, dec.pending


# a bytearray not zeroed first (weighttui._frames, optional): the read overwrites what is used of it
_buffer: Any = bytearray
try:
    from weighttui._frames import buffer as _c_buffer
except ImportError:  # not built
    pass
else:
    _buffer = _c_buffer

READ_AHEAD_MIN = 32 * 1024 * 1024  # scans shorter than this read on one thread
ROOM = 1 << 20  # room kept before a chunk's bytes for the last one's pending bytes (a snapshot is ~100 KB)


def _read_with_room(fd: int, n: int, offset: int, room: int) -> tuple[bytearray, int]:
    """(`room` free bytes then up to n bytes of the file from offset (fewer at its end), room)."""
    buf = _buffer(room + n)
    with memoryview(buf) as view:
        got = os.preadv(fd, [view[room:]], offset)
    if got < n:
        del buf[room + got :]
    return buf, room
READ_AHEAD = SharedWorker("weighttui-read")  # the one thread that reads ahead for every long scan


def read_frame_at(fd: int, offset: int, *, prepared: bool = False) -> tuple[int, Any] | None:
    """(TYPE, payload) of the frame at `offset`, verified as scan_frames would; None if it does not verify.
    prepared: a snapshot's payload may be format.decode_snapshot's tuple, as from scan_frames."""
    head = os.pread(fd, FRAME_HEADER_SIZE, offset)
    if len(head) < FRAME_HEADER_SIZE:
        return None
    parsed = parse_frame_header(head, 0)
    if parsed is None:
        return None
    length, ftype = parsed
    rest = os.pread(fd, length + 4, offset + FRAME_HEADER_SIZE)
    if len(rest) != length + 4:
        return None
    body = memoryview(rest)[:length]
    if crc32(body) != _U32.unpack_from(rest, length)[0]:
        return None
    if prepared and ftype == FrameType.SNAPSHOT and fmt.decode_snapshot is not None:
        got = fmt.decode_snapshot(body)
        if got is not None:
            return ftype, got
    try:
        return ftype, decode_payload(body)
    except ValueError:
        return None
