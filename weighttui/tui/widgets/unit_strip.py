"""Per-unit norms over time (docs/instruments.md, "Per-unit health") as a strip of coloured cells.

x is the snapshot (as in the histogram heatmap: columns proportional to the step),
y the unit (row 0 of W at the top), each terminal cell a half block, so a line holds
two units; a layer with more units than the strip has half rows shows several in a
half cell, one with fewer shows each over several. Colour: the unit's L2 norm on a
log scale (viridis, dark = small);
marked on top of it: exploding units (weight norm above EXPLODING_FACTOR times the
snapshot's median unit norm) in red, units whose gradient is exactly zero in grey,
NaN/Inf norms in magenta. Units sharing a half cell show the worst of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from weighttui.analysis.heatmap import column_of
from weighttui.log.schema import EXPLODING_FACTOR
from weighttui.tui.state import RedrawRequest, SeekStep
from weighttui.tui.widgets.heatmap_view import COLORS, LEVELS, LinesWidget, half_block_cells, step_axis

DEAD, EXPLODING, NONFINITE = LEVELS, LEVELS + 1, LEVELS + 2  # marks after the palette's levels
MARK_COLORS = {DEAD: "#9e9e9e", EXPLODING: "#ff3030", NONFINITE: "#ff40ff"}
LEGEND = ((DEAD, "gradient 0"), (EXPLODING, f"> {EXPLODING_FACTOR:g}x median"), (NONFINITE, "nan/inf"))


def exploding(weights: np.ndarray) -> np.ndarray:
    """[N, U] booleans: weight norm above EXPLODING_FACTOR times its snapshot's median unit norm
    (the rule of the `exploding_units` column, log/schema.py)."""
    w = np.asarray(weights, dtype=np.float64)
    out = np.zeros(w.shape, dtype=bool)
    for i in range(w.shape[0]):
        row = w[i]
        ok = np.isfinite(row)
        if not ok.any():
            continue
        med = float(np.median(row[ok]))
        if med > 0:
            out[i] = ok & (row > EXPLODING_FACTOR * med)
    return out


def nonfinite(norms: np.ndarray, *, gradient: bool = True) -> np.ndarray:
    """[N, U] booleans: a NaN or Inf norm. Of gradients, a snapshot whose norms are all NaN has none
    (no gradient then, docs/FORMAT.md): only a NaN among finite ones counts. Weights always have
    norms: all NaN is a tensor gone NaN (the usual divergence), drawn as such."""
    a = np.asarray(norms, dtype=np.float64)
    if not gradient:
        return ~np.isfinite(a)
    missing = np.isnan(a).all(axis=1, keepdims=True)
    return np.isinf(a) | (np.isnan(a) & ~missing)


@dataclass
class StripCells:
    """What the strip draws: [half rows, columns] codes (-1 nothing, 0..LEVELS-1 palette, or a mark)."""

    codes: np.ndarray  # [half rows used, columns], row 0 the first unit
    col_steps: np.ndarray  # [columns] the step drawn in each column (-1: none)
    first_unit: np.ndarray  # [half rows used] the first unit each half row draws
    group: int  # at most this many units in a half row
    vmin: float  # the norms the palette spans
    vmax: float


def cells(steps, shown, weights, grads, *, columns: int, half_rows: int) -> StripCells | None:
    """The strip's cells: `shown` [N, U] norms coloured (log scale), marks from `weights` (exploding)
    and `grads` (exactly zero; NaN = no gradient) [N, U]; None when there is nothing to draw."""
    steps = np.asarray(steps)
    shown = np.asarray(shown, dtype=np.float64)
    if steps.size == 0 or shown.ndim != 2 or shown.shape[1] == 0 or columns < 1 or half_rows < 1:
        return None
    n, units = shown.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        logn = np.log10(np.where(shown > 0, shown, np.nan))
    finite_pos = np.isfinite(logn)
    vmin = float(logn[finite_pos].min()) if finite_pos.any() else 0.0
    vmax = float(logn[finite_pos].max()) if finite_pos.any() else 0.0
    span = vmax - vmin
    lv = np.where(finite_pos, np.round((logn - vmin) / span * (LEVELS - 1)) if span > 0 else LEVELS // 2, -1)
    unit = np.where(shown == 0, 0, lv).astype(np.int64)  # a norm of exactly 0: the darkest colour
    # the marks outrank the colours, and each other in this order (a max over a group keeps the worst)
    if grads is not None and np.asarray(grads).shape == shown.shape:
        unit = np.where(np.asarray(grads) == 0, DEAD, unit)
    w = np.asarray(weights) if weights is not None and np.asarray(weights).shape == shown.shape else None
    if w is not None:
        unit = np.where(exploding(w), EXPLODING, unit)
    bad = nonfinite(shown) if w is None else nonfinite(shown) | nonfinite(w, gradient=False)
    unit = np.where(bad, NONFINITE, unit)
    # half row h draws units [h*U//H, (h+1)*U//H): all of them when there are more units than half
    # rows, else each unit over several half rows (reduceat repeats a unit for a repeated start)
    rows_used = half_rows if units >= half_rows else (half_rows // units) * units
    starts = np.arange(rows_used) * units // rows_used
    code = np.maximum.reduceat(unit, starts, axis=1)  # [N, rows_used]
    cols = column_of(steps, columns)
    grid = np.full((columns, rows_used), -1, dtype=np.int64)
    col_steps = np.full(columns, -1, dtype=np.int64)
    grid[cols] = code  # later snapshots in a column win
    col_steps[cols] = steps
    hit = np.zeros(columns, dtype=bool)
    hit[cols] = True
    src = np.maximum.accumulate(np.where(hit, np.arange(columns), 0))  # empty columns repeat the left
    return StripCells(grid[src].T.copy(), col_steps[src], starts, -(-units // rows_used), 10 ** vmin, 10 ** vmax)


class UnitStrip(LinesWidget):
    """Per-unit norms over time; `show()` them, it fits them to its size."""

    DEFAULT_CSS = """
    UnitStrip { height: 1fr; width: 1fr; }
    """
    GUTTER = 10

    def __init__(self, **kw):
        super().__init__(**kw)
        self.title = ""
        self.summary = ""
        self.message = "no per-unit norms"
        self.drawn: StripCells | None = None

    def show(self, steps, shown, weights=None, grads=None, *, position_step=None, title: str = "",
             summary: str = "", message: str = "no per-unit norms") -> None:
        """steps [N]; shown [N, U] the norms to colour; weights / grads [N, U] for the marks;
        `title` and `summary` the two lines above the strip."""
        self._source = (np.asarray(steps), np.asarray(shown), weights, grads, position_step)
        self.title = title
        self.summary = summary
        self.message = message
        self._lines = None
        self.refresh()

    def _layout(self) -> tuple[int, int]:
        return max(1, self.size.width - self.GUTTER), max(1, self.size.height - 4)

    def _build(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        blank = Strip.blank(width)
        head = [Strip([Segment(text[:width].ljust(width), style)], width)
                for text, style in ((self.title, Style(bold=True)), (self.summary, Style()))]
        src = self._source
        plot_w, rows = self._layout()
        got = None
        if src is not None and height >= 5 and width > self.GUTTER:
            steps, shown, weights, grads, pos = src
            got = cells(steps, shown, weights, grads, columns=plot_w, half_rows=2 * rows)
        self.drawn = got
        if got is None:
            note = Strip([Segment(self.message[:width].ljust(width), Style(dim=True))], width)
            return (head[:1] + [note] + [blank] * height)[:height]
        units = src[1].shape[1]
        codes = got.codes
        lines = list(head)
        used = -(-codes.shape[0] // 2)
        for y in range(rows):
            top = codes[2 * y] if 2 * y < codes.shape[0] else np.full(plot_w, -1)
            bottom = codes[2 * y + 1] if 2 * y + 1 < codes.shape[0] else np.full(plot_w, -1)
            first = int(got.first_unit[min(2 * y, got.first_unit.size - 1)])  # the first unit on this line
            label = ""
            if y == 0:
                label = "unit 0"
            elif y == used - 1:
                label = str(units - 1)
            elif y == used // 2 and used > 4:
                label = str(first)
            segs = [Segment(label[:self.GUTTER - 2].rjust(self.GUTTER - 2) + " │", Style(dim=True))]
            segs.extend(half_block_cells(top, bottom, _color))
            lines.append(Strip(segs, width))
        shown_steps = got.col_steps[got.col_steps >= 0]
        first_step, last_step = int(shown_steps[0]), int(shown_steps[-1])
        col = None
        pos = src[4]
        if pos is not None and last_step > first_step:
            col = int(np.clip((pos - first_step) / (last_step - first_step) * plot_w, 0, plot_w - 1))
        elif pos is not None:
            col = 0
        lines.append(step_axis(first_step, last_step, col, plot_w, self.GUTTER, width))
        legend = [Segment(f"norm {got.vmin:.3g}", Style(dim=True)), Segment(" ")]
        legend += [Segment("█", Style(color=COLORS[k])) for k in range(0, LEVELS, 4)]
        legend.append(Segment(f" {got.vmax:.3g}  ", Style(dim=True)))
        if got.group > 1:
            legend.append(Segment(f"≤{got.group} units a half cell  ", Style(dim=True)))
        for mark, what in LEGEND:
            legend += [Segment("█", Style(color=MARK_COLORS[mark])), Segment(f" {what}  ", Style(dim=True))]
        lines.append(Strip(legend, width).crop(0, width).extend_cell_length(width))
        return (lines + [blank] * height)[:height]

    def on_resize(self) -> None:
        # the screen picks how many snapshots to read from the strip's width
        self.post_message(RedrawRequest())

    def step_at(self, x: int) -> int | None:
        """The step drawn in screen column x (None outside the strip)."""
        col = x - self.GUTTER
        if self.drawn is None or not 0 <= col < self.drawn.col_steps.size:
            return None
        step = int(self.drawn.col_steps[col])
        return step if step >= 0 else None

    def on_click(self, event) -> None:
        step = self.step_at(event.x)
        if step is not None:
            self.post_message(SeekStep(step))


def _color(code: int) -> str | None:
    if code < 0:
        return None
    return COLORS[code] if code < LEVELS else MARK_COLORS[code]
