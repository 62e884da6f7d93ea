"""The bytes of a run log (docs/FORMAT.md, format 1): header, frames, arrays.

This module knows nothing about what records mean; `records.py` validates
payloads and `follow.py` reads files. Everything here is pure and stdlib +
msgpack + numpy.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

if TYPE_CHECKING:
    import numpy as np

# numpy is imported inside the array functions, not here: `weighttui watch` reads the header and
# paints its first screen before numpy loads (it is 1.5x a bare Textual app's start on its own).

MAGIC = b"\x89WTUI\r\n\x1a"
FORMAT_VERSION = 1
HEADER_SIZE = 12
HEADER = MAGIC + struct.pack("<HH", FORMAT_VERSION, 0)

SYNC = b"\xd7WTR"
FRAME_HEADER_SIZE = 16
FRAME_OVERHEAD = 20
MAX_PAYLOAD = 256 * 1024 * 1024
# A file whose first bytes are not the header is read as a damaged log only if a
# header or a verified frame header begins in its first START_SEARCH bytes (one
# values chunk of weighttui's writer, 64 MiB, fits); else it is not a log.
START_SEARCH = 64 * 1024 * 1024

_FRAME_HEAD = struct.Struct("<4sIB3sI")  # sync, LEN, TYPE, reserved, HCRC
_U32 = struct.Struct("<I")

# The format's CRC-32 is zlib's. weighttui._crc32 (setup.py, optional) computes the same values
# with carry-less multiplication, 5x faster than zlib's table here: a reader verifies every byte
# of a log with it, and the index every byte it writes (docs/store.md).
try:
    from weighttui._crc32 import accelerated as _ACCELERATED
    from weighttui._crc32 import crc32 as _fast_crc32
    from weighttui._crc32 import crc32_blocks as _fast_blocks
except ImportError:  # not built: zlib's
    _ACCELERATED = False


def zlib_crc32_blocks(data, block: int) -> list:
    """[zlib.crc32(data[i:i + block]) for each block of data] (the last may be short)."""
    view = memoryview(data).cast("B")
    return [zlib.crc32(view[i:i + block]) for i in range(0, len(view), block)]


crc32 = _fast_crc32 if _ACCELERATED else zlib.crc32
crc32_blocks = _fast_blocks if _ACCELERATED else zlib_crc32_blocks

# weighttui._frames (setup.py, optional): a snapshot payload of the usual shape decoded in one C call
# into what records.parse_prepared finishes, or None for anything else (then msgpack and
# records.parse_snapshot, which define the result: both give the same records, tests/unit/test_frames_c.py)
# (frame_at: one verified frame's end, type and, for prepared readers, its snapshot; FrameDecoder.frames)
decode_snapshot: Any = None
decode_scalars: Any = None  # (the same for a scalars payload: (step, epoch, time, values), ScalarsRecord's fields)
frame_at: Any = None
try:
    from weighttui._frames import frame as _c_frame
    from weighttui._frames import scalars as _c_scalars
    from weighttui._frames import snapshot as _c_snapshot
except ImportError:  # not built
    pass
else:
    decode_snapshot, decode_scalars, frame_at = _c_snapshot, _c_scalars, _c_frame


class FrameType(IntEnum):
    RUN = 1
    TENSORS = 2
    SNAPSHOT = 3
    SCALARS = 4
    EVENT = 5
    END = 6
    VALUES = 7


_SNAPSHOT = int(FrameType.SNAPSHOT)  # (an IntEnum compares slower)
_PREPARED = (_SNAPSHOT, int(FrameType.SCALARS))  # the frames a prepared decoder may give as tuples


class LogFormatError(ValueError):
    """The file is not a weighttui run log, or one this version cannot read."""


def check_header(head: bytes) -> int:
    """Validate the 12-byte file header and return the format version.

    Raises LogFormatError with a message meant for a person.
    """
    if len(head) < HEADER_SIZE:
        raise ValueError("header incomplete")  # callers treat this as "not started"
    if head[:8] != MAGIC:
        raise LogFormatError("not a weighttui run log (bad magic bytes)")
    version, _flags = struct.unpack_from("<HH", head, 8)
    if version > FORMAT_VERSION:
        raise LogFormatError(
            f"written by a newer weighttui: format {version}; upgrade weighttui "
            f"(this one reads format {FORMAT_VERSION})"
        )
    if version < 1:
        raise LogFormatError(f"not a weighttui run log (format version {version})")
    return version


# --------------------------------------------------------------------- frames


def encode_frame(ftype: int, payload: dict) -> bytes:
    """One complete frame: sync, LEN, TYPE, reserved, HCRC, payload, PCRC."""
    body = msgpack.packb(payload, use_bin_type=True)
    return encode_frame_bytes(ftype, body)


def encode_frame_bytes(ftype: int, body: bytes) -> bytes:
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(body)} bytes exceeds the {MAX_PAYLOAD}-byte cap")
    head = struct.pack("<4sIB3s", SYNC, len(body), ftype, b"\0\0\0")
    return b"".join(
        (head, _U32.pack(zlib.crc32(head)), body, _U32.pack(crc32(body)))
    )


def _bin_header(n: int) -> bytes:
    """msgpack's header of a bin of n bytes (as packb(use_bin_type=True) writes it)."""
    if n < 1 << 8:
        return b"\xc4" + struct.pack(">B", n)
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    return b"\xc6" + struct.pack(">I", n)


