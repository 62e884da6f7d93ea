"""The latest snapshots of a log without reading the whole log: what a viewer shows first on a big log.

`latest_frames(path)` walks the frame headers from the start of the file (16 bytes a frame,
each header verified by its HCRC, no payload read: about 3 µs a frame, 0.1 s for a 1 GiB
log of 25,000 frames) to find the latest run's run and tensors frames and its last
snapshots, then reads those frames with `log/reader.read_frame_at` (the payload CRC checked
as every reader checks it). The frames go to a RunData like any poll's: the viewer shows
them while the whole log is indexed (tui/app.py).

A walk that takes longer than its deadline (walk_deadline: a huge log, a slow disk) stops there
and the latest snapshots are found from the end instead (`_tail_chain`): the file is searched
backwards for the frame sync, as a reader resynchronises after damage (docs/FORMAT.md), until a
frame header that verifies is found from which the headers tile the file to its end; earlier
ones are added until the chain holds the last snapshots. The latest run's run and tensors frames
come from the walk (or from the chain, when the latest run began in it); snapshots that name a
tensor the frames found do not declare, or a step below the walk's last one (a run appended in
the part neither read), give None.

Anything unusual gives None, and the caller reads the log the ordinary way: damage (a
header that does not verify: only the resynchronising reader may decide what follows), no
snapshot yet, neither the walk nor the search from the end in time.
"""

from __future__ import annotations

import os
import time
from collections import deque

from weighttui.data.run import RunData
from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    SYNC,
    Frame,
    FrameType,
    check_header,
    parse_frame_header,
)
from weighttui.log.reader import read_frame_at
from weighttui.log.sniff import open_readonly
from weighttui.log.tail import Poll

# A log with less than this left to read (not covered by its index) is read from its start: the
# whole history comes in about as fast as its latest snapshots would.
PREVIEW_MIN_BYTES = 32 * 1024 * 1024
SNAPSHOTS = 16  # the last snapshots read: the update ratio needs two, a few more give the sparklines a start
# The header walk gives up after DEADLINE_S, or DEADLINE_S_PER_GIB for each GiB of log if longer, at
# most DEADLINE_MAX_S (the viewer then shows the log from its start, and its latest only once all of it
# is read: minutes on a huge log). A 10 GiB log (~170,000 frames) walks in 0.4 s warm, over 0.5 s cold.
DEADLINE_S = 0.5
DEADLINE_S_PER_GIB = 0.2
DEADLINE_MAX_S = 3.0
CHECK_EVERY = 1024  # frames walked between two looks at the clock
# The search from the end reads at most this much of the log (backwards, in chunks that double from
# 1 MiB): the last snapshots of any run fit, unless one snapshot is that big.
TAIL_SEARCH_BYTES = 256 * 1024 * 1024


def walk_deadline(size: int) -> float:
    """Seconds the header walk of a `size`-byte log may take."""
    return min(DEADLINE_MAX_S, max(DEADLINE_S, DEADLINE_S_PER_GIB * size / 2**30))


def latest_frames(path, *, snapshots: int = SNAPSHOTS, deadline_s: float | None = None) -> list[Frame] | None:
    """The frames a reader needs for the latest run's last `snapshots` snapshots, in file order: every
    run frame (so that "run 2 of 2" holds), the latest run's tensors frames, its last snapshots and
    the scalars and end frames after the first of them. None when the log cannot be walked cleanly
    (or within `deadline_s`, default walk_deadline(its size))."""
    try:
        fd = open_readonly(path)
    except (OSError, ValueError):
        return None
    try:
        if deadline_s is None:
            deadline_s = walk_deadline(os.fstat(fd).st_size)
        return _latest(fd, snapshots, time.monotonic() + deadline_s)
    except (OSError, ValueError):  # a bad header, a file shrinking under us: the ordinary reader decides
        return None
    finally:
        os.close(fd)


