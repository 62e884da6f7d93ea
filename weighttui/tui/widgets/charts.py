"""Line charts over steps, drawn by plotext through textual-plotext.

`LineChart.show()` takes whole series (NaN gaps allowed) and a marker step
(the timeline position, drawn as a vertical line); it remembers what it drew
so an unchanged chart is not rebuilt (plotext is the slow part of a screen).
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from weighttui.tui.widgets.log_axis import log_ticks, to_log10

# percentile bands, outermost first: faint at the extremes, bright at the median
BAND_COLORS = ("gray", "blue", "cyan", "green", "yellow", "green", "cyan", "blue", "gray")
SERIES_COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")

PLOT_LIMIT = 1e300  # larger magnitudes are not plotted (see ChartView.show)


def envelope(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 points per bucket (its min and max, in x order): what a chart of that width can show.

    plotext draws every segment it is given and is the slow part of a screen;
    keeping each bucket's extremes keeps the spikes (a NaN step, a jump) visible.
    """
    n = x.size
    if n <= 2 * buckets or buckets < 1:
        return x, y
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts = edges[:-1][np.diff(edges) > 0]
    bucket = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n)))
    picked = []
    for extreme in (np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)):
        at = np.flatnonzero(y == extreme[bucket])  # (finite values: each bucket has one at least)
        picked.append(at[np.unique(bucket[at], return_index=True)[1]])  # the first, as argmin / argmax
    index = np.unique(np.concatenate(picked))  # in x order; one point where min and max coincide
    return x[index], y[index]


class LineChart(PlotextPlot):
    DEFAULT_CSS = """
    LineChart { height: 1fr; width: 1fr; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self._key = None
        self.drawn: list[str] = []  # labels of the series drawn last
        self.series_data: list[tuple[str, np.ndarray, np.ndarray]] = []  # (label, x, y) drawn last
        self.title_text = ""
        self._title_set = ""  # the title plotext has: title_text, or its start on a narrow chart
        self._last_show = None
        self._drawn_size = None

    def render(self) -> RenderResult:
        if self._last_show is not None and self.size != self._drawn_size:
            # series are thinned to the width, and log ticks to the height, they are drawn at: a chart
            # shown before layout (a new screen) is drawn here at its size, once, rather than drawn at
            # the wrong size and again when its Resize event comes (plotext is a screen's slow part)
            self._draw(*self._last_show)
        out = super().render()
        title = self._title_set
        if not title or not isinstance(out, Text) or title in out.plain:
            return out
        # plotext leaves out a title wider than the space centred over its plot area (a chart of
        # a third of 80 columns): show the title's start instead, measured on the frame just drawn
        frame = next((line for line in out.plain.split("\n") if "┌" in line), None)
        if frame is None:
            return out
        left = frame.index("┌")
        centre = left + 1 + (frame.find("┐", left) - left - 1) // 2
        room = min(len(title), 2 * (len(frame) - centre - 1) - 1)
        for n in range(room, max(room - 4, 1), -1):  # (the measure is off by a column at most)
            short = title[:n - 1] + "…"
            self.plt.title(short)
            out = super().render()
            if isinstance(out, Text) and short in out.plain:
                self._title_set = short
                return out
        self.plt.title(None)
        self._title_set = ""
        return out

    def on_resize(self) -> None:
        if self._last_show is not None and self.size != self._drawn_size:
            self.refresh()  # render() draws it again at the new size

    def show(self, title: str, x, series, *, marker=None, log_y: bool = False, key=None,
             ylim: tuple[float, float] | None = None) -> None:
        """series: [(label, y values, colour)]; `key` (hashable) skips the redraw when unchanged;
        `ylim`: a fixed y range (fractions: 0..1) instead of the data's."""
        if key is not None and key == self._key:
            return
        self._key = key
        self._last_show = (title, x, series, marker, log_y, ylim)
        self._draw(title, x, series, marker, log_y, ylim)
        self.refresh()

    def _draw(self, title: str, x, series, marker, log_y: bool, ylim: tuple[float, float] | None) -> None:
        """Give plotext the figure for the chart's current size (render() builds it)."""
        self._drawn_size = self.size
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        self._title_set = title
        x = np.asarray(x, dtype=np.float64)
        drawn, data = [], []
        log_lo, log_hi = math.inf, -math.inf
        self.title_text = title
        for label, y, color in series:
            y = np.asarray(y, dtype=np.float64)
            # plotext's axis arithmetic overflows to NaN (and raises) on spans near the float64
            # limits: values no training produces (a hostile log's 1e308) are left out, not drawn
            ok = np.isfinite(y) & np.isfinite(x) & (np.abs(y) < PLOT_LIMIT) & (np.abs(x) < PLOT_LIMIT)
            if log_y:
                ok &= y > 0
            if ylim is not None:  # plotext fails on points outside a fixed range (a fraction of 5)
                ok &= (y >= ylim[0]) & (y <= ylim[1])
            if not ok.any():
                continue
            plotted = to_log10(y[ok]) if log_y else y[ok]  # see log_axis: never plotext's yscale("log")
            if log_y:
                log_lo, log_hi = min(log_lo, float(plotted.min())), max(log_hi, float(plotted.max()))
            xs, ys = envelope(x[ok], plotted, max(16, (self.size.width or 160) - 8))
            plt.plot(xs.tolist(), ys.tolist(), label=label or None, color=color, marker="braille")
            drawn.append(label)
            data.append((label, x[ok], y[ok]))
        if not drawn:
            plt.text("no data", 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        else:
            if log_y:
                rows = self.size.height - 5  # the plot area, less title, x axis and frame
                plt.yticks(*log_ticks(log_lo, log_hi, rows // 2 if rows > 0 else 6))
            if ylim is not None:
                plt.ylim(*ylim)
            if marker is not None and np.isfinite(marker):
                plt.vline(float(marker), "yellow")
        self.drawn = drawn
        self.series_data = data