def encode_frame_parts(ftype: int, payload: dict, data) -> list:
    """The bytes of encode_frame(ftype, payload with `data` as its last bin), as pieces to write in order,
    without copying `data` (any C-contiguous buffer: a numpy array, a view of a mapped file).

    payload's last value must be a map (or the bin itself) whose last value is
    None: the place of `data`. Used for complete values, which are most of a
    log's bytes.
    """
    view = memoryview(data).cast("B")
    body = msgpack.packb(payload, use_bin_type=True)
    if not body.endswith(b"\xc0"):  # nil: the placeholder is the payload's last item
        raise ValueError("the data placeholder must be the payload's last item")
    prefix = body[:-1] + _bin_header(view.nbytes)
    size = len(prefix) + view.nbytes
    if size > MAX_PAYLOAD:
        raise ValueError(f"payload of {size} bytes exceeds the {MAX_PAYLOAD}-byte cap")
    head = struct.pack("<4sIB3s", SYNC, size, ftype, b"\0\0\0")
    crc = crc32(view, zlib.crc32(prefix))
    return [head + _U32.pack(zlib.crc32(head)) + prefix, view, _U32.pack(crc)]


class Frame(NamedTuple):  # (a NamedTuple: made for every frame of a log, at a third of a frozen dataclass's cost)
    offset: int  # byte offset of the frame's sync in the file
    type: int
    # the decoded map; from a decoder made with prepared=True, a snapshot's may instead be
    # decode_snapshot's tuple (records.parse_prepared reads it), a scalars frame's decode_scalars'
    # (ScalarsRecord's fields)
    payload: Any
    size: int  # bytes the frame occupies (header + payload + PCRC)


@dataclass(frozen=True)
class Corruption:
    offset: int
    reason: str


def parse_frame_header(buf, pos: int) -> tuple[int, int] | None:
    """(LEN, TYPE) if a verified, in-cap frame header starts at buf[pos:], else None.

    buf must hold at least 16 bytes from pos.
    """
    sync, length, ftype, reserved, hcrc = _FRAME_HEAD.unpack_from(buf, pos)
    if sync != SYNC:
        return None
    if zlib.crc32(memoryview(buf)[pos : pos + 12]) != hcrc:
        return None
    if reserved != b"\0\0\0" or length > MAX_PAYLOAD:
        return None
    return length, ftype


def decode_payload(body) -> dict:
    """Decode one msgpack map with string keys; ValueError otherwise.

    msgpack bounds every container and string by len(body), so nothing is
    allocated from a length the CRC has not vouched for.
    """
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"payload is not one msgpack object ({type(exc).__name__})") from None
    if type(obj) is not dict or not _str_keys(obj):
        raise ValueError("payload is not a map with string keys")
    return obj


