"""One imported tensor's statistics rows and exact delta against its previous copy, with the fused kernel.

The kernel (weighttui/record/kernel.py, record/native/fastats.c) reads the
tensor and its previous copy where they lie (views of mapped checkpoint
files: no copy, nothing written back: copy=False) and returns the weights
row, the exact update row (d = now - prev in float64, every element) and both
histograms in two passes over memory; the update itself is never
materialised. What the kernel hands back (NaN/Inf, integers, a dtype change
between checkpoints, a kernel that is not built) goes through the float64
numpy reference (weighttui/record/stats.py), as a live recording does.
"""

from __future__ import annotations

import numpy as np

from weighttui.record import kernel
from weighttui.record.raw_rows import _PSQ, delta_rows, hist_parts, weight_rows
from weighttui.record.stats import delta_row, histogram, weight_stats


def widened(arr: np.ndarray, bf16: bool) -> np.ndarray:
    """What the reference path reads: bfloat16 bits widened to float32 (exact), anything else as is."""
    if not bf16:
        return arr
    return (np.ascontiguousarray(arr, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def _code(arr: np.ndarray, bf16: bool) -> int | None:
    if not kernel.available() or arr.size == 0 or not arr.flags.c_contiguous or not arr.flags.aligned:
        return None
    if bf16:
        return kernel.BF16 if arr.dtype.itemsize == 2 else None
    return kernel.code_of(arr.dtype) if arr.dtype.isnative else None


def rows(arr: np.ndarray, bf16: bool, prev: np.ndarray | None, prev_bf16: bool, bins: int):
    """((WEIGHT_STATS, lo, hi, counts), (DELTA_STATS, lo, hi, counts) or None when prev is None)."""
    code = _code(arr, bf16)
    w = d = None
    if code is not None:
        pcode = None if prev is None else _code(prev, prev_bf16)
        kprev = kernel.flat(prev) if prev is not None and pcode == code and prev.size == arr.size else None
        raw_w, raw_d, w_done, d_done = kernel.run([kernel.flat(arr)], [kprev], bytes([code]), bins, copy=False)
        if w_done[0]:
            lo, hi, counts = hist_parts(raw_w[:1], bins)
            w = (weight_rows(raw_w[:1])[0], float(lo[0]), float(hi[0]), counts[0])
        if d_done[0]:
            lo, hi, counts = hist_parts(raw_d[:1], bins)
            d = (delta_rows(raw_d[:1], raw_d[:1, _PSQ])[0], float(lo[0]), float(hi[0]), counts[0])
    if w is None:
        ref = widened(arr, bf16)
        w = (weight_stats(ref), *histogram(ref, bins))
    if d is None and prev is not None:
        d = delta_row(widened(arr, bf16), widened(prev, prev_bf16), bins)
    return w, d


def samples(arr: np.ndarray, bf16: bool, index: np.ndarray) -> np.ndarray:
    """The sampled elements (float32), read from arr where it lies."""
    return widened(arr.reshape(-1)[index], bf16).astype(np.float32)