def preview(path, covered: int, *, max_rows: int | None, min_bytes: int | None = None) -> RunData | None:
    """A RunData (no index: cache=False) of the latest run's last snapshots, for a viewer to show
    while the whole log is read behind them; None when the log has less than `min_bytes` past
    `covered` (where its index ends; default PREVIEW_MIN_BYTES) or cannot be walked cleanly
    (then it is read from its start)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    if size - covered <= 0 or size - covered < (PREVIEW_MIN_BYTES if min_bytes is None else min_bytes):
        return None
    frames = latest_frames(path)
    if not frames:
        return None  # damage, no snapshot yet, or a slow walk: read from the start as before
    data = RunData(path, max_rows=max_rows, cache=False)
    data.ingest(Poll(frames=frames, size=size))
    if data.corruptions:  # (found from the end: a snapshot naming a tensor declared in the part not read)
        return None
    return data if data.n else None


def _latest(fd: int, snapshots: int, deadline: float) -> list[Frame] | None:
    size = os.fstat(fd).st_size
    check_header(os.pread(fd, HEADER_SIZE, 0))
    runs: list[tuple[int, int]] = []  # (offset, frame size)
    tensors: list[tuple[int, int]] = []  # of the latest run
    snaps: deque[tuple[int, int]] = deque(maxlen=max(1, snapshots))
    after: list[tuple[int, int]] = []  # scalars and end frames of the latest run, since snaps[0]
    off = HEADER_SIZE
    frames = 0
    while off + FRAME_HEADER_SIZE <= size:
        head = os.pread(fd, FRAME_HEADER_SIZE, off)
        parsed = parse_frame_header(head, 0) if len(head) == FRAME_HEADER_SIZE else None
        if parsed is None:
            return None  # damage (or the file shrank): resynchronising is the full reader's job
        length, ftype = parsed
        end = off + FRAME_OVERHEAD + length
        if end > size:
            break  # a frame still being written, or a torn tail
        item = (off, end - off)
        if ftype == FrameType.RUN:
            runs.append(item)
            tensors.clear()
            snaps.clear()
            after.clear()
        elif ftype == FrameType.TENSORS:
            tensors.append(item)
        elif ftype == FrameType.SNAPSHOT:
            snaps.append(item)
            if len(after) > 4 * len(snaps):  # keep only what follows the oldest snapshot kept
                after = [a for a in after if a[0] > snaps[0][0]]
        elif ftype in (FrameType.SCALARS, FrameType.END):
            after.append(item)
        off = end
        frames += 1
        if frames % CHECK_EVERY == 0 and time.monotonic() > deadline:
            return _from_the_end(fd, size, off, runs, tensors, snaps[-1] if snaps else None, snapshots)
    if not runs or not snaps:
        return None
    return _read(fd, [*runs, *tensors, *snaps, *(a for a in after if a[0] > snaps[0][0])])


def _read(fd: int, wanted: list[tuple[int, int]]) -> list[Frame] | None:
    """The frames at these (offset, size), each verified, in file order; None if one is not."""
    out = []
    for at, n in sorted(wanted):
        got = read_frame_at(fd, at)
        if got is None:
            return None
        out.append(Frame(at, got[0], got[1], n))
    return out


def _from_the_end(fd: int, size: int, walked: int, runs: list[tuple[int, int]], tensors: list[tuple[int, int]],
                  last_walked: tuple[int, int] | None, snapshots: int) -> list[Frame] | None:
    """The walk stopped at `walked` (its deadline): the latest snapshots from the frames that tile the
    file's end (`_tail_chain`), with the run and tensors frames the walk found (or the chain's own)."""
    chain = _tail_chain(fd, size, walked, snapshots)
    if chain is None:
        return None
    starts = [i for i, (_o, _n, t) in enumerate(chain) if t == FrameType.RUN]
    if starts:  # the latest run began in the chain: its own run and tensors frames follow there
        runs = runs + [(o, n) for o, n, t in chain if t == FrameType.RUN]
        chain = chain[starts[-1]:]
        tensors = []
        last_walked = None
    elif not runs:
        return None
    snaps = [(o, n) for o, n, t in chain if t == FrameType.SNAPSHOT][-max(1, snapshots):]
    if not snaps:
        return None
    tensors = tensors + [(o, n) for o, n, t in chain if t == FrameType.TENSORS]
    after = [(o, n) for o, n, t in chain if t in (FrameType.SCALARS, FrameType.END) and o > snaps[0][0]]
    out = _read(fd, [*runs, *tensors, *snaps, *after])
    if out is None:
        return None
    if last_walked is not None:  # a step lower than the walk's last: another run, appended where nobody read
        got = read_frame_at(fd, last_walked[0])
        first = next(f for f in out if f.offset == snaps[0][0])
        try:
            if got is None or int(first.payload["step"]) < int(got[1]["step"]):
                return None
        except (KeyError, TypeError, ValueError):
            return None
    return out


def _tail_chain(fd: int, size: int, floor: int, snapshots: int) -> list[tuple[int, int, int]] | None:
    """(offset, size, type) of the frames that tile the log's end, found by searching backwards from
    the end for the frame sync: the latest frame header that verifies and from which the headers
    lead to the end of the file (or to a torn final frame), then earlier ones that lead to it, until
    the chain holds `snapshots` snapshots or a run frame, or reaches `floor` (where the walk
    stopped) or TAIL_SEARCH_BYTES. None when no such chain with a snapshot is found."""
    chain: list[tuple[int, int, int]] = []
    start = None  # the chain's first frame
    hi = size
    chunk = 1 << 20
    while hi > floor and size - hi < TAIL_SEARCH_BYTES:
        lo = max(floor, hi - chunk)
        buf = os.pread(fd, hi - lo + FRAME_HEADER_SIZE - 1, lo)  # (a header that begins before hi)
        at = len(buf)
        while True:
            at = buf.rfind(SYNC, 0, min(at, hi - lo + len(SYNC) - 1))
            if at < 0:
                break
            c = lo + at
            if start is not None and c >= start:
                continue
            got = _lead(fd, c, size if start is None else start, size)
            if got is None:
                continue
            chain[:0] = got
            start = c
            types = {t for _o, _n, t in chain}
            if FrameType.RUN in types or sum(t == FrameType.SNAPSHOT for _o, _n, t in chain) >= snapshots:
                return chain
        hi = lo
        chunk *= 2
    return chain if any(t == FrameType.SNAPSHOT for _o, _n, t in chain) else None


def _lead(fd: int, c: int, to: int, size: int) -> list[tuple[int, int, int]] | None:
    """The frames from offset c whose verified headers tile exactly to `to` (or, when `to` is the file's
    `size` as the search began, to a final frame cut short there: a live writer's, or a torn tail);
    None if a header there does not verify or they overshoot."""
    out: list[tuple[int, int, int]] = []
    off = c
    while off < to:
        head = os.pread(fd, min(FRAME_HEADER_SIZE, size - off), off)
        parsed = parse_frame_header(head, 0) if len(head) == FRAME_HEADER_SIZE else None
        if parsed is None:
            return None if off + FRAME_HEADER_SIZE <= to or not out else out  # (a header still being written)
        length, ftype = parsed
        end = off + FRAME_OVERHEAD + length
        if end > to:
            return out if out and to >= size else None  # a torn (or growing) final frame
        out.append((off, end - off, ftype))
        off = end
    return out
