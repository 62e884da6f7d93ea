"""The frames of a recorder's records, as docs/FORMAT.md lays them out (tensors, snapshot, values)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from weighttui.log.format import BF16, FrameType, encode_array, encode_frame, encode_frame_parts, little_endian
from weighttui.log.records import TensorInfo
from weighttui.record.stats import Block

# A values frame carries at most this many bytes of tensor data (the cap is 256 MiB).
VALUES_CHUNK_BYTES = 64 * 1024 * 1024


def plain(obj, depth: int = 0):
    """Make user metadata msgpack-safe: containers kept, anything odd as str."""
    if depth > 16:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, depth + 1) for v in obj]
    return str(obj)


def declarations_frame(infos: list[TensorInfo]) -> bytes:
    return encode_frame(FrameType.TENSORS, {"tensors": [_declaration(t) for t in infos]})


def _declaration(t: TensorInfo) -> dict:
    return {
        "id": t.id, "name": t.name, "layer": t.layer, "shape": list(t.shape), "dtype": t.dtype,
        "trainable": t.trainable,
        "sample_index": None if t.sample_index is None else encode_array(t.sample_index.astype("<i8")),
    }


def _encode_block(block: Block | None):
    if block is None:
        return None
    return block.to_payload(encode_array)


def encode_snapshot(p: dict) -> dict:
    """A snapshot payload whose numpy arrays and blocks are encoded for msgpack."""
    out = dict(p)
    out["ids"] = encode_array(p["ids"])
    out["weights"] = _encode_block(p["weights"])
    out["delta"] = _encode_block(p["delta"])
    out["grad"] = _encode_block(p["grad"])
    if p.get("optim") is not None:
        out["optim"] = _encode_block(p["optim"])
    if p["sample"] is not None:
        out["sample"] = encode_array(p["sample"])
    return out


def values_frames(step, epoch, info: TensorInfo, value) -> Iterator[list]:
    """Values frames for one tensor, chunked under VALUES_CHUNK_BYTES each, as
    encode_frame_parts pieces (the data is not copied: a view of value).

    value: a numpy array, or ("bf16", uint16 bits) for bfloat16.
    """
    if isinstance(value, tuple) and value[0] == "bf16":
        flat = np.ascontiguousarray(value[1], dtype="<u2").reshape(-1)
        dtype = BF16
    else:
        flat = np.ascontiguousarray(little_endian(value)).reshape(-1)  # a view when value is C-contiguous
        dtype = flat.dtype.str
    per = max(1, VALUES_CHUNK_BYTES // max(1, flat.itemsize))
    for start in range(0, max(flat.size, 1), per):
        chunk = flat[start : start + per]
        yield encode_frame_parts(FrameType.VALUES, {
            "step": step, "epoch": epoch, "id": info.id, "offset": start,
            "value": {"dtype": dtype, "shape": [int(chunk.size)], "data": None},
        }, chunk)
