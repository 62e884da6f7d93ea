"""Values frames written as pieces (no copy of the data) are the bytes encode_frame writes; Recorder.drain."""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui.log.format import FrameType, encode_array, encode_bf16_bits, encode_frame, encode_frame_parts
from weighttui.log.records import TensorInfo
from weighttui.record import encode
from weighttui.record.recorder import Recorder


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65535, 65536, 300_000])
@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<i8", "|u1"])
def test_frame_parts_are_encode_frames_bytes(n, dtype):
    a = (np.arange(n) % 251).astype(dtype)
    p = {"step": 3, "epoch": None, "id": 7, "offset": 0, "value": {"dtype": a.dtype.str, "shape": [n], "data": None}}
    want = encode_frame(FrameType.VALUES, {**p, "value": encode_array(a)})
    assert b"".join(bytes(x) for x in encode_frame_parts(FrameType.VALUES, p, a)) == want


def test_frame_parts_need_the_placeholder_last():
    with pytest.raises(ValueError, match="last item"):
        encode_frame_parts(FrameType.VALUES, {"value": {"data": None, "dtype": "<f4"}}, np.zeros(3, np.float32))


def test_values_frames_chunks_views_and_bf16(monkeypatch):
    monkeypatch.setattr(encode, "VALUES_CHUNK_BYTES", 1000)
    info = TensorInfo(id=2, name="w", layer="", shape=(700,), dtype="float32", trainable=True, sample_index=None)
    a = np.arange(700, dtype=">f4")  # big-endian: stored little-endian
    frames = [b"".join(bytes(x) for x in parts) for parts in encode.values_frames(5, 1, info, a)]
    want = [encode_frame(FrameType.VALUES, {"step": 5, "epoch": 1, "id": 2, "offset": s,
                                            "value": encode_array(a[s:s + 250].astype("<f4"))})
            for s in range(0, 700, 250)]
    assert frames == want
    bits = np.arange(10, dtype="<u2")
    (parts,) = encode.values_frames(5, None, info, ("bf16", bits))
    assert b"".join(bytes(x) for x in parts) == encode_frame(FrameType.VALUES, {
        "step": 5, "epoch": None, "id": 2, "offset": 0, "value": encode_bf16_bits(bits)})
    little = np.arange(10, dtype="<f4")
    (parts,) = encode.values_frames(0, None, info, little)
    assert np.shares_memory(np.frombuffer(parts[1], dtype="<f4"), little)  # no copy of the data


def test_drain_waits_for_the_writer(tmp_path):
    path = str(tmp_path / "r.wtui")
    rec = Recorder(path, queue_size=2)
    info = rec.declare("w", (1 << 20,), "float32")
    values = np.ones(1 << 20, dtype=np.float32)
    assert rec.submit_values(0, [info], [values])
    assert rec.drain(timeout=60)
    assert rec.writer.progress >= values.nbytes  # written, not just queued
    rec.close()
    assert not rec.drain()
    assert np.array_equal(weighttui.open(path).weights(step=0)["w"], values)
