"""Per-unit norms (docs/instruments.md, "Per-unit health"): the snapshots' optional `units` key.

Read on demand from the log (one pass over its frames), for a strip of units
over time or a list of which units died: `unit_norms(path, "fc1.weight")`;
or only the snapshots whose frames are named (`units_at`, with the offsets the
run store keeps: `RunData.snapshot_rows`), as the detail screen reads the
columns it draws. The run store does not keep them (they are as many numbers
per snapshot as a layer has output units).
"""

from __future__ import annotations

import os

import numpy as np

from weighttui.log.format import FrameType, decode_array
from weighttui.log.reader import ScanState, read_frame_at, scan_frames
from weighttui.log.records import InvalidRecord, parse_tensors


def unit_norms(path, name: str, kind: str = "weights", *, run: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps [N], norms [N, units] float32) of one tensor's per-unit L2 norms of
    `kind` ("weights" or "grad") in the latest run of the log (or run index `run`);
    NaN where a snapshot had no gradient for it. Empty when the log has none."""
    if kind not in ("weights", "grad"):
        raise ValueError(f"kind must be 'weights' or 'grad', not {kind!r}")
    steps: list[int] = []
    rows: list[np.ndarray] = []
    runs = -1
    tensors: dict = {}
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for item in scan_frames(fd, ScanState(), size):
            if not hasattr(item, "payload"):
                continue  # a corruption: the frames around it still read
            if item.type == FrameType.RUN:
                runs += 1
                if run is None or runs <= run:
                    steps, rows, tensors = [], [], {}
                continue
            if run is not None and runs != run:
                continue
            p = item.payload
            try:
                if item.type == FrameType.TENSORS:
                    for info in parse_tensors(p, tensors):
                        tensors[info.id] = info
                elif item.type == FrameType.SNAPSHOT and isinstance(p.get("units"), dict):
                    got = _units_of(p, p["units"], tensors, name, kind)
                    if got is not None:
                        steps.append(got[0])
                        rows.append(got[1])
            except (InvalidRecord, ValueError, TypeError, KeyError):
                continue  # an invalid record is skipped, as the run store does
    finally:
        os.close(fd)
    if not rows or len({r.size for r in rows}) != 1:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.array(steps, dtype=np.int64), np.stack(rows).astype(np.float32)


def units_at(path, offsets, name: str, tensors: dict) -> list[tuple[np.ndarray | None, np.ndarray | None] | None]:
    """Per frame offset (of a snapshot frame): (weights norms, gradient norms) of tensor `name`
    (float32 [units]; gradient None when the snapshot has none), or None when the snapshot holds
    no unit norms for it or its frame does not verify. `tensors`: tensor id -> TensorInfo of the
    run (the ids a snapshot's `units` key names)."""
    out: list[tuple[np.ndarray | None, np.ndarray | None] | None] = []
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        for off in offsets:
            got = read_frame_at(fd, int(off))
            if got is None or got[0] != FrameType.SNAPSHOT or not isinstance(got[1].get("units"), dict):
                out.append(None)
                continue
            p = got[1]
            try:
                w = _units_of(p, p["units"], tensors, name, "weights")
                g = _units_of(p, p["units"], tensors, name, "grad") if p["units"].get("grad") is not None \
                    else None
            except (InvalidRecord, ValueError, TypeError, KeyError):
                out.append(None)  # an invalid record is skipped, as the run store does
                continue
            if w is None:
                out.append(None)
            else:
                out.append((w[1], None if g is None else g[1]))
    finally:
        os.close(fd)
    return out


def _units_of(p: dict, units: dict, tensors: dict, name: str, kind: str):
    ids = decode_array(units.get("ids"), ndim=1)
    weights = decode_array(units["weights"], ndim=1)  # (required: what every unit count is checked against)
    values: np.ndarray | None
    if kind == "weights":
        values = weights
    else:
        values = None if units.get(kind) is None else decode_array(units[kind], ndim=1)
    # each tensor's unit count: `sizes` where the writer gave it (units on the last axis), else shape[0]
    sizes = decode_array(units["sizes"], ndim=1).tolist() if units.get("sizes") is not None else None
    if sizes is not None and len(sizes) != ids.size:
        raise ValueError("units sizes do not match their ids")
    at = 0
    for k, tid in enumerate(ids.tolist()):
        info = tensors[tid]
        m = int(info.shape[0]) if sizes is None else int(sizes[k])
        # a count the log states is only believed as far as the norms it holds: no allocation from a number
        if m < 0 or at + m > weights.size or (values is not None and at + m > values.size):
            raise ValueError("units shorter than their tensors")
        if info.name == name:
            if values is None:  # no gradient in this snapshot
                return int(p["step"]), np.full(m, np.nan, dtype=np.float32)
            return int(p["step"]), np.asarray(values[at:at + m], dtype=np.float32)
        at += m
    return None
