"""Per-unit norms (docs/instruments.md, "Per-unit health"): the snapshots' optional `units` key.

Read on demand from the log (one pass over its frames), for a strip of units
over time or a list of which units died: `unit_norms(path, "fc1.weight")`.
The run store does not keep them (they are as many numbers per snapshot as a
layer has output units).
"""

from __future__ import annotations

import os

import numpy as np

from weighttui.log.format import FrameType, decode_array
from weighttui.log.reader import ScanState, scan_frames
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


def _units_of(p: dict, units: dict, tensors: dict, name: str, kind: str):
    ids = decode_array(units.get("ids"), ndim=1)
    values = units.get(kind)
    values = None if values is None else decode_array(values, ndim=1)
    at = 0
    for tid in ids.tolist():
        info = tensors[tid]
        m = int(info.shape[0])
        if info.name == name:
            if values is None:  # no gradient in this snapshot
                return int(p["step"]), np.full(m, np.nan, dtype=np.float32)
            if at + m > values.size:
                raise ValueError("units shorter than their tensors")
            return int(p["step"]), np.asarray(values[at:at + m], dtype=np.float32)
        at += m
    return None
