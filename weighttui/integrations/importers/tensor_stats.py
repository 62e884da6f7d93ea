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


def rows_many(items, bins: int, threads: int = 1) -> list:
    """rows() of several tensors [(arr, bf16, prev or None, prev_bf16)] in one kernel call whose threads
    share them (whole tensors each): [((WEIGHT_STATS, lo, hi, counts), delta row or None) or the exception
    that computing that tensor raised]."""
    out: list = [None] * len(items)
    mine, xs, prevs, codes = [], [], [], []
    for i, (arr, bf16, prev, prev_bf16) in enumerate(items):
        code = _code(arr, bf16)
        if code is None:
            continue
        pcode = None if prev is None else _code(prev, prev_bf16)
        mine.append(i)
        xs.append(kernel.flat(arr))
        prevs.append(kernel.flat(prev) if prev is not None and pcode == code and prev.size == arr.size else None)
        codes.append(code)
    done: dict[int, list] = {}
    if mine:
        raw_w, raw_d, w_done, d_done = kernel.run(xs, prevs, bytes(codes), bins, copy=False,
                                                  threads=max(1, min(threads, len(mine))))
        with np.errstate(all="ignore"):  # rows not done are garbage, dropped below
            w_lo, w_hi, w_counts = hist_parts(raw_w, bins)
            w_stats = weight_rows(raw_w)
            d_lo, d_hi, d_counts = hist_parts(raw_d, bins)
            d_stats = delta_rows(raw_d, raw_d[:, _PSQ])
        for k, i in enumerate(mine):
            done[i] = [(w_stats[k], float(w_lo[k]), float(w_hi[k]), w_counts[k]) if w_done[k] else None,
                       (d_stats[k], float(d_lo[k]), float(d_hi[k]), d_counts[k]) if d_done[k] else None]
    for i, (arr, bf16, prev, prev_bf16) in enumerate(items):
        w, d = done.get(i, [None, None])
        try:
            if w is None:
                ref = widened(arr, bf16)
                w = (weight_stats(ref), *histogram(ref, bins))
            if d is None and prev is not None:
                d = delta_row(widened(arr, bf16), widened(prev, prev_bf16), bins)
            out[i] = (w, d)
        except Exception as exc:  # reported for that tensor alone
            out[i] = exc
    return out


def samples(arr: np.ndarray, bf16: bool, index: np.ndarray) -> np.ndarray:
    """The sampled elements (float32), read from arr where it lies."""
    return widened(arr.reshape(-1)[index], bf16).astype(np.float32)
