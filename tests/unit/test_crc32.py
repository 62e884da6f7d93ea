"""The folded CRC-32 (weighttui/log/native/crc32.c) gives zlib.crc32's values.

Every frame a reader verifies and every block of the index goes through
log.format.crc32 / crc32_blocks: with the extension built that is the
carry-less-multiplication path, which must agree with zlib bit for bit on every
length (the 64-byte folding, the 16-byte steps, the byte tail), alignment and
starting value. Without the built extension the module's tests are skipped,
unless WEIGHTTUI_REQUIRE_KERNEL=1 (as for the statistics kernel).
"""

from __future__ import annotations

import os
import random
import zlib

import pytest

from weighttui.log import format as fmt

try:
    from weighttui import _crc32
except ImportError:  # not built
    _crc32 = None

needs_ext = pytest.mark.skipif(_crc32 is None and os.environ.get("WEIGHTTUI_REQUIRE_KERNEL") != "1",
                               reason="weighttui._crc32 not built (python setup.py build_ext --inplace)")


@needs_ext
def test_extension_matches_zlib_on_every_length_alignment_and_start():
    assert _crc32 is not None, "WEIGHTTUI_REQUIRE_KERNEL=1 and weighttui._crc32 is not built"
    rng = random.Random(7)
    data = rng.randbytes(1 << 18)
    lengths = list(range(0, 300)) + [rng.randrange(300, 200_000) for _ in range(300)] + [1 << 18]
    for n in lengths:
        at = rng.randrange(0, (1 << 18) - n + 1)
        chunk = data[at:at + n]
        for value in (0, 0xFFFFFFFF, rng.randrange(1 << 32)):
            assert _crc32.crc32(chunk, value) == zlib.crc32(chunk, value), (n, at, value)
    # any buffer: bytearray, memoryview slices (unaligned), numpy arrays
    np = pytest.importorskip("numpy")
    arr = np.frombuffer(data, dtype=np.uint8)[3:100_003]
    assert _crc32.crc32(arr) == zlib.crc32(arr.tobytes())
    assert _crc32.crc32(memoryview(bytearray(data))[5:70_001]) == zlib.crc32(data[5:70_001])
    with pytest.raises(TypeError):
        _crc32.crc32("not bytes")


@needs_ext
def test_blocks_match_zlib():
    assert _crc32 is not None
    data = random.Random(3).randbytes(300_001)
    for block in (1, 7, 16, 64, 65536, 1 << 20):
        part = data if block >= 16 else data[:1000]
        want = [zlib.crc32(part[i:i + block]) for i in range(0, len(part), block)]
        assert _crc32.crc32_blocks(part, block) == want, block
    assert _crc32.crc32_blocks(b"", 65536) == []
    with pytest.raises(ValueError):
        _crc32.crc32_blocks(data, 0)


def test_format_crc_is_zlibs_with_or_without_the_extension():
    """What every reader and the index use: the extension when it is built and the CPU can fold,
    zlib otherwise; the same values either way."""
    data = random.Random(5).randbytes(200_000)
    assert fmt.crc32(data) == zlib.crc32(data)
    assert fmt.crc32(data[1:], 12345) == zlib.crc32(data[1:], 12345)
    want = [zlib.crc32(data[i:i + 65536]) for i in range(0, len(data), 65536)]
    assert fmt.crc32_blocks(data, 65536) == want
    assert fmt.zlib_crc32_blocks(data, 65536) == want
    assert fmt.zlib_crc32_blocks(memoryview(data)[:0], 65536) == []
    if _crc32 is not None and _crc32.accelerated:
        assert fmt.crc32 is _crc32.crc32 and fmt.crc32_blocks is _crc32.crc32_blocks
