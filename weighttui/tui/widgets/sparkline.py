"""Unicode sparklines and compact number formatting for table cells.

Plain functions over numpy arrays (no widgets): the layer table and the
scalars panel call them for the rows on screen only.
"""

from __future__ import annotations

import math

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
    chars = [BARS[lv] if ok else GAP for lv, ok in zip(levels.tolist(), finite.tolist())]
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
        for i, line in zip(idx, _spark_rows(values, width, log)):
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


def fmt(value, width: int = 8) -> str:
    """A number in at most `width` characters: 0.0123, 1.23e-05, 12345, nan."""
    if value is None:
        return "–".rjust(width)
    v = float(value)
    if math.isnan(v):
        return "–".rjust(width)
    if math.isinf(v):
        return ("inf" if v > 0 else "-inf").rjust(width)
    a = abs(v)
    if a == 0:
        text = "0"
    else:
        text = ""
        if 1e-3 <= a < 1e5:
            for digits in (4, 3, 2):
                text = f"{v:.{digits}g}".replace("e+0", "e").replace("e+", "e")
                if len(text) <= width:
                    break
        if not text or len(text) > width:
            for digits in (2, 1, 0):
                text = f"{v:.{digits}e}".replace("e-0", "e-").replace("e+0", "e")
                if len(text) <= width:
                    break
    return text.rjust(width)


def fmt_int(n: int) -> str:
    """Parameter counts: 1234 -> 1.2K, 25_000_000 -> 25M."""
    n = int(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)


def fmt_bytes(n: int) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_age(seconds: float | None) -> str:
    """How long ago: 0.4s, 12s, 3m05s, 2h10m."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400 * 2:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d"
