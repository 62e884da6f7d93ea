"""Widgets that draw histograms with block characters: over time, and at one step.

`HeatmapView`: x is the step, y the value, colour the density; each cell is
a half block ("▀": foreground = upper half, background = lower half) so the
value axis gets twice the terminal's vertical resolution. The numbers come
from `weighttui.heatmap` (pure numpy); this module only paints them.

`HistogramBars`: one histogram as vertical bars in eighth blocks, with the
mean, mean ± std, min and max marked under it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from weighttui.analysis import heatmap
from weighttui.tui.formatting import fmt_value
from weighttui.tui.state import SeekStep

# viridis, sampled: dark blue (sparse) to yellow (dense); any non-zero density is visible
_ANCHORS = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37),
], dtype=np.float64)
LEVELS = 32


def _palette(levels: int = LEVELS) -> list[tuple[int, int, int]]:
    pos = np.linspace(0, len(_ANCHORS) - 1, levels)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    frac = (pos - lo)[:, None]
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[hi] * frac
    return [(int(round(r)), int(round(g)), int(round(b))) for r, g, b in rgb]


PALETTE = _palette()
COLORS = ["#{:02x}{:02x}{:02x}".format(*c) for c in PALETTE]


def level(density: np.ndarray) -> np.ndarray:
    """Palette index per cell: -1 for nothing, 0..LEVELS-1 for any density > 0."""
    d = np.nan_to_num(np.asarray(density, dtype=np.float64), nan=0.0)
    out = np.ceil(np.clip(d, 0, 1) * (LEVELS - 1)).astype(np.int64)
    out[d <= 0] = -1
    return out


class LinesWidget(Widget):
    """A widget drawn as whole lines by `_build()`, rebuilt only when its size or source changes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._source = None
        self._lines: list[Strip] | None = None
        self._built_for = None

    def _build(self) -> list[Strip]:
        raise NotImplementedError

    def render_line(self, y: int) -> Strip:
        key = (self.size, id(self._source))
        if self._lines is None or self._built_for != key:
            self._lines = self._build()
            self._built_for = key
        if 0 <= y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width)


