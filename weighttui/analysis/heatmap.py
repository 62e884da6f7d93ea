"""Histograms over time as numbers a screen can draw: pure numpy, no textual.

Every snapshot carries its own histogram with B equal bins over [lo, hi] of
that snapshot's values. To draw them side by side (x = step, y = value) each
one is re-binned onto one common value grid, assuming counts are spread
evenly inside a source bin. Percentile bands (TensorBoard's distributions
view) are read off the same histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)


def value_range(lo: np.ndarray, hi: np.ndarray) -> tuple[float, float] | None:
    """(vmin, vmax) over the finite histogram bounds, widened if they coincide; None if none."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    vmin, vmax = float(lo[ok].min()), float(hi[ok].max())
    if vmin == vmax:  # a constant tensor: give the grid some height around it
        pad = abs(vmin) * 1e-3 or 0.5
        vmin, vmax = vmin - pad, vmax + pad
    return vmin, vmax


def bin_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """n+1 equal-width edges from lo to hi, like np.linspace, but finite for any finite lo and hi:
    lo*(1-t) + hi*t, where linspace's hi - lo overflows for ranges near the float64 limits
    (a hostile log's [-1e308, 1e308] histogram)."""
    with np.errstate(over="ignore"):
        if np.isfinite(hi - lo):
            return np.linspace(lo, hi, n + 1)
    t = np.arange(n + 1) / n
    return lo * (1 - t) + hi * t


