"""The comparison chart: one line per run over steps, drawn by plotext.

Two things differ from the single-run `charts.LineChart`, both measured on a
sweep of 10 runs x 520 snapshots of noisy update ratios:

- Each series is reduced to bucket means over about a third of the plot's
  width in characters (fewer with many runs) before plotting. plotext draws
  every segment dot by dot, and ten zigzagging 520-point series took 0.5-1.2 s
  per draw; reduced to ~40 points each, ~100 ms (braille; "dot" would be 40).
- A log axis is drawn from log10 values with decade labels rather than
  plotext's yscale("log"), which takes the log of its stored data in place on
  every build: a second render of the same figure took the log of the log
  (and raised on values below 1).
"""

from __future__ import annotations

import math

import numpy as np
from textual_plotext import PlotextPlot

from weighttui.tui.widgets.log_axis import log_ticks, to_log10
from weighttui.tui.widgets.sparkline import resample

MAX_POINTS = 600


class RunsChart(PlotextPlot):
    DEFAULT_CSS = """
    RunsChart { height: 1fr; width: 1fr; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self.drawn: list[str] = []  # labels of the series with points, in draw order
        self.series_data: list[tuple[str, np.ndarray, np.ndarray]] = []  # (label, x, y) before reduction
        self.points = 0  # points handed to plotext in the last draw (all series)

    def show(self, title: str, steps, series, *, log_y: bool = False) -> None:
        """series: [(label, values on `steps`, colour)], NaN where a run has no value."""
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        x = np.asarray(steps, dtype=np.float64)
        # points per series: a third of the width, less with many runs (~600 points in all)
        width = max(12, min((self.size.width or 80) // 3, MAX_POINTS // max(1, len(series))))
        self.drawn, self.series_data, self.points = [], [], 0
        lo, hi = math.inf, -math.inf
        for label, y, color in series:
            y = to_log10(y) if log_y else np.asarray(y, dtype=np.float64)
            ok = np.isfinite(y) & np.isfinite(x)
            if not ok.any():
                continue
            xs, ys = x[ok], y[ok]
            self.series_data.append((label, xs, ys))
            self.drawn.append(label)
            lo, hi = min(lo, float(ys.min())), max(hi, float(ys.max()))
            if xs.size > width:
                xs, ys = resample(xs, width), resample(ys, width)
            self.points += xs.size
            plt.plot(xs.tolist(), ys.tolist(), label=label or None, color=color, marker="braille")
        if not self.drawn:
            plt.text("no data", 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        elif log_y:
            plt.yticks(*log_ticks(lo, hi))
        self.refresh()