_KEY_LISTS: set = set()  # key lists of payloads seen (a log's frames repeat a few): checked once each


def _str_keys(obj: dict) -> bool:
    if len(obj) > 32:  # (not a record's map: checked, not kept - a payload's memory stays its own)
        return all(isinstance(k, str) for k in obj)
    key = tuple(obj)  # (dict keys are hashable; only a str compares equal to a str)
    if key in _KEY_LISTS:
        return True
    ok = all(isinstance(k, str) for k in obj)
    if ok and len(_KEY_LISTS) < 256 and sum(map(len, key)) <= 1024:
        _KEY_LISTS.add(key)
    return ok


class FrameDecoder:
    """Splits a byte stream (starting at a frame boundary, or at the file's start) into frames.

    Feed it with `feed(data)`; `frames()` yields Frame and Corruption items
    until the buffer holds no more complete frame. What remains (`pending`)
    is either a torn tail or a frame still being written.

    With `file_start=True` the stream is a whole file from offset 0: the decoder
    checks the file header first (LogFormatError for a newer format). A start
    that is not the header is damage if a header or a verified frame header
    begins in the first START_SEARCH bytes: one Corruption at offset 0 says how
    many bytes were skipped, and reading goes on from there. Otherwise the file
    is not a log: LogFormatError ("bad magic bytes") once START_SEARCH bytes
    were searched, or from `end_of_data()` when the whole file has been fed.

    `wanted()` says how many more bytes would complete the frame at the front,
    so a reader can fetch a large frame in one read instead of many.

    With `prepared=True` (a reader that gives every frame to store.builder), a
    snapshot or scalars payload of the usual shape is decoded by the C decoder into
    a tuple (`decode_snapshot`, `decode_scalars`) instead of a dict, when it is built.
    """

    def __init__(self, start_offset: int, *, resyncing: bool = False, file_start: bool = False,
                 search: int | None = None, prepared: bool = False, light: bool = False):
        if file_start and start_offset != 0:
            raise ValueError("a file's start is at offset 0")
        self._buf = bytearray()
        self._base = start_offset  # file offset of self._buf[0]
        self._resyncing = resyncing  # True: go on skipping damage found by an earlier reader
        # (file offset of an incomplete front frame, file offset scanned up to)
        # for _torn(), so a big frame arriving slowly is not rescanned each poll
        self._torn_scan = (-1, 0)
        # the file header: "header" (not checked yet), "search" (bad magic: looking for
        # a later header or frame), None (done, or a stream that starts at a frame)
        self._head: str | None = "header" if file_start else None
        self._search = START_SEARCH if search is None else search  # a header or frame begins before this
        self._search_at = 0  # "search": bytes of the buffer already searched
        self._maybe = False  # "search": the buffer ends inside what may become a header
        self.version: int | None = None  # the file header's format version, once read
        # (frame_at's `prepared`: 0, 1, or 2 - light: a snapshot's usual histograms and sample come as
        # records.Omitted stand-ins, their data not copied; for a store that leaves them in the log)
        self._prepared = (2 if light else 1) if prepared and decode_snapshot is not None \
            and decode_scalars is not None else 0
        self._frame = frame_at

    @property
    def offset(self) -> int:
        """File offset of the first byte not yet consumed."""
        return self._base

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def feed_reserved(self, data: bytearray, room: int) -> None:
        """feed(data[room:]), taking data itself as the buffer when the bytes pending fit in its first
        `room` bytes (kept free for them): the new bytes are not copied (scan_frames reads into it)."""
        pending = len(self._buf)
        if pending > room:
            self._buf += memoryview(data)[room:]
            return
        data[room - pending : room] = self._buf
        del data[: room - pending]  # (from the front of a bytearray: no bytes move)
        self._buf = data

    def wanted(self) -> int:
        buf = self._buf
        if self._head is not None:
            return max(0, HEADER_SIZE - len(buf))
        if len(buf) < FRAME_HEADER_SIZE:
            return FRAME_HEADER_SIZE - len(buf)
        head = parse_frame_header(buf, 0)
        if head is None:
            return 0
        return max(0, FRAME_OVERHEAD + head[0] - len(buf))

    @property
    def resyncing(self) -> bool:
        """True while scanning past damage for the next verified frame."""
        return self._resyncing

    @property
    def search(self) -> int:
        """A header or frame must begin before this offset in a file whose start is damaged."""
        return self._search

    @property
    def at_start(self) -> bool:
        """True while the file's start is undecided: a header not all here yet, or
        a damaged start with no header or frame found after it so far."""
        return self._head is not None

    def end_of_data(self) -> None:
        """Say that every byte the file holds has been fed: LogFormatError if its
        start is damaged and nothing after it is a log (a file that is not one).
        A header prefix, or a damaged start whose bytes end inside what may become
        a header or frame header, is a log not started yet: no error."""
        if self._head == "search" and not self._maybe:
            raise LogFormatError("not a weighttui run log (bad magic bytes)")

    def _file_start(self) -> Corruption | bool:
        """Read the file header, or search past a damaged one (see the class).

        True: the header was read; a Corruption: damage was skipped; False: wait."""
        buf = self._buf
        if self._head == "header":
            if len(buf) < HEADER_SIZE and MAGIC.startswith(bytes(buf[: len(MAGIC)])):
                return False  # empty or a header prefix: not started yet
            if buf[: len(MAGIC)] == MAGIC:
                self.version = check_header(bytes(buf[:HEADER_SIZE]))
                del buf[:HEADER_SIZE]
                self._base += HEADER_SIZE
                self._head = None
                return True
            self._head = "search"
        found, i = None, self._search_at
        at_magic, at_sync = buf.find(MAGIC, i), buf.find(SYNC, i)  # the next of each, found once
        while True:
            if at_magic >= 0 and at_magic < i:
                at_magic = buf.find(MAGIC, i)
            if at_sync >= 0 and at_sync < i:
                at_sync = buf.find(SYNC, i)
            cands = [j for j in (at_magic, at_sync) if j >= 0]
            i = min(cands) if cands else -1
            if i < 0 or i >= self._search:
                self._search_at, self._maybe = max(self._search_at, len(buf) - (FRAME_HEADER_SIZE - 1)), False
                break
            if buf[i : i + len(MAGIC)] == MAGIC:
                if len(buf) - i < HEADER_SIZE:
                    self._search_at, self._maybe = i, True
                    break
                version = struct.unpack_from("<H", buf, i + len(MAGIC))[0]
                if version >= 1:  # a newer one raises below; version 0 is damage
                    found = (i, "file header", HEADER_SIZE)
                    break
            else:
                if len(buf) - i < FRAME_HEADER_SIZE:
                    self._search_at, self._maybe = i, True
                    break
                if parse_frame_header(buf, i) is not None:
                    found = (i, "frame", 0)
                    break
            i += 1
        if found is None:
            if self._search_at >= self._search:
                raise LogFormatError("not a weighttui run log (bad magic bytes)")
            return False
        at, what, skip = found
        self.version = check_header(bytes(buf[at : at + HEADER_SIZE])) if skip else FORMAT_VERSION
        del buf[: at + skip]
        self._base += at + skip
        self._head = None
        if at == 0:  # e.g. a second writer truncated the log and the first appended before its header
            return Corruption(0, "file header missing (bad magic bytes): the file starts with a frame")
        return Corruption(0, f"file header damaged (bad magic bytes): {at} bytes skipped to the {what} "
                             f"at offset {at}")

    def frames(self):
        if self._head is not None:
            start = self._file_start()
            if start is False:
                return
            if isinstance(start, Corruption):
                yield start
        buf = self._buf
        pos = 0
        try:
            while True:
                if self._resyncing:
                    nxt, verified = self._find_sync(buf, pos)
                    if not verified:
                        # keep what may still become a header: the last 15 bytes,
                        # or a sync whose header has not all arrived yet
                        pos = nxt if nxt is not None else max(pos, len(buf) - (FRAME_HEADER_SIZE - 1))
                        return
                    pos = nxt
                    self._resyncing = False
                if self._frame is not None:  # the usual frame in one C call; anything else below
                    got = self._frame(buf, pos, self._prepared)
                    if got is not None:
                        end, ftype, payload = got  # (prepared: a snapshot's or a scalars frame's tuple)
                        if payload is None:
                            try:
                                with memoryview(buf)[pos + FRAME_HEADER_SIZE : end - 4] as body:
                                    payload = decode_payload(body)
                            except ValueError as exc:
                                self._resyncing = True
                                pos += 1
                                yield Corruption(self._base + pos - 1, str(exc))
                                continue
                        item = Frame(self._base + pos, ftype, payload, end - pos)
                        pos = end
                        yield item
                        continue
                if len(buf) - pos < FRAME_HEADER_SIZE:
                    return
                head = parse_frame_header(buf, pos)
                if head is None:
                    problem = Corruption(self._base + pos, _header_problem(buf, pos))
                    self._resyncing = True
                    pos += 1
                    yield problem
                    continue
                length, ftype = head
                end = pos + FRAME_OVERHEAD + length
                if end > len(buf):
                    if not self._torn(buf, pos):
                        return  # frame not complete yet (torn tail or still arriving)
                    # A writer died mid-frame and another appended after it (a
                    # restart with mode="a"): waiting for LEN bytes would hide
                    # everything written since, so count it and resync.
                    self._resyncing = True
                    pos += 1
                    yield Corruption(self._base + pos - 1, "incomplete frame followed by another frame")
                    continue
                with memoryview(buf)[pos + FRAME_HEADER_SIZE : end - 4] as body:
                    (pcrc,) = _U32.unpack_from(buf, end - 4)
                    try:
                        if crc32(body) != pcrc:
                            raise ValueError("payload CRC mismatch")
                        got = None
                        if self._prepared and ftype in _PREPARED:  # (as frame_at does: a snapshot, its scalars)
                            got = (decode_snapshot if ftype == _SNAPSHOT else decode_scalars)(body)
                        item = Frame(self._base + pos, ftype, decode_payload(body) if got is None else got,
                                     end - pos)
                    except ValueError as exc:
                        item = Corruption(self._base + pos, str(exc))
                if isinstance(item, Corruption):
                    self._resyncing = True
                    pos += 1
                else:
                    pos = end
                yield item
        finally:
            del buf[:pos]
            self._base += pos

    def _torn(self, buf, pos: int) -> bool:
        """Whether a complete, verified frame starts inside the incomplete frame at pos.

        A frame being written has only its own bytes after it; a complete frame
        with both CRCs right inside its extent means it will never be finished.
        """
        front = self._base + pos
        start = pos + FRAME_HEADER_SIZE
        if self._torn_scan[0] == front:
            start = max(start, self._torn_scan[1] - self._base)
        i = start
        while True:
            i = buf.find(SYNC, i)
            if i < 0 or len(buf) - i < FRAME_HEADER_SIZE:
                break
            head = parse_frame_header(buf, i)
            if head is not None:
                end = i + FRAME_OVERHEAD + head[0]
                if end > len(buf):
                    break  # not all here yet: look again from this sync next time
                (pcrc,) = _U32.unpack_from(buf, end - 4)
                with memoryview(buf)[i + FRAME_HEADER_SIZE : end - 4] as body:
                    if crc32(body) == pcrc:
                        return True
            i += 1
        resume = len(buf) - (FRAME_HEADER_SIZE - 1) if i < 0 else i
        self._torn_scan = (front, self._base + max(start, resume))
        return False

    @staticmethod
    def _find_sync(buf, pos: int) -> tuple[int | None, bool]:
        """(offset, verified) of the next sync at or after pos.

        verified is False when no sync was found (offset None) or when the
        header after it has not all arrived yet.
        """
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                return None, False
            if len(buf) - i < FRAME_HEADER_SIZE:
                return i, False
            if parse_frame_header(buf, i) is not None:
                return i, True
            pos = i + 1