def rebin(lo, hi, counts, edges) -> np.ndarray:
    """Counts of N histograms moved onto the grid `edges` (G+1 increasing values): [N, G] float64.

    Mass inside a source bin is taken as uniform; a histogram with lo == hi is
    a point mass at lo. Counts outside the grid are dropped, so when the grid
    covers every [lo, hi] each row keeps its total exactly (up to rounding).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    n, b = counts.shape
    g = edges.size - 1
    out = np.zeros((n, g))
    if n == 0 or b == 0 or g < 1:
        return out
    total = counts.sum(axis=1)
    ok = np.isfinite(lo) & np.isfinite(hi) & (total > 0)
    spread = ok & (hi > lo)
    if spread.any():
        lo_s, hi_s, c = lo[spread], hi[spread], counts[spread]
        cum = np.concatenate([np.zeros((c.shape[0], 1)), np.cumsum(c, axis=1)], axis=1)
        # each grid edge's position in source-bin units; the cumulative count there
        with np.errstate(over="ignore", invalid="ignore"):
            u = (edges[None, :] - lo_s[:, None]) / (hi_s - lo_s)[:, None] * b
            if not np.isfinite(u).all():  # hi - lo overflows near the float64 limits: in halves
                u = (edges[None, :] / 2 - lo_s[:, None] / 2) / (hi_s / 2 - lo_s / 2)[:, None] * b
        u = np.clip(np.nan_to_num(u, nan=0.0), 0.0, b)
        k = np.minimum(np.floor(u).astype(np.int64), b - 1)
        frac = u - k
        at = np.take_along_axis(cum, k, axis=1) + frac * np.take_along_axis(c, k, axis=1)
        out[spread] = np.diff(at, axis=1)
    point = ok & (hi == lo)
    if point.any():
        rows = np.nonzero(point)[0]
        v = lo[rows]
        inside = (v >= edges[0]) & (v <= edges[-1])
        idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, g - 1)
        out[rows[inside], idx[inside]] = total[rows[inside]]
    return out


def percentile_bands(lo, hi, counts, qs=PERCENTILES) -> np.ndarray:
    """Percentiles (0..100) of each of N histograms, [N, len(qs)]; NaN rows where empty.

    Linear interpolation inside bins, as weighttui.record.stats.hist_percentiles does
    for one histogram (this is the vectorised form of it).
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    q = np.asarray(qs, dtype=np.float64) / 100.0
    n, b = counts.shape
    out = np.full((n, q.size), np.nan)
    if n == 0 or b == 0:
        return out
    total = counts.sum(axis=1)
    ok = np.isfinite(lo) & np.isfinite(hi) & (total > 0)
    if not ok.any():
        return out
    rows = np.nonzero(ok)[0]
    cdf = np.cumsum(counts[rows], axis=1) / total[rows, None]  # [R, B], value at each bin's top edge
    cdf[:, -1] = 1.0
    width = hi[rows] / b - lo[rows] / b  # not (hi - lo) / b: that overflows for ranges near the float limits
    for j, qj in enumerate(q):
        # the first bin whose top edge reaches the quantile, then interpolate inside it
        k = np.argmax(cdf >= qj - 1e-12, axis=1)
        below = np.where(k > 0, cdf[np.arange(rows.size), np.maximum(k - 1, 0)], 0.0)
        inbin = cdf[np.arange(rows.size), k] - below
        frac = np.where(inbin > 0, (qj - below) / np.where(inbin > 0, inbin, 1.0), 0.0)
        pos = k + np.clip(frac, 0.0, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            value = lo[rows] + pos * width
        edge = ~np.isfinite(value)  # a range near the float limits: the same point as a convex combination
        if edge.any():
            t = pos[edge] / b
            value[edge] = lo[rows][edge] * (1 - t) + hi[rows][edge] * t
        out[rows, j] = value
    if q.size:
        out[rows[:, None], np.nonzero(q <= 0)[0][None, :]] = lo[rows, None]  # 0th: the minimum
        out[rows[:, None], np.nonzero(q >= 1)[0][None, :]] = hi[rows, None]  # 100th: the maximum
    return out


@dataclass
class Heatmap:
    """A density grid ready to draw: row 0 is the lowest value, column 0 the earliest step."""

    density: np.ndarray  # [G, C] in 0..1; 0 = nothing there, NaN = no snapshot in that column
    edges: np.ndarray  # [G + 1] value grid
    col_steps: np.ndarray  # [C] the latest step drawn in each column
    vmin: float
    vmax: float


def column_of(steps: np.ndarray, columns: int) -> np.ndarray:
    """Screen column of each snapshot: proportional to the step, first and last at the edges."""
    steps = np.asarray(steps, dtype=np.float64)
    if steps.size == 0:
        return np.zeros(0, dtype=np.int64)
    s0, s1 = steps[0], steps[-1]
    if s1 <= s0:
        return np.zeros(steps.size, dtype=np.int64)
    return np.minimum(((steps - s0) / (s1 - s0) * columns).astype(np.int64), columns - 1)


def build(steps, lo, hi, counts, *, columns: int, bins: int, vrange: tuple[float, float] | None = None,
          log: bool = False, decades: float = 4.0) -> Heatmap | None:
    """Histograms over time on a [bins x columns] grid; None if there is nothing to draw.

    Each snapshot's histogram is normalised to sum 1 (so subsampled histograms
    compare with whole ones); several snapshots in one column are averaged; a
    column no snapshot lands in repeats the one to its left (fewer snapshots
    than columns). Each column is then scaled by its own peak, so the shape of
    the distribution is visible at every step; `log` maps the density over
    `decades` orders of magnitude instead of linearly.
    """
    steps = np.asarray(steps)
    counts = np.asarray(counts)
    if columns < 1 or bins < 1 or steps.size == 0 or counts.size == 0:
        return None
    if vrange is None:
        vrange = value_range(lo, hi)
        if vrange is None:
            return None
    vmin, vmax = vrange
    edges = bin_edges(vmin, vmax, bins)
    grid = rebin(lo, hi, counts, edges)  # [N, G]
    total = np.asarray(counts, dtype=np.float64).sum(axis=1)
    grid /= np.where(total > 0, total, 1.0)[:, None]
    cols = column_of(steps, columns)
    acc = np.zeros((columns, bins))
    hits = np.zeros(columns)
    np.add.at(acc, cols, grid)
    np.add.at(hits, cols, 1.0)
    col_steps = np.full(columns, -1, dtype=np.int64)
    col_steps[cols] = steps  # later snapshots in a column overwrite earlier ones
    filled = hits > 0
    acc[filled] /= hits[filled, None]
    # forward-fill empty columns from the left (the first column always has a snapshot)
    src = np.maximum.accumulate(np.where(filled, np.arange(columns), 0))
    acc = acc[src]
    col_steps = col_steps[src]
    peak = acc.max(axis=1, keepdims=True)
    dens = np.divide(acc, peak, out=np.zeros_like(acc), where=peak > 0)
    if log:
        with np.errstate(divide="ignore"):
            dens = np.where(dens > 0, np.clip(1.0 + np.log10(np.maximum(dens, 1e-300)) / decades, 0.02, 1.0), 0.0)
    return Heatmap(density=dens.T.copy(), edges=edges, col_steps=col_steps, vmin=vmin, vmax=vmax)


def window(steps, end_step: int | None, columns: int, zoom: str) -> slice:
    """The snapshots (indices into `steps`) the heatmap shows.

    zoom "run": all of them (the position is marked); "recent": the last
    `columns` up to the timeline position (end_step, None = latest), one per
    screen column.
    """
    steps = np.asarray(steps)
    if zoom != "recent":
        return slice(0, steps.size)
    stop = steps.size if end_step is None else int(np.searchsorted(steps, end_step, side="right"))
    return slice(max(0, stop - max(1, columns)), stop)


def hist_moments(lo: float, hi: float, counts: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation estimated from one histogram (bin centres); NaN if it is empty."""
    total = counts.sum()
    if not total or not (np.isfinite(lo) and np.isfinite(hi)):
        return float("nan"), float("nan")
    if hi == lo:
        return float(lo), 0.0
    edges = bin_edges(lo, hi, counts.size)
    mid = (edges[:-1] + edges[1:]) / 2 if np.isfinite(hi - lo) else edges[:-1] / 2 + edges[1:] / 2
    mean = float((counts * mid).sum() / total)
    return mean, float(np.sqrt(max(0.0, (counts * (mid - mean) ** 2).sum() / total)))
