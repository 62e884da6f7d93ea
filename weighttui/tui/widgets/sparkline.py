"""Unicode sparklines for table cells (the numbers beside them: `tui/formatting.py`).

Plain functions over numpy arrays (no widgets): the layer table and the
scalars panel call them for the rows on screen only.
"""

from __future__ import annotations

import numpy as np

BARS = "▁▂▃▄▅▆▇█"
GAP = " "  # a bucket with no finite value


def resample(values: np.ndarray, width: int) -> np.ndarray:
    """At most `width` points: bucket means over the series (NaN buckets stay NaN).

    Keeping the whole history (not only its last `width` values) is what
    makes a drift over a long run visible in a few characters.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= width:
        return values
    edges = np.linspace(0, n, width + 1).astype(np.int64)
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), edges[:-1])
    counts = np.add.reduceat(finite.astype(np.int64), edges[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def spark(values, width: int, *, log: bool = False) -> str:
    """A sparkline of `values` in at most `width` characters (left-padded).

    `log`: plot log10 of the values (update ratios span decades); values
    <= 0 then count as gaps. A flat series is drawn at mid height.
    """
    if width <= 0:
        return ""
    pts = resample(np.asarray(values, dtype=np.float64), width)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            pts = np.where(pts > 0, np.log10(np.where(pts > 0, pts, 1.0)), np.nan)
    finite = np.isfinite(pts)
    if not finite.any():
        return GAP * width
    lo = float(pts[finite].min())
    hi = float(pts[finite].max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        levels = np.full(pts.size, 3)
    else:
        safe = np.where(finite, pts, lo)
        levels = np.clip(((safe - lo) / (hi - lo) * (len(BARS) - 1) + 0.5).astype(np.int64), 0, len(BARS) - 1)
    chars = [BARS[lv] if ok else GAP for lv, ok in zip(levels.tolist(), finite.tolist(), strict=True)]
    return GAP * (width - len(chars)) + "".join(chars)


_CHARS = np.array(list(BARS) + [GAP])  # level -> character; the last one is a gap


def spark_many(series: list, width: int, *, log: bool = False) -> list[str]:
    """`[spark(s, width, log=log) for s in series]`, computed per group of equal-length series.

    The layer table draws four sparklines for each row on screen; the
    histories of a metric usually all have the same length, so one 2-D pass
    replaces a hundred small ones.
    """
    out: list = [None] * len(series)
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(series):
        by_len.setdefault(len(s), []).append(i)
    for n, idx in by_len.items():
        if width <= 0:
            for i in idx:
                out[i] = ""
            continue
        if n == 0 or len(idx) == 1:
            for i in idx:
                out[i] = spark(series[i], width, log=log)
            continue
        values = np.asarray([series[i] for i in idx], dtype=np.float64)
        for i, line in zip(idx, _spark_rows(values, width, log), strict=True):
            out[i] = line
    return out


def _spark_rows(values: np.ndarray, width: int, log: bool) -> list[str]:
    """spark() for each row of a 2-D array (same rules, same characters)."""
    rows, n = values.shape
    if n > width:  # bucket means, NaN buckets stay NaN (as resample)
        edges = np.linspace(0, n, width + 1).astype(np.int64)[:-1]
        finite = np.isfinite(values)
        sums = np.add.reduceat(np.where(finite, values, 0.0), edges, axis=1)
        counts = np.add.reduceat(finite.astype(np.int64), edges, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pts = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    else:
        pts = values
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            pts = np.where(pts > 0, np.log10(np.where(pts > 0, pts, 1.0)), np.nan)
    finite = np.isfinite(pts)
    any_finite = finite.any(axis=1)
    lo = np.where(finite, pts, np.inf).min(axis=1)
    hi = np.where(finite, pts, -np.inf).max(axis=1)
    lo = np.where(any_finite, lo, 0.0)
    hi = np.where(any_finite, hi, 0.0)
    flat = (hi - lo) <= 1e-12 * np.maximum(1.0, np.abs(hi))
    span = np.where(flat, 1.0, hi - lo)
    safe = np.where(finite, pts, lo[:, None])
    levels = np.clip(((safe - lo[:, None]) / span[:, None] * (len(BARS) - 1) + 0.5).astype(np.int64),
                     0, len(BARS) - 1)
    levels = np.where(flat[:, None], 3, levels)
    levels = np.where(finite, levels, len(BARS))  # gaps
    pad = GAP * (width - pts.shape[1])
    return [pad + "".join(chars) for chars in _CHARS[levels].tolist()]