def _header_problem(buf, pos: int) -> str:
    sync, length, _t, reserved, hcrc = _FRAME_HEAD.unpack_from(buf, pos)
    if sync != SYNC:
        return "sync marker missing"
    if zlib.crc32(memoryview(buf)[pos : pos + 12]) != hcrc:
        return "frame header CRC mismatch"
    if length > MAX_PAYLOAD:
        return f"frame length {length} over the cap"
    return "reserved header bytes not zero"


# --------------------------------------------------------------------- arrays

# dtype strings a reader accepts; anything else (objects, big-endian, ...) is corrupt.
_DTYPES = {
    "<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1",
}
BF16 = "bf16"


def encode_array(arr: np.ndarray) -> dict:
    """{"dtype", "shape", "data"} with little-endian C-order data."""
    import numpy as np

    arr = little_endian(arr)
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).tobytes()}


def little_endian(arr) -> np.ndarray:
    """arr as an array of a dtype the format stores, little-endian (a copy only if it was big-endian)."""
    import numpy as np

    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.str not in _DTYPES:
        raise TypeError(f"cannot store arrays of dtype {arr.dtype}")
    return arr


def encode_bf16_bits(bits: np.ndarray) -> dict:
    """An array of raw bfloat16 bits (uint16) as the `bf16` dtype."""
    import numpy as np

    bits = np.ascontiguousarray(bits, dtype="<u2")
    return {"dtype": BF16, "shape": list(bits.shape), "data": bits.tobytes()}


