"""A log y axis for plotext charts, drawn from log10 values with decade labels.

plotext's own yscale("log") takes the log of its stored data in place on every
build, so a second render of the same figure takes the log of the log (and
raises on values below 1). Plotting log10 values with our own ticks avoids it.
"""

from __future__ import annotations

import math

import numpy as np

from weighttui.tui.formatting import fmt


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Y ticks for log10 values in [lo, hi]: the decades inside (1e-3 ...), at most max_ticks,
    or, within less than two decades, the ends and the middle as plain numbers.

    Ticks must not outnumber the rows they go on: plotext keeps one label per
    row, and which one wins a collision changed from run to run.
    """
    decades = list(range(math.ceil(lo), math.floor(hi) + 1))
    max_ticks = max(2, max_ticks)
    if len(decades) >= 2:
        step = max(1, math.ceil(len(decades) / max_ticks))
        ticks = decades[::step]
        return [float(t) for t in ticks], [f"1e{t}" for t in ticks]
    points = sorted({float(lo), (lo + hi) / 2, float(hi)})
    return points, [fmt(10.0 ** t, 7).strip() for t in points]


def to_log10(values) -> np.ndarray:
    """log10 of the positive values, NaN elsewhere (a log axis has no place for them)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
