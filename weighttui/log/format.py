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
from typing import TYPE_CHECKING, Any

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

_FRAME_HEAD = struct.Struct("<4sIB3sI")  # sync, LEN, TYPE, reserved, HCRC
_U32 = struct.Struct("<I")


class FrameType(IntEnum):
    RUN = 1
    TENSORS = 2
    SNAPSHOT = 3
    SCALARS = 4
    EVENT = 5
    END = 6
    VALUES = 7


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
        (head, _U32.pack(zlib.crc32(head)), body, _U32.pack(zlib.crc32(body)))
    )


@dataclass(frozen=True)
class Frame:
    offset: int  # byte offset of the frame's sync in the file
    type: int
    payload: dict
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
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError("payload is not a map with string keys")
    return obj


class FrameDecoder:
    """Splits a byte stream (starting at a frame boundary) into frames.

    Feed it with `feed(data)`; `frames()` yields Frame and Corruption items
    until the buffer holds no more complete frame. What remains (`pending`)
    is either a torn tail or a frame still being written.

    `wanted()` says how many more bytes would complete the frame at the front,
    so a reader can fetch a large frame in one read instead of many.
    """

    def __init__(self, start_offset: int, *, resyncing: bool = False):
        self._buf = bytearray()
        self._base = start_offset  # file offset of self._buf[0]
        self._resyncing = resyncing  # True: go on skipping damage found by an earlier reader
        # (file offset of an incomplete front frame, file offset scanned up to)
        # for _torn(), so a big frame arriving slowly is not rescanned each poll
        self._torn_scan = (-1, 0)

    @property
    def offset(self) -> int:
        """File offset of the first byte not yet consumed."""
        return self._base

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def wanted(self) -> int:
        buf = self._buf
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

    def frames(self):
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
                        if zlib.crc32(body) != pcrc:
                            raise ValueError("payload CRC mismatch")
                        item = Frame(self._base + pos, ftype, decode_payload(body), end - pos)
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
                    if zlib.crc32(body) == pcrc:
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

    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    dtype = arr.dtype.str
    if dtype not in _DTYPES:
        raise TypeError(f"cannot store arrays of dtype {arr.dtype}")
    return {"dtype": dtype, "shape": list(arr.shape), "data": np.ascontiguousarray(arr).tobytes()}


def encode_bf16_bits(bits: np.ndarray) -> dict:
    """An array of raw bfloat16 bits (uint16) as the `bf16` dtype."""
    import numpy as np

    bits = np.ascontiguousarray(bits, dtype="<u2")
    return {"dtype": BF16, "shape": list(bits.shape), "data": bits.tobytes()}


def decode_array(obj: Any, *, ndim: int | None = None) -> np.ndarray:
    """Validate and decode an array map; ValueError on anything off-spec.

    The result is a read-only view of the payload bytes (no copy), except for
    bf16, which is widened to float32.
    """
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
    return np.frombuffer(data, dtype=dtype).reshape(shape)