class HeatmapView(LinesWidget):
    """Histograms over time; call `show()` with a tensor's histograms, it fits them to its size."""

    DEFAULT_CSS = """
    HeatmapView { height: 1fr; width: 1fr; }
    """
    GUTTER = 10  # value labels on the left

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shown_rows = slice(0, 0)  # which snapshots the last drawing covered
        self.vrange: tuple[float, float] | None = None
        self.position_column: int | None = None
        self.message = "no histograms"

    def show(self, steps, lo, hi, counts, *, position_step=None, zoom: str = "run", range_mode: str = "run",
             log: bool = False, message: str = "no histograms") -> None:
        """Histograms (steps [N], lo [N], hi [N], counts [N, B]) up to `position_step` (None: all).

        zoom "run": every snapshot, squeezed to the width, the position
        marked under the axis; "recent": the last snapshots up to the
        position, one per column. range_mode
        "run": the value axis spans the whole run; "window": the snapshots shown.
        """
        self._source = (np.asarray(steps), np.asarray(lo), np.asarray(hi), np.asarray(counts),
                        position_step, zoom, range_mode, bool(log))
        self.message = message
        self._lines = None
        self.refresh()

    def _layout(self):
        width, height = self.size.width, self.size.height
        return max(1, width - self.GUTTER), max(1, height - 1)

    def _build(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        plot_w, rows = self._layout()
        blank = Strip([Segment(" " * width)], width)
        src = self._source
        if src is None or src[0].size == 0 or height < 2 or width <= self.GUTTER:
            return [Strip([Segment(self.message.center(width)[:width], Style(dim=True))], width)] + \
                [blank] * (height - 1)
        steps, lo, hi, counts, pos, zoom, range_mode, log = src
        sel = heatmap.window(steps, pos, plot_w, zoom)
        self.shown_rows = sel
        if sel.stop <= sel.start:
            return [Strip([Segment("no snapshot before this step".center(width)[:width], Style(dim=True))],
                          width)] + [blank] * (height - 1)
        vrange = heatmap.value_range(lo if range_mode == "run" else lo[sel], hi if range_mode == "run" else hi[sel])
        self.vrange = vrange
        hm = heatmap.build(steps[sel], lo[sel], hi[sel], counts[sel], columns=plot_w, bins=2 * rows,
                           vrange=vrange, log=log)
        if hm is None:
            return [Strip([Segment(self.message.center(width)[:width], Style(dim=True))], width)] + \
                [blank] * (height - 1)
        lv = level(hm.density)  # [2*rows, plot_w], row 0 = lowest value
        lines = []
        label_rows = {0: hm.vmax, rows // 2: (hm.vmin + hm.vmax) / 2, rows - 1: hm.vmin}
        for y in range(rows):
            top = lv[2 * (rows - 1 - y) + 1]
            bottom = lv[2 * (rows - 1 - y)]
            if y in label_rows:
                label = fmt_value(label_rows[y], self.GUTTER - 2) + " ┤"
            else:
                label = " " * (self.GUTTER - 1) + "│"
            segs = [Segment(label, Style(dim=True))]
            segs.extend(half_block_cells(top, bottom))
            lines.append(Strip(segs, width))
        shown = steps[sel]
        first, last = int(shown[0]), int(shown[-1])
        col = None
        # the marker only where the position lies in the steps drawn: outside (a zoom panned away, or
        # snapshots past the last histogram, all NaN) a marker pinned to the edge would name a wrong step
        if pos is not None and shown.size and shown[0] <= pos <= shown[-1]:
            s0, s1 = float(shown[0]), float(shown[-1])
            col = 0 if s1 <= s0 else int((pos - s0) / (s1 - s0) * plot_w)
            col = min(col, plot_w - 1)
        self.position_column = col
        lines.append(step_axis(first, last, col, plot_w, self.GUTTER, width))
        return lines

    def step_at(self, x: int) -> int | None:
        """The step drawn in screen column x of this widget (None outside the plot)."""
        src = self._source
        col = x - self.GUTTER
        plot_w, _rows = self._layout()
        if src is None or not 0 <= col < plot_w:
            return None
        shown = src[0][self.shown_rows]
        if not shown.size:
            return None
        s0, s1 = float(shown[0]), float(shown[-1])
        target = s0 + (s1 - s0) * (col + 0.5) / plot_w
        i = int(np.searchsorted(shown, target, side="right")) - 1  # the snapshot drawn there
        return int(shown[max(0, i)])

    def on_click(self, event) -> None:
        """Clicking the heatmap asks to move the timeline to the snapshot under the mouse."""
        step = self.step_at(event.x)
        if step is not None:
            self.post_message(SeekStep(step))


def step_axis(first: int, last: int, col: int | None, plot_w: int, gutter: int, width: int) -> Strip:
    """The line under a plot over steps: `step first` and `step last` at its ends, ▲ at column
    `col` (the timeline position), the labels kept clear of the marker."""
    axis = [" "] * plot_w
    left, right = f"step {first}", f"step {last}"
    l_at, r_at = 0, plot_w - len(right)
    if col is not None and col < len(left):  # keep labels clear of the marker
        l_at = col + 1
    if col is not None and col >= r_at:
        r_at = col - len(right)
    for at, label in ((l_at, left), (r_at, right)):
        if at >= 0 and at + len(label) <= plot_w and all(c == " " for c in axis[at:at + len(label)]):
            axis[at:at + len(label)] = list(label)
    if col is not None:
        axis[col] = "▲"
    line = list(" " * gutter) + axis
    line = (line + [" "] * width)[:width]
    return Strip([Segment("".join(line), Style(dim=True))], width)


def heat_color(code: int) -> str | None:
    """The heatmap's colour of a density level (None: an empty half cell)."""
    return COLORS[code] if code >= 0 else None


_style_cache: dict[tuple[Callable[[int], str | None], int, int], Style] = {}


def _style(color_of: Callable[[int], str | None], top: int, bottom: int) -> Style:
    key = (color_of, top, bottom)
    style = _style_cache.get(key)
    if style is None:
        style = Style(color=color_of(top) if top >= 0 else None, bgcolor=color_of(bottom) if bottom >= 0 else None)
        _style_cache[key] = style
    return style


def half_block_cells(top: np.ndarray, bottom: np.ndarray,
                     color_of: Callable[[int], str | None] = heat_color) -> list[Segment]:
    """Half-block cells ("▀": foreground the upper code, background the lower; a negative code
    is empty), runs of equal cells merged into one segment. Shared by every heat strip."""
    segs = []
    prev, run = None, 0
    for t, b in zip(top.tolist(), bottom.tolist(), strict=True):
        cell = (t, b)
        if cell == prev:
            run += 1
            continue
        if prev is not None:
            segs.append(_segment(prev, run, color_of))
        prev, run = cell, 1
    if prev is not None:
        segs.append(_segment(prev, run, color_of))
    return segs


def _segment(cell: tuple[int, int], run: int, color_of: Callable[[int], str | None]) -> Segment:
    t, b = cell
    if t < 0 and b < 0:
        return Segment(" " * run)
    if t < 0:  # only the lower half: draw it as the foreground of a lower half block
        return Segment("▄" * run, _style(color_of, b, -1))
    return Segment("▀" * run, _style(color_of, t, b))


EIGHTHS = " ▁▂▃▄▅▆▇█"


class HistogramBars(LinesWidget):
    """One histogram as bars, with its statistics marked underneath."""

    DEFAULT_CSS = """
    HistogramBars { height: 1fr; width: 1fr; }
    """

    def show(self, lo: float, hi: float, counts, *, mean=None, std=None, title: str = "", log: bool = False,
             note: str = "") -> None:
        self._source = (lo, hi, None if counts is None else np.asarray(counts), mean, std, title, log, note)
        self._lines = None
        self.refresh()

    def _build(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        blank = Strip.blank(width)
        src = self._source
        if src is None or width < 8 or height < 4:
            return [blank] * height
        lo, hi, counts, mean, std, title, log, note = src
        lines = [Strip([Segment(title[:width].ljust(width), Style(bold=True))], width)]
        if counts is None or not counts.sum() or not (np.isfinite(lo) and np.isfinite(hi)):
            lines.append(Strip([Segment((note or "no histogram here")[:width].ljust(width), Style(dim=True))], width))
            return lines + [blank] * (height - 2)
        bar_rows = height - 3
        if hi > lo:
            values = heatmap.rebin(np.array([lo]), np.array([hi]), counts[None], heatmap.bin_edges(lo, hi, width))[0]
        else:
            values = np.zeros(width)
            values[width // 2] = counts.sum()
        if log:
            values = np.log1p(values)
        peak = values.max() or 1.0
        eighths = np.round(values / peak * bar_rows * 8).astype(int)
        eighths[(values > 0) & (eighths == 0)] = 1  # a few elements still show
        style = Style(color=COLORS[LEVELS * 2 // 3])
        for y in range(bar_rows):
            level_from_bottom = bar_rows - 1 - y
            fill = np.clip(eighths - level_from_bottom * 8, 0, 8)
            text = "".join(EIGHTHS[f] for f in fill.tolist())
            lines.append(Strip([Segment(text, style)], width))
        lines.append(Strip([Segment(_marks(lo, hi, width, mean, std), Style(color="yellow"))], width))
        mu, sigma = (f"μ {fmt_value(mean, 0).strip()}", f"σ {fmt_value(std, 0).strip()}") if mean is not None \
            else ("", "")
        label = axis_label(width, fmt_value(lo, 0).strip(), fmt_value(hi, 0).strip(),
                           (f"{mu}  {sigma}", f"{mu} {sigma}", mu) if mu else ())
        lines.append(Strip([Segment(label.ljust(width), Style(dim=True))], width))
        return lines


def axis_label(width: int, left: str, right: str, middles: tuple[str, ...] = ()) -> str:
    """`left` at the start, `right` at the end and the first of `middles` that fits between them,
    with at least one space on each side: labels never run into each other. What does not fit is
    left out whole (the middle first, then the right end, then the left), never cut."""
    room = width - len(left) - len(right)
    for mid in middles:
        if len(mid) + 2 <= room:
            return left + mid.center(room) + right
    if room >= 1:
        return left + " " * room + right
    return left if len(left) <= width else ""  # a number cut short would read as another number


def _marks(lo: float, hi: float, width: int, mean, std) -> str:
    """'[' at mean - std, '◆' at the mean, ']' at mean + std, '╵' at min and max."""
    line = [" "] * width

    def col(v):
        if v is None or not np.isfinite(v) or hi <= lo:
            return None
        pos = (v / 2 - lo / 2) / (hi / 2 - lo / 2) * width  # halves: no overflow near the float limits
        if not np.isfinite(pos):
            return None
        c = int(pos)
        return c if 0 <= c < width else (width - 1 if c == width else None)

    line[0] = "╵"
    line[-1] = "╵"
    if mean is not None and std is not None and np.isfinite(std):
        a, b = col(mean - std), col(mean + std)
        for c in range(a if a is not None else 0, (b if b is not None else width - 1) + 1):
            if line[c] == " ":
                line[c] = "─"
        if a is not None:
            line[a] = "["
        if b is not None:
            line[b] = "]"
    m = col(mean)
    if m is not None:
        line[m] = "◆"
    return "".join(line)
