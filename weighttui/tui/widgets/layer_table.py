"""The layer table: one keyed row per tensor, grouped by layer, drawn line by line.

A `ScrollView` on Textual's Line API (`render_line(y)` returns a `Strip`), as
toolong does: Textual's `DataTable` renders every cell through Rich and
throws its render cache away on each `update_cell`, which made paging
through 2,000 tensors take ~200 ms a page.

- Rows are keyed (`t:<name>`, `g:<layer>`) and set only when the filter,
  sort, grouping or the set of tensors changes; snapshots update cells in
  place (`update_values`).
- A cell is a tuple of (text, style) pieces; a row's finished line (a
  `Strip` of segments, no Rich rendering) is built the first time it is
  drawn and kept until a cell of that row changes, so scrolling and cursor
  moves only hand out cached lines.
- Only rows on screen are recomputed: a data update marks every row stale
  and fills the visible ones, scrolling fills the rest as they come into
  view, so 2,000 tensors cost what 40 do.
- Line 0 is the column header (kept in place while the rows scroll); the
  first two columns (alert mark, name) stay put when scrolling sideways.

The read API mirrors the parts of DataTable that callers and tests use:
`rows`, `columns`, `get_cell()`, `cursor_row`, `move_cursor()`,
`get_row_index()`, `row_count`, and a `RowSelected` message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from weighttui.analysis.diagnose import Alert
from weighttui.data.run import RunData
from weighttui.log.text import inert
from weighttui.tui.formatting import fmt, fmt_int
from weighttui.tui.widgets.layer_rows import (
    MATRIX_ONLY,
    METRICS,
    GroupRow,
    TensorRow,
    metric_values,
    ratio_band,
    snapshot_values,
)
from weighttui.tui.widgets.sparkline import spark_many

VALUE_WIDTH = 8
BAND_STYLE = {"good": "green", "slow": "cyan", "fast": "bold red", "frozen": "dim", "": "dim"}
# Shown next to an out-of-band ratio, so the meaning survives NO_COLOR.
BAND_MARK = {"good": " ", "slow": "↓", "fast": "↑", "frozen": " ", "": " "}
SHORT_LABEL = {"update ratio": "upd ratio", "grad norm": "grad", "exploding units": "exploding",
               "state NaN/Inf": "state nan", "cos prev upd": "cos prev", "cos upd/grad": "cos grad",
               "stable rank": "srank", "sigma ratio": "σ ratio"}
METRIC_STYLE = {"norm": "bright_blue", "std": "magenta", "grad": "yellow"}
FIXED_COLUMNS = 2  # mark and name stay in place when scrolling sideways
HEADER_LINES = 1

_STYLES: dict[str, Style] = {"": Style.null()}


def header_label(label: str, width: int) -> str:
    """A metric column's header in `width` cells, right-aligned, with a space before it (neighbouring
    headers never run together): the short form where the label does not fit, cut with … if that does not."""
    room = width - 1
    if len(label) > room:
        label = SHORT_LABEL.get(label, label)
    if len(label) > room:
        label = label[: max(1, room - 1)] + "…"
    return label.rjust(width)


def _style(name: str) -> Style:
    """Parsed Rich styles, cached: a row is built from a handful of them."""
    style = _STYLES.get(name)
    if style is None:
        style = _STYLES[name] = Style.parse(name)
    return style


METRIC_KEYS = ("norm", "std", "ratio", "grad")  # shown by default; the instruments' are chosen with `m`
# The metric columns shown when the user has not chosen (key `m` on the overview): fewer on narrow
# terminals, so that each keeps a sparkline wide enough to read a trend (80x24 first).
DEFAULT_METRICS = ((100, ("norm", "ratio")), (140, ("norm", "ratio", "grad")), (10**9, METRIC_KEYS))


def default_metrics(width: int) -> tuple[str, ...]:
    return next(keys for limit, keys in DEFAULT_METRICS if width < limit)


def layout_for(width: int, metrics: tuple[str, ...] | None = None) -> dict:
    """Column widths for a terminal width and the metric columns shown (default: by width).

    The name gets about 40% of the width (24..56 cells); the metric columns share the rest, each a
    gap, a sparkline (4..24 cells), a band mark and a value. Shape and params only from 140 columns.
    """
    shown = tuple(m[0] for m in METRICS if m[0] in (metrics if metrics is not None else default_metrics(width)))
    wide = width >= 140
    gap, value_w = (1, 7) if width < 100 else (2, VALUE_WIDTH)
    room = width - 2 - 2 - (12 + 8 if wide else 0)  # mark, scrollbar, shape and params
    name_w = int(min(56, max(24 if width >= 80 else 14, room * 0.4)))
    per = (room - name_w) // max(1, len(shown))
    spark_w = int(min(24, max(4, per - gap - 1 - value_w)))
    metric_w = gap + spark_w + 1 + value_w  # gap, spark, band mark, value
    name_w = int(min(56, max(14, room - metric_w * len(shown))))
    return {"spark": spark_w, "gap": gap, "value": value_w, "metric": metric_w,
            "name": name_w, "wide": wide, "metrics": shown}


class TableKey(str):
    """A row or column key: compares and hashes as its text, with DataTable's `.value`."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)