# decode_array's fast path: dtype string -> numpy dtype, each added by the full checks on its first
# use (so numpy is imported by then: `_np`)
_NP_DTYPES: dict = {}
_np: Any = None


def decode_array(obj: Any, *, ndim: int | None = None) -> np.ndarray:
    """Validate and decode an array map; ValueError on anything off-spec.

    The result is a read-only view of the payload bytes (no copy), except for
    bf16, which is widened to float32.
    """
    # the usual array (1 or 2 plain int dimensions, a known dtype, the bytes it needs) in few
    # steps: a reader decodes about seven per snapshot; anything else takes the full checks below
    if type(obj) is dict:
        dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
        dt = _NP_DTYPES.get(dtype) if type(dtype) is str else None
        if dt is not None and type(data) is bytes and type(shape) is list and (ndim is None or len(shape) == ndim):
            if len(shape) == 1:
                d0 = shape[0]
                if type(d0) is int and 0 < d0 and d0 * dt.itemsize == len(data):
                    return _np.frombuffer(data, dt)
            elif len(shape) == 2:
                d0, d1 = shape
                if type(d0) is int and type(d1) is int and 0 < d0 and 0 < d1 and d0 * d1 * dt.itemsize == len(data):
                    return _np.frombuffer(data, dt).reshape(d0, d1)
    return _decode_array_checked(obj, ndim)


def _decode_array_checked(obj: Any, ndim: int | None) -> np.ndarray:
    import numpy as np

    if not isinstance(obj, dict):
        raise ValueError("array is not a map")
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(dtype, str) or not isinstance(data, (bytes, bytearray)):
        raise ValueError("array lacks dtype or data")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError("array shape is not a list of non-negative ints")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"array has {len(shape)} dimensions, expected {ndim}")
    if dtype == BF16:
        itemsize = 2
    elif dtype in _DTYPES:
        itemsize = np.dtype(dtype).itemsize
    else:
        raise ValueError(f"unknown array dtype {dtype!r}")
    count = 1
    for d in shape:
        count *= d
        if count * itemsize > len(data):  # also stops absurd products early
            break
    if count * itemsize != len(data):
        raise ValueError("array byte length does not match dtype and shape")
    if dtype == BF16:
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype not in _NP_DTYPES:
        global _np
        _np = np
        _NP_DTYPES[dtype] = np.dtype(dtype)
    return np.frombuffer(data, dtype=dtype).reshape(shape)

