"""Raw statistics rows: the additive aggregates every statistics engine produces, and their finishing.

The fused C kernel (weighttui._fastats via record/kernel.py) and torch_stats'
device ops both hand back *raw rows*, aggregates that are additive (or min/max)
so that shards of one tensor can be combined before they are finalised:

    RAW row = n, m (finite count), lo, hi (finite extrema), c (shift),
              s1 = sum(x - c), s2 = sum((x - c)^2), asum = sum|x|,
              zeros, nan, inf, psq (delta only: sum prev^2) | hist counts [B]

This module turns them into the FORMAT.md statistics (as weighttui.record.stats,
the float64 reference, defines them). numpy only: the core never imports a
framework.
"""

from __future__ import annotations

import numpy as np

from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

RAW = ("n", "m", "lo", "hi", "c", "s1", "s2", "asum", "zeros", "nan", "inf", "psq")
N_RAW = len(RAW)
_N, _M, _LO, _HI, _C, _S1, _S2, _ASUM, _ZEROS, _NAN, _INF, _PSQ = range(N_RAW)

# One float32 tensor on the CPU is summed unshifted (c = 0: sum(x) and sum(x^2)
# are read passes, the shifted sums need a written temporary first); rows whose
# mean^2 exceeds this many variances are recomputed (see cancelled()). At 4 the
# variance keeps about 1e-6 relative (float32 pairwise sums ~1e-7, NORM_ROW sums
# of squares ~3e-8, times at most 2 * 4 + 1).
UNSHIFTED_LIMIT = 4.0


def needs_slow_path(raw: np.ndarray) -> np.ndarray:
    """Rows whose fast-path extrema or sums are not finite (NaN/Inf inside, or overflow)."""
    cols = raw[:, [_LO, _HI, _C, _S1, _S2, _ASUM]]
    return ~np.isfinite(cols).all(axis=1)


def cancelled(raw: np.ndarray) -> np.ndarray:
    """Unshifted rows (c == 0) of tensors whose mean is large against their spread
    (mean^2 > UNSHIFTED_LIMIT * variance): sum(x^2) - sum(x)^2/m then cancels
    digits, so such rows are recomputed (the usual weight tensor, centred near
    zero, is not affected; see DeviceStats._moments)."""
    s1, m, s2 = raw[:, _S1], raw[:, _M], raw[:, _S2]
    with np.errstate(invalid="ignore", over="ignore"):
        return (raw[:, _C] == 0) & (s1 * s1 > UNSHIFTED_LIMIT * np.maximum(m * s2 - s1 * s1, 0.0))


def needs_redo(raw: np.ndarray) -> np.ndarray:
    """Rows the masked float64 pass recomputes: non-finite, or cancelled()."""
    return (needs_slow_path(raw) | cancelled(raw)) & (raw[:, _N] > 0)


def weight_rows(raw: np.ndarray) -> np.ndarray:
    """WEIGHT_STATS [R, 9] from raw rows (as weighttui.record.stats.weight_stats defines them)."""
    n, m, c, s1, s2 = raw[:, _N], raw[:, _M], raw[:, _C], raw[:, _S1], raw[:, _S2]
    out = np.full((raw.shape[0], len(WEIGHT_STATS)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = c + s1 / m
        m2 = np.maximum(s2 - s1 * s1 / m, 0.0)
        has = m > 0
        out[:, 0] = np.where(has, mean, np.nan)
        out[:, 1] = np.where(has, np.sqrt(m2 / m), np.nan)
        out[:, 2] = np.where(has, raw[:, _LO], np.nan)
        out[:, 3] = np.where(has, raw[:, _HI], np.nan)
        out[:, 4] = np.where(has, raw[:, _ASUM] / m, np.nan)
        out[:, 5] = np.where(has, np.sqrt(m2 + m * mean * mean), 0.0)
        out[:, 6] = np.where(n > 0, raw[:, _ZEROS] / n, np.nan)
    out[:, 7] = raw[:, _NAN]
    out[:, 8] = raw[:, _INF]
    return out


def sumsq(raw: np.ndarray) -> np.ndarray:
    """sum(x^2) over the finite elements of each row (0 where there are none)."""
    m, c, s1, s2 = raw[:, _M], raw[:, _C], raw[:, _S1], raw[:, _S2]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = c + s1 / m
        m2 = np.maximum(s2 - s1 * s1 / m, 0.0)
        return np.where(m > 0, m2 + m * mean * mean, 0.0)


def delta_rows(raw: np.ndarray, prev_sumsq: np.ndarray) -> np.ndarray:
    """DELTA_STATS [R, 6] of d = now - prev from raw rows of d.

    prev_sumsq: sum(prev^2) over the elements finite in both, per row (the fast
    path knows it from the previous snapshot; the slow path measured it, psq).
    """
    n, m = raw[:, _N], raw[:, _M]
    out = np.full((raw.shape[0], len(DELTA_STATS)), np.nan)
    dsq = sumsq(raw)
    dnorm = np.sqrt(dsq)
    pnorm = np.sqrt(np.maximum(prev_sumsq, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(pnorm > 0, dnorm / pnorm, np.where(dnorm > 0, np.inf, 0.0))
        ratio = np.where(n > 0, ratio, np.nan)  # an empty tensor has no ratio (as stats.delta_stats)
        has = m > 0
        out[:, 0] = dnorm
        out[:, 1] = ratio
        out[:, 2] = np.where(has, np.maximum(-raw[:, _LO], raw[:, _HI]), np.nan)
        out[:, 3] = np.where(has, raw[:, _ASUM] / m, np.nan)
        out[:, 4] = np.where(n > 0, (m - raw[:, _ZEROS]) / n, np.nan)
    out[:, 5] = 1.0
    return out


def exact_delta_rows(raw: np.ndarray, known_prev_sumsq: np.ndarray) -> np.ndarray:
    """DELTA_STATS [R, 6] of exact deltas from a pass that measures sum(prev^2) (psq) only when
    it had to: the slow path (NaN/Inf), or a nonzero psq. Elsewhere the previous snapshot's
    sum of squares is used (known_prev_sumsq, NaN where unknown: see remember_sumsq). A tensor
    with no elements changed nothing: norm 0, exact."""
    slow = needs_slow_path(raw) | (raw[:, _PSQ] != 0)
    rows = delta_rows(raw, np.where(slow, raw[:, _PSQ], known_prev_sumsq))
    rows[raw[:, _N] == 0] = [0.0, np.nan, np.nan, np.nan, np.nan, 1.0]
    return rows


def remember_sumsq(memory: dict, names, raw_w: np.ndarray) -> None:
    """Keep each tensor's sum(x^2) from its weights' raw row under its name, the next
    snapshot's known_prev_sumsq; a row with non-finite elements is forgotten (measured again)."""
    sq, finite = sumsq(raw_w), ~needs_slow_path(raw_w)
    for name, s, ok in zip(names, sq, finite, strict=True):
        if ok:
            memory[name] = float(s)
        else:
            memory.pop(name, None)


def hist_parts(raw: np.ndarray, bins: int):
    """(lo, hi, counts uint32) of raw rows; NaN bounds where no element is finite."""
    m = raw[:, _M]
    lo = np.where(m > 0, raw[:, _LO], np.nan)
    hi = np.where(m > 0, raw[:, _HI], np.nan)
    counts = np.rint(raw[:, N_RAW:N_RAW + bins]).astype(np.uint32)
    return lo, hi, counts
