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