@dataclass
class Column:
    key: TableKey
    label: str
    width: int


Pieces = tuple  # ((text, style name), ...): one cell


def _fit(text: str, width: int) -> str:
    """Cut to `width` cells with an ellipsis."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(0, width - 1)) + "…"


class _RowMessage(Message):
    def __init__(self, table: LayerTable, row_key: TableKey, cursor_row: int):
        super().__init__()
        self.table, self.row_key, self.cursor_row = table, row_key, cursor_row

    @property
    def control(self) -> LayerTable:
        return self.table



# The keys of a row-cursor table, shared with the change table's: left/right/home/end stay with
# the app's timeline.
ROW_TABLE_BINDINGS = (
    Binding("enter", "select_cursor", "open", show=False),
    Binding("up,k", "cursor_up", "up", show=False),
    Binding("down,j", "cursor_down", "down", show=False),
    Binding("pageup", "page_up", show=False),
    Binding("pagedown", "page_down", show=False),
    Binding("ctrl+home", "scroll_top", show=False),
    Binding("ctrl+end", "scroll_bottom", show=False),
)

class LayerTable(ScrollView, inherit_bindings=False):
    """The tensors table; left/right/home/end are left to the app's timeline."""

    DEFAULT_CSS = """
    LayerTable {
        background: $surface;
        color: $foreground;
        &:focus { background-tint: $foreground 5%; }
        & > .layer-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .layer-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .layer-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .layer-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    COMPONENT_CLASSES = {"layer-table--header", "layer-table--cursor"}

    BINDINGS = list(ROW_TABLE_BINDINGS)

    class RowSelected(_RowMessage):
        """Enter, or a click on the row under the cursor."""

    class RowHighlighted(_RowMessage):
        """The cursor moved to another row."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entries: list = []  # TensorRow / GroupRow in display order
        self._index: dict[str, int] = {}  # row key -> position in entries
        self._columns: list[Column] = []
        self._lay: dict = {}  # layout_for() of the width drawn for (empty: not laid out yet)
        self.chosen_metrics: tuple[str, ...] | None = None  # the user's metric columns (None: by width)
        self._cells: dict[str, dict[str, Pieces]] = {}
        self._strips: dict[str, Strip] = {}  # row key -> its finished line (see render_lines)
        self._header: Strip | None = None
        self._stale: set[str] = set()  # row keys whose values are out of date
        self._cursor = 0
        self._run = None
        self._at_row = -1
        self._at_snapshot: int | None = None  # the position between the row view's rows (update_values)
        self._alerts: Mapping[str, Sequence[Alert]] = {}
        self._line_styles: tuple | None = None
        self._drawn_for: tuple | None = None  # (width, scroll x, styles) the cached lines were drawn for
        self._changed = False  # a cell changed in the current fill
        self.cells_updated = 0  # counted for tests and the benchmark
        self.strips_built = 0  # likewise: rows drawn from their pieces

    # ------------------------------------------------------- DataTable-like

    @property
    def rows(self) -> dict[TableKey, object]:
        """Row key -> entry, in display order."""
        return {TableKey(e.key): e for e in self.entries}

    @property
    def row_count(self) -> int:
        return len(self.entries)

    @property
    def columns(self) -> dict[TableKey, Column]:
        return {c.key: c for c in self._columns}

    def get_row_index(self, key: str) -> int:
        return self._index[key]

    def get_cell(self, row_key: str, column_key: str) -> Text:
        """The cell as Rich Text (for tests and callers; drawing never makes Text)."""
        if row_key not in self._index:
            raise KeyError(row_key)
        pieces = self._cells.get(row_key, {}).get(column_key, ())
        return Text.assemble(*[(t, s) for t, s in pieces])

    @property
    def cursor_row(self) -> int:
        return self._cursor if self.entries else -1

    @cursor_row.setter
    def cursor_row(self, row: int) -> None:
        self.move_cursor(row=row)

    def move_cursor(self, *, row: int, animate: bool = False, scroll: bool = True) -> None:
        if not self.entries:
            self._cursor = 0
            return
        row = int(min(max(row, 0), len(self.entries) - 1))
        old, top = self._cursor, self.scroll_offset.y
        moved = row != old
        self._cursor = row
        if scroll:
            self._scroll_cursor_into_view()
        if self.scroll_offset.y == top:  # not scrolled: only the two cursor lines change
            self.refresh_line(old + HEADER_LINES)
            self.refresh_line(row + HEADER_LINES)
        if moved:
            self.post_message(self.RowHighlighted(self, TableKey(self.entries[row].key), row))

    def current_key(self) -> str | None:
        if not self.entries or self._cursor >= len(self.entries):
            return None
        return self.entries[self._cursor].key

    def current_entry(self):
        return self.entries[self._cursor] if self.current_key() is not None else None

    # ------------------------------------------------------------ structure

    @property
    def shown_metrics(self) -> tuple[str, ...]:
        """The metric columns laid out now."""
        return tuple(self._lay.get("metrics", ()))

    def set_layout(self, width: int) -> bool:
        """Re-create the columns if the layout for this width (and the chosen metrics) changed; True if it did."""
        layout = layout_for(width, self.chosen_metrics)
        if layout == self._lay:
            return False
        self._lay = layout
        # The cells carry their own leading gap, which buys the name column
        # a dozen characters on an 80-column terminal.
        cols = [Column(TableKey("mark"), "", 2), Column(TableKey("name"), "tensor", layout["name"])]
        if layout["wide"]:
            cols += [Column(TableKey("shape"), "  shape", 12), Column(TableKey("params"), "  params", 8)]
        for key, _kind, _stat, label, _log in METRICS:
            if key not in layout["metrics"]:
                continue
            cols.append(Column(TableKey(key), header_label(label, layout["metric"]), layout["metric"]))
        self._columns = cols
        self._header = None
        self._add_rows(self.current_key())
        return True

    def set_entries(self, entries: list) -> None:
        """Replace the rows (filter/sort/grouping changed), keeping the cursor on the same key."""
        keep = self.current_key()
        self.entries = entries
        self._add_rows(keep)

    def _add_rows(self, keep: str | None = None) -> None:
        self._index = {e.key: i for i, e in enumerate(self.entries)}
        self._strips.clear()
        if not self._lay:
            return
        grouped = bool(self.entries) and isinstance(self.entries[0], GroupRow)
        self._cells = {e.key: self._static_cells(e, grouped) for e in self.entries}
        self._stale = set(self._index)
        width = sum(c.width for c in self._columns)
        self.virtual_size = Size(width, len(self.entries) + HEADER_LINES)
        if keep is not None and keep in self._index:
            self._cursor = self._index[keep]
        elif keep is None and self._cursor == 0:
            # The first rows: start on a tensor, so the first enter opens it instead of folding a group.
            self._cursor = next((i for i, e in enumerate(self.entries) if isinstance(e, TensorRow)), 0)
        self._cursor = min(self._cursor, max(0, len(self.entries) - 1))
        self._scroll_cursor_into_view()
        self._fill_visible()
        self.refresh()

    def _static_cells(self, entry, grouped: bool) -> dict[str, Pieces]:
        lay = self._lay
        if isinstance(entry, GroupRow):
            arrow = "▸" if entry.collapsed else "▾"
            name = _fit(f"{arrow} {inert(entry.layer) or '(no layer)'} ({len(entry.members)})", lay["name"])
            cells = {"name": ((name, "bold"),)}
            if lay["wide"]:
                cells["params"] = (("  " + fmt_int(entry.size), "bold"),)
            return cells
        cells = {"name": self._name_cell(entry, grouped, nonfinite=False)}
        if lay["wide"]:
            shape = "×".join(str(d) for d in entry.shape) or "scalar"
            cells["shape"] = ((_fit("  " + shape, 12), ""),)
            cells["params"] = (("  " + fmt_int(entry.size), ""),)
        return cells

    def _name_cell(self, entry: TensorRow, grouped: bool, *, nonfinite: bool) -> Pieces:
        label = entry.name
        if grouped and entry.layer and label.startswith(entry.layer) and len(label) > len(entry.layer) + 1:
            label = "  " + label[len(entry.layer) + 1:]
        label = inert(label)
        style = "bold red" if nonfinite else ("" if entry.trainable else "dim")
        width = self._lay["name"]
        if cell_len(label) > width:  # keep the end of a long name: that is where layers differ
            label = "…" + label[-(width - 1):]
        return ((label, style),)

    # --------------------------------------------------------------- values

    def update_values(self, data: RunData, row: int, alerts_by_tensor: Mapping[str, Sequence[Alert]],
                      snapshot: int | None = None) -> None:
        """New data or a new timeline position: refresh visible rows, mark the rest stale.
        `snapshot`: the position is that snapshot (index among all the run's), after `row`, which
        the row view lacks: the values shown are read from the store there (RunView.snapshot)."""
        self._run, self._at_row, self._alerts = data, row, alerts_by_tensor
        self._at_snapshot = snapshot
        self._stale = set(self._index)
        self._fill_visible()

    def visible_range(self) -> tuple[int, int]:
        top = int(self.scroll_y)
        return max(0, top - 2), min(len(self.entries), top + self.size.height + 2)

    def _fill_visible(self) -> None:
        if self._run is None or not self._stale or not self._lay:
            return
        # Rows can be re-added (new tensors after a reload) before the next update_values.
        self._at_row = min(self._at_row, self._run.n - 1)
        lo, hi = self.visible_range()
        todo = [e for e in self.entries[lo:hi] if e.key in self._stale]
        if not todo:
            return
        grouped = isinstance(self.entries[0], GroupRow)
        tensors = [e for e in todo if isinstance(e, TensorRow)]
        cols = [t.col for t in tensors]
        at = self._at_snapshot
        exact = snapshot_values(self._run, cols, at) if at is not None and cols else None
        values = metric_values(self._run, cols, self._at_row, exact)
        if exact is not None:  # NaN/Inf at that snapshot; a tensor it did not cover: as at the row
            nonfinite, nans = self._nonfinite(cols)
            here = exact["present"]
            nan = np.nan_to_num(exact["nan"]) > 0
            nonfinite = np.where(here, nan | (np.nan_to_num(exact["inf"]) > 0), nonfinite)
            nans = np.where(here, nan, nans)
        else:
            nonfinite, nans = self._nonfinite(cols)
        self._changed = False
        width = self._lay["spark"]
        lines = {key: spark_many(values[key][1], width, log=log) for key, _k, _s, _l, log in METRICS
                 if key in self._lay["metrics"]}
        for i, entry in enumerate(tensors):
            self._update_tensor_row(entry, {k: (v[0][i], lines[k][i]) for k, v in values.items() if k in lines},
                                    bool(nonfinite[i]), grouped, bool(nans[i]))
        for entry in todo:
            if isinstance(entry, GroupRow):
                alerts = [a for m in entry.members for a in self._alerts.get(m.name, ())]
                self._set(entry.key, "mark", self._mark(alerts, False))
            self._stale.discard(entry.key)
        if self._changed:  # repaint only when a cell on screen shows something new
            self.refresh()

    def _nonfinite(self, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Whether each tensor had NaN/Inf values at the timeline row, and whether NaN."""
        data, row = self._run, self._at_row
        if data is None or row < 0 or not cols:
            return np.zeros(len(cols), dtype=bool), np.zeros(len(cols), dtype=bool)
        idx = np.asarray(cols)
        nan = np.nan_to_num(data.stat_matrix("weights", "nan")[row, idx]) > 0
        inf = np.nan_to_num(data.stat_matrix("weights", "inf")[row, idx]) > 0
        return nan | inf, nan

    def _set(self, key: str, column: str, pieces: Pieces) -> None:
        cells = self._cells[key]
        self.cells_updated += 1
        if cells.get(column) != pieces:
            cells[column] = pieces
            self._strips.pop(key, None)
            self._changed = True

    def _update_tensor_row(self, entry: TensorRow, vals: dict, nonfinite: bool, grouped: bool,
                           has_nan: bool = False) -> None:
        gap, value_w = self._lay["gap"], self._lay["value"]
        pad = " " * gap
        cell: Pieces
        for key, _kind, _stat, _label, _log in METRICS:
            if key not in self._lay["metrics"]:
                continue
            now, line = vals[key]
            # NaN is "no value" (–: a first update, no gradient), but beside weights holding NaN/Inf it is
            # what they made of the rest (the gradient, update and moments of a diverged tensor): nan
            lost = nonfinite and np.isnan(now) and not (key in MATRIX_ONLY and len(entry.shape) < 2)
            if key == "ratio":
                band = ratio_band(now, trainable=entry.trainable)
                style = BAND_STYLE[band]
                shown = "frozen".rjust(value_w - 1) if band == "frozen" and not np.isnan(now) \
                    else fmt(None if np.isnan(now) else now, value_w - 1)  # NaN: not covered (first delta)
                cell = ((pad, ""), (line, style), (BAND_MARK[band], style),
                        (" " + ("nan".rjust(value_w - 1) if lost else shown), "bold red" if lost else
                         (style if band != "" else "")))
            elif nonfinite and key in ("norm", "std"):
                # statistics are over the finite elements: a tensor holding NaN/Inf is shown as such
                shown = "nan" if has_nan else "inf"
                cell = ((pad, ""), (line, METRIC_STYLE[key]), (" " + shown.rjust(value_w), "bold red"))
            elif lost:
                cell = ((pad, ""), (line, METRIC_STYLE.get(key, "cyan")), (" " + "nan".rjust(value_w), "bold red"))
            else:
                cell = ((pad, ""), (line, METRIC_STYLE.get(key, "cyan")),
                        (" " + fmt(None if np.isnan(now) else now, value_w), ""))
            self._set(entry.key, key, cell)
        self._set(entry.key, "mark", self._mark(self._alerts.get(entry.name), nonfinite))
        self._set(entry.key, "name", self._name_cell(entry, grouped, nonfinite=nonfinite))

    @staticmethod
    def _mark(alerts, nonfinite: bool) -> Pieces:
        if nonfinite or (alerts and any(a.severity == "error" for a in alerts)):
            return ((" ✖", "bold red"),)
        if alerts:
            return ((" ▲", "bold yellow"),)
        return ((" ", ""),)

    # -------------------------------------------------------------- drawing

    def _line_of(self, cells: dict[str, Pieces], base: Style) -> Strip:
        """One row as a Strip of the full table width, `base` under every cell's own style."""
        segments = []
        for col in self._columns:
            used = 0
            for text, style in cells.get(col.key, ()):
                room = col.width - used
                if room <= 0:
                    break
                width = cell_len(text)
                if width > room:
                    text, width = set_cell_size(text, room), room
                if text:
                    segments.append(Segment(text, base + _style(style)))
                    used += width
            if used < col.width:
                segments.append(Segment(" " * (col.width - used), base))
        return Strip(segments, sum(c.width for c in self._columns))

    def _fit_width(self, strip: Strip, base: Style) -> Strip:
        """The visible part: fixed columns, then the rest scrolled sideways, padded to the widget."""
        width = self.size.width
        scroll_x = self.scroll_offset.x
        if scroll_x:
            fixed = sum(c.width for c in self._columns[:FIXED_COLUMNS])
            strip = Strip.join([strip.crop(0, fixed), strip.crop(fixed + scroll_x, fixed + scroll_x + width)])
        if strip.cell_length != width:
            strip = strip.crop_extend(0, width, base)
        return strip

    def _row_strip(self, index: int, base: Style) -> Strip:
        """A row's finished line, built once and kept until a cell, the width or the style changes."""
        key = self.entries[index].key
        strip = self._strips.get(key)
        if strip is None:
            strip = self._fit_width(self._line_of(self._cells.get(key, {}), base), base)
            self._strips[key] = strip
            self.strips_built += 1
        return strip

    def render_lines(self, crop):
        # Component styles once per paint, not once per line.
        base = self.rich_style
        cursor = self.get_component_rich_style("layer-table--cursor", partial=True)
        header = base + self.get_component_rich_style("layer-table--header", partial=True)
        # Cached lines are only valid for one width, sideways scroll and widget style.
        drawn_for = (self.size.width, self.scroll_offset.x, base, header)
        if drawn_for != self._drawn_for:
            self._drawn_for = drawn_for
            self._strips.clear()
            self._header = None
        self._line_styles = (base, header, cursor)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        if self._line_styles is None:  # render_line called on its own (tests)
            self.render_lines(Region(0, y, self.size.width, 1))
        assert self._line_styles is not None  # render_lines set them
        base, header, cursor = self._line_styles
        if y < HEADER_LINES:
            if self._header is None:
                line = self._line_of({c.key: ((c.label, ""),) for c in self._columns}, header)
                self._header = self._fit_width(line, header)
            return self._header
        index = self.scroll_offset.y + y - HEADER_LINES
        if index >= len(self.entries):
            return Strip.blank(self.size.width, base)
        strip = self._row_strip(index, base)
        if index == self._cursor:
            # The cursor's colours win over the cells' (DataTable's "css" priority).
            return Strip(Segment.apply_style(strip, None, cursor), strip.cell_length)
        return strip

    # ------------------------------------------------------- keys and mouse

    def _scroll_cursor_into_view(self) -> None:
        if not self.size.height:
            return  # not laid out yet: nothing is on screen to scroll
        rows = max(1, self.size.height - HEADER_LINES - (1 if self.show_horizontal_scrollbar else 0))
        top = int(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, force=True, immediate=True)
        elif self._cursor >= top + rows:
            self.scroll_to(y=self._cursor - rows + 1, animate=False, force=True, immediate=True)

    def _page(self) -> int:
        return max(1, self.size.height - HEADER_LINES - 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self._cursor + 1)

    def action_page_down(self) -> None:
        page = self._page()
        self.scroll_to(y=self.scroll_y + page, animate=False, force=True, immediate=True)
        self.move_cursor(row=self._cursor + page)

    def action_page_up(self) -> None:
        page = self._page()
        self.scroll_to(y=max(0, self.scroll_y - page), animate=False, force=True, immediate=True)
        self.move_cursor(row=self._cursor - page)

    def action_scroll_top(self) -> None:
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self.move_cursor(row=len(self.entries) - 1)

    def action_select_cursor(self) -> None:
        key = self.current_key()
        if key is not None:
            self.post_message(self.RowSelected(self, TableKey(key), self._cursor))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < HEADER_LINES:
            return
        index = int(self.scroll_y) + offset.y - HEADER_LINES
        if index >= len(self.entries):
            return
        event.stop()
        if index == self._cursor:  # a click on the cursor row opens it, as DataTable did
            self.action_select_cursor()
        else:
            self.move_cursor(row=index)

    # ------------------------------------------------------------- scrolling

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if math.floor(old_value) != math.floor(new_value):
            self._fill_visible()

    def on_resize(self) -> None:
        self._fill_visible()
