"""The bytes: frames, header checks, and the logs of an independent implementation."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weighttui
from weighttui.log.format import (
    FRAME_OVERHEAD,
    HEADER,
    MAX_PAYLOAD,
    SYNC,
    Corruption,
    Frame,
    FrameDecoder,
    FrameType,
    LogFormatError,
    check_header,
    decode_array,
    encode_array,
    encode_bf16_bits,
    encode_frame,
)
from weighttui.log.tail import LogTail

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


# ------------------------------------------------------------ format examples


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_independent_examples_read_as_expected(name):
    want = EXPECTED[name]
    run = weighttui.open(DATA / name)
    counts = {k: v for k, v in run.record_counts.items() if v}
    assert counts == want["records"]
    assert run.corruptions == want["corrupt_offsets"]
    assert run.torn_tail == want["torn_tail_bytes"]
    assert run.unknown_frames == want["unknown_frames"]
    assert run.steps.tolist() == want["snapshot_steps"]
    assert run.full_steps == want["full_values_steps"]
    for tensor, stats in want["last_weights_stats"].items():
        for stat, value in stats.items():
            _steps, values = run.series(tensor, stat)
            assert values[-1] == pytest.approx(value, rel=1e-12, abs=0), (tensor, stat)


def test_example_full_values_reshape_to_declared_shape():
    run = weighttui.open(DATA / "clean.wtui")
    for step in run.full_steps:
        weights = run.weights(step=step)
        assert set(weights) == set(run.tensor_names)
        for name, arr in weights.items():
            assert arr.shape == run.tensor(name).shape
            assert np.isfinite(arr).all()


def test_example_last_full_values_agree_with_last_stats():
    """The values frames and the snapshot statistics of one step describe the same tensor."""
    run = weighttui.open(DATA / "clean.wtui")
    weights = run.weights(step=29)
    for name, arr in weights.items():
        x = arr.astype(np.float64)
        _s, norms = run.series(name, "norm")
        _s, means = run.series(name, "mean")
        assert norms[-1] == pytest.approx(np.sqrt((x * x).sum()), rel=1e-6)
        assert means[-1] == pytest.approx(x.mean(), rel=1e-6, abs=1e-9)


# --------------------------------------------------------------- header checks


def test_header_errors_have_messages_for_people(tmp_path):
    not_log = tmp_path / "notes.txt"
    not_log.write_bytes(b"hello, this is not a run log at all")
    with pytest.raises(LogFormatError, match="not a weighttui run log"):
        weighttui.open(not_log)
    newer = tmp_path / "newer.wtui"
    newer.write_bytes(HEADER[:8] + struct.pack("<HH", 2, 0))
    with pytest.raises(LogFormatError, match="newer weighttui: format 2"):
        weighttui.open(newer)
    with pytest.raises(FileNotFoundError):
        weighttui.open(tmp_path / "missing.wtui")
    assert check_header(HEADER) == 1


@pytest.mark.parametrize("content", [b"", HEADER[:5], HEADER])
def test_empty_or_header_only_file_is_a_run_not_started(tmp_path, content):
    path = tmp_path / "early.wtui"
    path.write_bytes(content)
    run = weighttui.open(path)
    assert run.run is None and run.n == 0 and not run.corruptions


# ------------------------------------------------------ the file's start (FrameDecoder file_start)


def _from_file_start(data: bytes, step: int | None = None, *, end: bool = True, search=None):
    """Items of `data` read from offset 0 as a file, fed `step` bytes at a time."""
    dec = FrameDecoder(0, file_start=True, search=search)
    items = []
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        dec.feed(data[i:i + step])
        items.extend(dec.frames())
    if end:
        dec.end_of_data()
    return items, dec


def test_a_whole_header_is_read_and_not_reported():
    log, spans = _frames_log(4)
    items, dec = _from_file_start(log)
    assert [i.offset for i in items] == [s for s, _e in spans] and dec.version == 1 and not dec.at_start


@pytest.mark.parametrize("n", range(len(HEADER)))
def test_a_header_prefix_is_a_log_not_started_yet(n):
    items, dec = _from_file_start(HEADER[:n])
    assert items == [] and dec.at_start and dec.offset == 0 and dec.pending == n


@pytest.mark.parametrize("prefix, reason", [
    (b"\0" * 8 + HEADER[8:], "12 bytes skipped to the frame at offset 12"),
    (b"junk" * 250 + HEADER, "1000 bytes skipped to the file header at offset 1000"),
    (b"", "the file starts with a frame"),
    (HEADER[:5], "5 bytes skipped to the frame at offset 5"),
])
@pytest.mark.parametrize("step", [1, 7, None])
def test_a_damaged_start_is_skipped_to_the_first_header_or_frame_and_reported_once(prefix, reason, step):
    log, spans = _frames_log(5, seed=3)
    frames = log[len(HEADER):]
    data = prefix + frames
    items, dec = _from_file_start(data, step)
    start = len(prefix)  # where the frames begin
    assert isinstance(items[0], Corruption) and items[0].offset == 0 and reason in items[0].reason
    assert "bad magic bytes" in items[0].reason
    assert [i.offset for i in items[1:]] == [s - len(HEADER) + start for s, _e in spans]
    assert all(isinstance(i, Frame) for i in items[1:]) and dec.version == 1


@pytest.mark.parametrize("data", [b"hello", b"\x89PNG\r\n\x1a\n" + b"\0" * 5000, bytes(range(256)) * 40,
                                  HEADER[:8] + b"\0" * 4 + b"x" * 100])
def test_bytes_with_no_header_or_frame_are_not_a_log(data):
    with pytest.raises(LogFormatError, match=r"^not a weighttui run log"):
        _from_file_start(data, 13)


def test_a_newer_header_after_damage_says_upgrade():
    with pytest.raises(LogFormatError, match="newer weighttui: format 3"):
        _from_file_start(b"junk" + HEADER[:8] + struct.pack("<HH", 3, 0) + b"x" * 40)


def test_a_damaged_start_ending_inside_a_frame_header_waits():
    log, _spans = _frames_log(2)
    data = b"junk" + log[len(HEADER):len(HEADER) + 9]  # a sync and 5 more bytes of a frame header
    items, dec = _from_file_start(data)  # end_of_data: not refused, the header may still arrive
    assert items == [] and dec.at_start and dec.offset == 0
    dec.feed(log[len(HEADER) + 9:])
    items = list(dec.frames())
    assert items[0].offset == 0 and "4 bytes skipped" in items[0].reason and items[1].offset == 4


def test_the_search_for_a_header_is_bounded():
    log, _spans = _frames_log(2)
    items, _dec = _from_file_start(b"\0" * 999 + log, 256, search=1000)
    assert items[0].offset == 0 and "999 bytes skipped" in items[0].reason
    with pytest.raises(LogFormatError, match="bad magic bytes"):  # refused before the file ends
        _from_file_start(b"\0" * 1001 + log, 256, end=False, search=1000)


# ------------------------------------------------------------ frame decoding


def _frames_log(n: int, seed: int = 0) -> tuple[bytes, list[tuple[int, int]]]:
    """A header plus n frames of varied size; returns bytes and (start, end) of each frame."""
    rng = np.random.default_rng(seed)
    out, spans = bytearray(HEADER), []
    for i in range(n):
        payload = {"i": i, "blob": rng.bytes(int(rng.integers(0, 300))), "x": [1.5, None, "s"]}
        frame = encode_frame(FrameType.SCALARS if i % 3 else 99, payload)
        spans.append((len(out), len(out) + len(frame)))
        out += frame
    return bytes(out), spans


def _decode_all(data: bytes, chunk: int | None = None):
    dec = FrameDecoder(len(HEADER))
    items = []
    body = data[len(HEADER):]
    step = chunk or max(1, len(body))
    for i in range(0, len(body), step):
        dec.feed(body[i:i + step])
        items.extend(dec.frames())
    return items, dec


def test_frame_layout_matches_the_format():
    frame = encode_frame(FrameType.RUN, {"run_id": "ab"})
    body = msgpack.packb({"run_id": "ab"}, use_bin_type=True)
    assert frame[:4] == SYNC == b"\xd7WTR"
    assert struct.unpack_from("<I", frame, 4)[0] == len(body)
    assert frame[8] == 1 and frame[9:12] == b"\0\0\0"
    assert struct.unpack_from("<I", frame, 12)[0] == zlib.crc32(frame[:12])
    assert frame[16:16 + len(body)] == body
    assert struct.unpack_from("<I", frame, 16 + len(body))[0] == zlib.crc32(body)
    assert len(frame) == len(body) + FRAME_OVERHEAD


def test_frames_split_at_any_chunk_size_decode_identically():
    data, spans = _frames_log(40)
    whole, _ = _decode_all(data)
    for chunk in (1, 7, 16, 20, 333):
        items, dec = _decode_all(data, chunk)
        assert [(f.offset, f.type) for f in items] == [(f.offset, f.type) for f in whole]
        assert dec.pending == 0
    assert [f.offset for f in whole] == [s for s, _e in spans]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_prefix_yields_exactly_its_complete_frames(data):
    log, spans = _frames_log(12, seed=data.draw(st.integers(0, 10)))
    cut = data.draw(st.integers(len(HEADER), len(log)))
    items, dec = _decode_all(log[:cut], chunk=data.draw(st.sampled_from([None, 1, 5, 64])))
    complete = [s for s, e in spans if e <= cut]
    assert all(isinstance(i, Frame) for i in items)
    assert [f.offset for f in items] == complete
    # what is left over is exactly the torn tail
    last_end = max([e for s, e in spans if e <= cut], default=len(HEADER))
    assert dec.pending == cut - last_end


def _recovered_untouched(log, spans, damaged_lo, damaged_hi, shift_from=None, shift=0):
    """Frames entirely outside [damaged_lo, damaged_hi) must all be read back."""
    items, _dec = _decode_all(log)
    got = {i.offset for i in items if isinstance(i, Frame)}
    for s, e in spans:
        if e <= damaged_lo or s >= damaged_hi:
            offset = s + shift if shift_from is not None and s >= shift_from else s
            assert offset in got, f"intact frame at {s} lost"
    return items


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_random_bit_flips_never_raise_and_spare_intact_frames(data):
    log, spans = _frames_log(10, seed=data.draw(st.integers(0, 5)))
    buf = bytearray(log)
    flips = data.draw(st.lists(st.integers(len(HEADER), len(log) - 1), min_size=1, max_size=4))
    for pos in flips:
        buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    changed = [i for i in range(len(log)) if buf[i] != log[i]]  # two flips may cancel out
    if not changed:
        return
    items = _recovered_untouched(bytes(buf), spans, min(changed), max(changed) + 1)
    damaged = [s for s, e in spans if any(s <= p < e for p in changed)]
    corrupt = [i for i in items if isinstance(i, Corruption)]
    frames = [i.offset for i in items if isinstance(i, Frame)]
    # a damaged frame can never verify: it is reported, never returned
    assert corrupt and not set(damaged) & set(frames)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_random_insertions_never_raise_and_spare_intact_frames(data):
    log, spans = _frames_log(10, seed=data.draw(st.integers(0, 5)))
    pos = data.draw(st.integers(len(HEADER), len(log)))
    junk = data.draw(st.binary(min_size=1, max_size=40) | st.just(SYNC + b"\xff" * 12))
    damaged = bytes(log[:pos]) + junk + bytes(log[pos:])
    # a frame is touched if the insertion falls strictly inside it
    _recovered_untouched(damaged, spans, pos, pos + 1 if any(s < pos < e for s, e in spans) else pos,
                         shift_from=pos, shift=len(junk))


def test_oversized_length_is_corruption_not_allocation():
    head = struct.pack("<4sIB3s", SYNC, MAX_PAYLOAD + 1, 3, b"\0\0\0")
    frame = head + struct.pack("<I", zlib.crc32(head)) + b"\0" * 64
    dec = FrameDecoder(0)
    dec.feed(frame + encode_frame(FrameType.SCALARS, {"ok": 1}))
    items = list(dec.frames())
    assert isinstance(items[0], Corruption)
    assert isinstance(items[-1], Frame) and items[-1].payload == {"ok": 1}


def test_payload_that_is_not_a_map_is_corruption():
    import weighttui.log.format as lf

    body = msgpack.packb([1, 2, 3])
    frame = lf.encode_frame_bytes(FrameType.SCALARS, body)
    dec = FrameDecoder(0)
    dec.feed(frame)
    (item,) = list(dec.frames())
    assert isinstance(item, Corruption) and "map" in item.reason


# ---------------------------------------------------------------------- arrays


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<f2", "<i8", "<i4", "<u4", "|u1", "|i1"])
def test_arrays_round_trip(dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    back = decode_array(msgpack.unpackb(msgpack.packb(encode_array(arr))))
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_bf16_bits_widen_to_float32():
    x = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    back = decode_array(encode_bf16_bits(bits))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("bad", [
    {"dtype": "<f4", "shape": [3], "data": b"\0" * 8},          # length mismatch
    {"dtype": "|O", "shape": [1], "data": b"\0" * 8},           # object dtype
    {"dtype": "<f4", "shape": [-1], "data": b""},                # negative dim
    {"dtype": "<f4", "shape": [2 ** 40, 2 ** 40], "data": b""},  # absurd shape
    {"dtype": "<c16", "shape": [1], "data": b"\0" * 16},         # not in the format
    {"dtype": "<f4", "shape": "3", "data": b"\0" * 12},
    [1, 2],
])
def test_bad_arrays_are_rejected_with_valueerror(bad):
    with pytest.raises(ValueError):
        decode_array(bad)


def test_tail_of_live_log_waits_then_reads(tmp_path):
    """A torn tail while live is kept and completed by the next poll."""
    path = tmp_path / "live.wtui"
    frame = encode_frame(FrameType.SCALARS, {"step": 1, "time": 1.0, "values": {"loss": 1.0}})
    path.write_bytes(HEADER + frame[:10])
    tail = LogTail(path)
    first = tail.poll()
    assert first.frames == [] and first.corruptions == [] and tail.pending == 10
    with open(path, "ab") as fh:
        fh.write(frame[10:])
    second = tail.poll()
    assert [f.payload["step"] for f in second.frames] == [1]
    tail.close()
