"""Opening a big finished log fast: index frame headers, decode only what is kept.

`weighttui.open(path, max_rows=N)` on a 1 GB log would otherwise read, CRC and
msgpack-decode every snapshot only for RunData to thin most of them away. Here
a first pass walks the 16-byte frame headers (verifying each header CRC) to
count the target run's snapshots; `kept_snapshots` replays RunData's thinning
rule on those counts to learn which snapshots survive; the second pass reads
and decodes only those and every non-snapshot frame. The rows that come out
are the ones the incremental path would keep.

Thinned-away snapshots are counted (snapshot_count, run summaries) but their
payloads are never read, so damage inside them is not reported. At the first
header that does not verify (damage, a torn tail) indexing stops and the rest
of the file goes through the ordinary FrameDecoder, with resynchronisation.
"""

from __future__ import annotations

import os
import struct
import zlib

from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    Corruption,
    Frame,
    FrameDecoder,
    FrameType,
    check_header,
    decode_payload,
    parse_frame_header,
)

READ_CHUNK = 8 * 1024 * 1024
_U32 = struct.Struct("<I")


def index_frames(fh, size: int) -> tuple[list, int]:
    """[(offset, type, length)] of consecutive verified frame headers from HEADER_SIZE.

    Stops at the first header that does not verify or whose frame runs past
    `size`; returns the index and that offset.
    """
    out = []
    pos = HEADER_SIZE
    buf = b""
    buf_at = pos
    while pos + FRAME_HEADER_SIZE <= size:
        rel = pos - buf_at
        if rel < 0 or rel + FRAME_HEADER_SIZE > len(buf):
            # headers of small frames sit close together: read ahead in one go
            fh.seek(pos)
            buf = fh.read(min(1 << 16, size - pos))
            buf_at, rel = pos, 0
            if len(buf) < FRAME_HEADER_SIZE:
                break
        head = parse_frame_header(buf, rel)
        if head is None:
            break
        length, ftype = head
        end = pos + FRAME_OVERHEAD + length
        if end > size:
            break
        out.append((pos, ftype, length))
        pos = end
    return out, pos


def kept_snapshots(count: int, max_rows: int | None) -> tuple[set | None, int]:
    """(indices kept, final stride) after RunData thins `count` snapshots to max_rows.

    Mirrors RunData._row_for_next/_decimate on indices alone. None: keep all.
    """
    if max_rows is None or count <= max_rows:
        return None, 1
    rows: list[int] = []
    stride = 1
    provisional = False
    for g in range(count):
        if provisional:
            rows[-1] = g
        else:
            if len(rows) >= max_rows:
                stride *= 2
                newest = rows[-1]
                rows = [r for r in rows if r % stride == 0]
                if not rows or rows[-1] != newest:
                    rows.append(newest)
                if newest % stride != 0:
                    rows[-1] = g
                    provisional = g % stride != 0
                    continue
            rows.append(g)
        provisional = g % stride != 0
    return set(rows), stride


def load_indexed(data, fh) -> None:
    """Fill `data` (a fresh RunData with max_rows) from the open file `fh`."""
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    head = fh.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        data.file_size = size
        return
    check_header(head)
    index, stop = index_frames(fh, size)

    # which run's snapshots are thinned: the one RunData will keep
    run_starts = [i for i, (_o, t, _l) in enumerate(index) if t == FrameType.RUN]
    target = data.run_index if data.run_index is not None else len(run_starts) - 1
    lo = run_starts[target] if 0 <= target < len(run_starts) else 0
    hi = run_starts[target + 1] if 0 <= target + 1 < len(run_starts) else len(index)
    if not run_starts:
        lo, hi = 0, len(index)
    snap_at = [i for i in range(lo, hi) if index[i][1] == FrameType.SNAPSHOT]
    keep, stride = kept_snapshots(len(snap_at), data.max_rows)
    skip = set() if keep is None else {i for g, i in enumerate(snap_at) if g not in keep}
    rows = len(snap_at) if keep is None else len(keep)
    if not run_starts:
        data.reserve_rows(rows)

    for i, (off, ftype, length) in enumerate(index):
        if i in skip:
            data.count_thinned_snapshot()
            continue
        rest = os.pread(fh.fileno(), length + 4, off + FRAME_HEADER_SIZE)
        if len(rest) != length + 4:  # the file shrank under us
            data.add_corruption(off, "frame cut short")
            continue
        body = memoryview(rest)[:length]
        if zlib.crc32(body) != _U32.unpack_from(rest, length)[0]:
            data.add_corruption(off, "payload CRC mismatch")
            continue
        try:
            payload = decode_payload(body)
        except ValueError as exc:
            data.add_corruption(off, str(exc))
            continue
        data.apply_frame(Frame(off, ftype, payload, FRAME_OVERHEAD + length))
        if i == lo and run_starts:
            data.reserve_rows(rows)  # the target run has started: room for its rows at once
    if keep is not None and data.n:
        data.set_thinning(stride)

    # the rest (damage, torn tail): the ordinary decoder, which resynchronises
    dec = FrameDecoder(stop)
    fh.seek(stop)
    while True:
        chunk = fh.read(max(READ_CHUNK, dec.wanted()))
        if not chunk:
            break
        dec.feed(chunk)
        for item in dec.frames():
            if isinstance(item, Corruption):
                data.add_corruption(item.offset, item.reason)
            else:
                data.apply_frame(item)
    data.file_size = size
    data.torn_tail = 0 if dec.resyncing else dec.pending
