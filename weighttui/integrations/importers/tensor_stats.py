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


def _results(raw_w: np.ndarray, raw_d: np.ndarray, w_done, d_done, bins: int) -> list:
    """[weights row or None, delta row or None] per raw row, as rows_many() gives them."""
    with np.errstate(all="ignore"):  # rows not done are garbage, dropped below
        w_lo, w_hi, w_counts = hist_parts(raw_w, bins)
        w_stats = weight_rows(raw_w)
        d_lo, d_hi, d_counts = hist_parts(raw_d, bins)
        d_stats = delta_rows(raw_d, raw_d[:, _PSQ])
    return [[(w_stats[k], float(w_lo[k]), float(w_hi[k]), w_counts[k]) if w_done[k] else None,
             (d_stats[k], float(d_lo[k]), float(d_hi[k]), d_counts[k]) if d_done[k] else None]
            for k in range(raw_w.shape[0])]


def code(arr: np.ndarray, bf16: bool) -> int | None:
    """The kernel's dtype code for an imported tensor as stored, or None where the kernel cannot read it."""
    return _code(arr, bf16)


def chain(versions, bins: int, first_prev=None, drop=None, stop=None):
    """rows() of one tensor's versions in order, each against the one before (the first against first_prev:
    (arr, bf16) or None), through the kernel's chain(): each version is read three times, not four
    (kernel.chain). versions: [(arr, bf16)] of one kernel dtype code and size (code()); drop(j): whether
    version j's pages may be given back once read for the last time (a view of a file mapping), after
    which it is not read again; stop(j): checked before the step that reads versions j - 2 to j, True ends
    the chain there (the versions not yielded are not computed). Yields, per version in order, (rows as
    rows_many() gives them, or None where the kernel handed the tensor back: the caller computes it as
    before)."""
    flats = [kernel.flat(a) for a, _b in versions]
    codes = {code(a, b) for a, b in versions}
    c = codes.pop() if len(codes) == 1 else None
    if c is None:
        raise ValueError("chain: versions of one kernel dtype code are needed")
    prev = None if first_prev is None else kernel.flat(first_prev[0])
    state = None
    for j in range(len(flats) + 1):
        if stop is not None and stop(j):
            return
        bx, bp = (flats[j - 1], prev if j == 1 else flats[j - 2] if j >= 2 else None) if j else (None, None)
        ax = flats[j] if j < len(flats) else None
        ap = (prev if j == 0 else flats[j - 1]) if ax is not None else None
        may_drop = bool(bp is not None and drop is not None and j >= 2 and drop(j - 2))
        raw_w, raw_d, w_done, d_done, new_state = kernel.chain(bx, bp, state, ax, ap, c, bins, may_drop)
        if j:
            has_prev = bp is not None
            # where the kernel did not do every row, the caller's own path does the tensor (as rows_many)
            ok = w_done and (d_done or not has_prev)
            yield _results(raw_w, raw_d, [w_done], [d_done], bins)[0] if ok else None
        state = new_state


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
        for k, row in enumerate(_results(raw_w, raw_d, w_done, d_done, bins)):
            done[mine[k]] = row
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
