"""The detail screen's step range: zoom and pan over a run at full resolution (docs/tui.md).

The viewer's row view thins a long run to `max_rows` rows; a zoomed range is read
through RunData's range reads (`series/histograms/samples(start=, stop=)`), so
every snapshot of the range is there, whatever `max_rows`. No textual here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weighttui.analysis.series import tensor_series
from weighttui.data.run import RunData

Span = tuple[int, int]  # [start, stop) in steps
MIN_SNAPSHOTS = 4  # zooming in stops at a range this short
FULL_MAX = 16384  # a range of more snapshots is read from the row view (memory stays bounded)


def extent(data: RunData) -> Span | None:
    """[first step, latest step + 1) of the run; None without snapshots."""
    steps = data.steps  # the row view keeps the first and the latest snapshot
    if not steps.size:
        return None
    return int(steps[0]), int(steps[-1]) + 1


def _fit(start: float, width: float, ext: Span, keep: int | None = None) -> Span | None:
    """A range of `width` steps starting near `start`, moved inside the run (and so that it holds
    step `keep`); None: the whole run."""
    lo, hi = ext
    if width >= hi - lo:
        return None
    width = max(1, int(round(width)))
    a = int(np.floor(start))
    if keep is not None:
        a = min(max(a, keep - width + 1), keep)
    a = min(max(a, lo), hi - width)
    return a, a + width


def zoom(data: RunData, span: Span | None, center: int | None, factor: float) -> Span | None:
    """The range `factor` times as wide as `span` (None: the whole run) around `center` (a step);
    narrower only while it keeps MIN_SNAPSHOTS snapshots, None once it covers the run."""
    ext = extent(data)
    if ext is None:
        return None
    start, stop = span if span is not None else ext
    width = (stop - start) * factor
    if center is None or not start <= center < stop:
        center = (start + stop) // 2
    # keep the center where it is on screen: its fraction of the range stays the same
    frac = (center - start) / max(1, stop - start)
    new = _fit(center - frac * width, width, ext, keep=center)
    if factor < 1 and new is not None:
        lo, hi = data.rows_for_steps(*new)
        if hi - lo < MIN_SNAPSHOTS:
            return span  # as close as it goes
    return new


def pan(data: RunData, span: Span | None, direction: int) -> Span | None:
    """Move the range by half its width (direction -1: earlier, +1: later), inside the run."""
    ext = extent(data)
    if span is None or ext is None:
        return span
    width = span[1] - span[0]
    return _fit(span[0] + direction * width / 2, width, ext)


def follow(data: RunData, span: Span | None, step: int) -> Span | None:
    """The range moved (same width) just enough that `step` lies in it."""
    ext = extent(data)
    if span is None or ext is None or span[0] <= step < span[1]:
        return span
    width = span[1] - span[0]
    start = step if step < span[0] else step - width + 1
    return _fit(start, width, ext, keep=step)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass
class Window:
    """What the screen draws for one tensor, kind and range."""

    hist: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, lo, hi, counts
    stats: dict[str, np.ndarray]
    samples: tuple[np.ndarray, np.ndarray]
    full: bool  # every snapshot of the range (else the row view's rows in it)
    snapshots: int  # snapshots the run has in the range
    shown: int  # rows read
    stride: int  # every stride-th snapshot (1: all)

    def label(self, span: Span | None, columns: int | None = None) -> str:
        """'steps 1200-1450 · every snapshot (251)' / 'whole run · every 8th snapshot (2,048 of 16,000)'."""
        where = "whole run" if span is None else f"steps {span[0]}-{span[1] - 1}"
        if self.stride <= 1:
            what = f"every snapshot ({self.snapshots:,})"
        else:
            what = f"every {ordinal(self.stride)} snapshot ({self.shown:,} of {self.snapshots:,})"
        if columns and self.shown > columns:
            what += f", ~{-(-self.shown // columns)} a column"
        return f"{where} · {what}"


def stride_of(index: np.ndarray) -> int:
    """The usual gap between kept snapshot indices (the row view's thinning stride)."""
    if index.size < 2:
        return 1
    return max(1, int(np.median(np.diff(index))))


def series(data: RunData, tensor: str, kind: str, span: Span | None, full: bool) -> dict[str, np.ndarray]:
    """tensor_series over `span` as `read` reads it: every snapshot (full) or the row view's rows."""
    if span is None:
        return tensor_series(data, tensor, kind)
    if full:
        return tensor_series(data, tensor, kind, start=span[0], stop=span[1])
    return _clip_series(tensor_series(data, tensor, kind), span)


def read(data: RunData, tensor: str, kind: str, span: Span | None) -> Window:
    """The tensor's histograms, statistics and samples over `span` (None: the row view)."""
    if span is not None:
        lo, hi = data.rows_for_steps(*span)
        count = hi - lo
        if count <= FULL_MAX:
            start, stop = span
            hist = data.histograms(tensor, kind, start=start, stop=stop)
            stats = series(data, tensor, kind, span, True)
            samples = data.samples(tensor, start=start, stop=stop)
            return Window(hist, stats, samples, True, count, count, 1)
        # too many for one read: the row view's rows inside the range
        hist = _clip(data.histograms(tensor, kind), span)
        stats = series(data, tensor, kind, span, False)
        samples = _clip(data.samples(tensor), span)
        index = data.snapshot_index
        inside = index[(index >= lo) & (index < hi)]
        return Window(hist, stats, samples, False, count, int(inside.size), stride_of(inside))
    hist = data.histograms(tensor, kind)
    stats = tensor_series(data, tensor, kind)
    samples = data.samples(tensor)
    total, n = data.row_count, data.n
    stride = 1 if n >= total else stride_of(data.snapshot_index)
    return Window(hist, stats, samples, n >= total, total, n, stride)


def _clip(arrays, span: Span):
    steps = arrays[0]
    keep = (steps >= span[0]) & (steps < span[1])
    return tuple(a[keep] for a in arrays)


def _clip_series(stats: dict[str, np.ndarray], span: Span) -> dict[str, np.ndarray]:
    steps = stats["steps"]
    keep = (steps >= span[0]) & (steps < span[1])
    return {k: v[keep] for k, v in stats.items()}
