"""The layer table: one keyed row per tensor, grouped by layer.

Rows are added once (and again only when the filter, sort, grouping or the
set of tensors changes); snapshots update cells in place with
`update_cell(row_key, column_key)`. Only rows on screen are recomputed: a
data update marks every row stale and fills the visible ones, scrolling fills
the rest as they come into view, so 2,000 tensors cost what 40 do.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from .layer_rows import METRICS, GroupRow, TensorRow, metric_values, ratio_band
from .sparkline import fmt, fmt_int, spark

VALUE_WIDTH = 8
BAND_STYLE = {"good": "green", "slow": "cyan", "fast": "bold red", "": "dim"}
# Shown next to an out-of-band ratio, so the meaning survives NO_COLOR.
BAND_MARK = {"good": " ", "slow": "↓", "fast": "↑", "": " "}
SHORT_LABEL = {"update ratio": "upd ratio", "grad norm": "grad"}
METRIC_STYLE = {"norm": "bright_blue", "std": "magenta", "grad": "yellow"}


def layout_for(width: int) -> dict:
    """Column widths for a terminal width: narrow terminals drop shape/params and shorten sparklines."""
    wide = width >= 140
    if width < 100:
        spark_w, gap, value_w = 3, 1, 7
    else:
        spark_w, gap, value_w = (6 if width < 140 else 10 if width < 170 else 14), 2, VALUE_WIDTH
    metric_w = gap + spark_w + 1 + value_w  # gap, spark, band mark, value
    fixed = 2 + 4 * metric_w + (12 + 8 if wide else 0)
    name_w = width - fixed - 2  # 2: scrollbar
    return {"spark": spark_w, "gap": gap, "value": value_w, "metric": metric_w,
            "name": int(min(56, max(14, name_w))), "wide": wide}


class LayerTable(DataTable, inherit_bindings=False):
    """DataTable of tensors; left/right/home/end are left to the app's timeline."""

    BINDINGS = [
        Binding("enter", "select_cursor", "open", show=False),
        Binding("up,k", "cursor_up", "up", show=False),
        Binding("down,j", "cursor_down", "down", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
        Binding("ctrl+home", "scroll_top", show=False),
        Binding("ctrl+end", "scroll_bottom", show=False),
    ]

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=False, fixed_columns=2, cell_padding=0, **kwargs)
        self.entries: list = []  # TensorRow / GroupRow in display order
        self._lay: dict | None = None
        self._stale: set[str] = set()  # row keys whose cells are out of date
        self._run = None
        self._at_row = -1
        self._alerts: dict = {}
        self.cells_updated = 0  # counted for tests and the benchmark

    # ------------------------------------------------------------ structure

    def set_layout(self, width: int) -> bool:
        """Re-create the columns if the width tier changed; True if it did."""
        layout = layout_for(width)
        if layout == self._lay:
            return False
        self._lay = layout
        self.clear(columns=True)
        # No cell padding: the cells carry their own leading gap, which buys
        # the name column a dozen characters on an 80-column terminal.
        self.add_column("", key="mark", width=2)
        self.add_column("tensor", key="name", width=layout["name"])
        if layout["wide"]:
            self.add_column("  shape", key="shape", width=12)
            self.add_column("  params", key="params", width=8)
        for key, _kind, _stat, label, _log in METRICS:
            if len(label) >= layout["metric"]:
                label = SHORT_LABEL.get(label, label)
            self.add_column(Text(label.rjust(layout["metric"])), key=key, width=layout["metric"])
        self._add_rows()
        return True

    def set_entries(self, entries: list) -> None:
        """Replace the rows (filter/sort/grouping changed), keeping the cursor on the same key."""
        keep = self.current_key()
        self.entries = entries
        self._add_rows(keep)

    def _add_rows(self, keep: str | None = None) -> None:
        if self._lay is None:
            return
        self.clear()
        for entry in self.entries:
            self.add_row(*self._static_cells(entry), key=entry.key)
        self._stale = {e.key for e in self.entries}
        if keep is not None and keep in self._keys():
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        self._fill_visible()

    def _keys(self) -> set:
        return {e.key for e in self.entries}

    def current_key(self) -> str | None:
        if not self.entries or self.cursor_row < 0 or self.cursor_row >= len(self.entries):
            return None
        return self.entries[self.cursor_row].key

    def current_entry(self):
        key = self.current_key()
        return None if key is None else self.entries[self.cursor_row]

    def _static_cells(self, entry) -> list:
        lay = self._lay
        blank = Text("")
        if isinstance(entry, GroupRow):
            arrow = "▸" if entry.collapsed else "▾"
            name = Text(f"{arrow} {entry.layer or '(no layer)'} ({len(entry.members)})", style="bold")
            name.truncate(lay["name"], overflow="ellipsis")
            cells = [blank, name]
            if lay["wide"]:
                cells += [blank, Text("  " + fmt_int(entry.size), style="bold")]
            return cells + [blank] * len(METRICS)
        cells = [blank, self._name_cell(entry, nonfinite=False)]
        if lay["wide"]:
            shape = "×".join(str(d) for d in entry.shape) or "scalar"
            cells += [Text("  " + shape, overflow="ellipsis", no_wrap=True), Text("  " + fmt_int(entry.size))]
        return cells + [blank] * len(METRICS)

    def _name_cell(self, entry: TensorRow, *, nonfinite: bool) -> Text:
        grouped = any(isinstance(e, GroupRow) for e in self.entries[:1])
        label = entry.name
        if grouped and entry.layer and label.startswith(entry.layer) and len(label) > len(entry.layer) + 1:
            label = "  " + label[len(entry.layer) + 1:]
        style = "bold red" if nonfinite else ("" if entry.trainable else "dim")
        width = self._lay["name"]
        if len(label) > width:  # keep the end of a long name: that is where layers differ
            label = "…" + label[-(width - 1):]
        return Text(label, style=style, no_wrap=True)

    # --------------------------------------------------------------- values

    def update_values(self, data, row: int, alerts_by_tensor: dict) -> None:
        """New data or a new timeline position: refresh visible rows, mark the rest stale."""
        self._run, self._at_row, self._alerts = data, row, alerts_by_tensor
        self._stale = {e.key for e in self.entries}
        self._fill_visible()

    def visible_range(self) -> tuple[int, int]:
        top = int(self.scroll_y)
        return max(0, top - 2), min(len(self.entries), top + self.size.height + 2)

    def _fill_visible(self) -> None:
        if self._run is None or not self._stale or self._lay is None:
            return
        # Rows can be re-added (new tensors after a reload) before the next update_values.
        self._at_row = min(self._at_row, self._run.n - 1)
        lo, hi = self.visible_range()
        todo = [e for e in self.entries[lo:hi] if e.key in self._stale]
        if not todo:
            return
        tensors = [e for e in todo if isinstance(e, TensorRow)]
        values = metric_values(self._run, [t.col for t in tensors], self._at_row)
        nonfinite = self._nonfinite([t.col for t in tensors])
        for i, entry in enumerate(tensors):
            self._update_tensor_row(entry, {k: (v[0][i], v[1][i]) for k, v in values.items()}, nonfinite[i])
        for entry in todo:
            if isinstance(entry, GroupRow):
                self._update_group_row(entry)
            self._stale.discard(entry.key)

    def _nonfinite(self, cols: list[int]) -> np.ndarray:
        """Whether each tensor had NaN/Inf values at the timeline row."""
        data, row = self._run, self._at_row
        if row < 0 or not cols:
            return np.zeros(len(cols), dtype=bool)
        idx = np.asarray(cols)
        bad = data.stat_matrix("weights", "nan")[row, idx] + data.stat_matrix("weights", "inf")[row, idx]
        return np.nan_to_num(bad) > 0

    def _set(self, key: str, column: str, value) -> None:
        self.update_cell(key, column, value)
        self.cells_updated += 1

    def _update_tensor_row(self, entry: TensorRow, vals: dict, nonfinite: bool) -> None:
        width, gap, value_w = self._lay["spark"], self._lay["gap"], self._lay["value"]
        for key, _kind, _stat, _label, log in METRICS:
            now, hist = vals[key]
            line = spark(hist, width, log=log) if hist.size else " " * width
            band = ratio_band(now) if key == "ratio" else None
            cell = Text(" " * gap, no_wrap=True)
            if band is not None:
                cell.append(line, style=BAND_STYLE[band])
                cell.append(BAND_MARK[band], style=BAND_STYLE[band])
                cell.append(" " + fmt(now, value_w - 1), style=BAND_STYLE[band] if band != "" else "")
            else:
                cell.append(line, style=METRIC_STYLE[key])
                cell.append(" ")
                cell.append(fmt(now, value_w))
            self._set(entry.key, key, cell)
        self._set(entry.key, "mark", self._mark(self._alerts.get(entry.name), nonfinite))
        self._set(entry.key, "name", self._name_cell(entry, nonfinite=nonfinite))

    def _update_group_row(self, entry: GroupRow) -> None:
        alerts = [a for m in entry.members for a in self._alerts.get(m.name, ())]
        self._set(entry.key, "mark", self._mark(alerts, False))

    @staticmethod
    def _mark(alerts, nonfinite: bool) -> Text:
        if nonfinite or (alerts and any(a.severity == "error" for a in alerts)):
            return Text(" ✖", style="bold red")
        if alerts:
            return Text(" ▲", style="bold yellow")
        return Text(" ")

    # ------------------------------------------------------------- scrolling

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if math.floor(old_value) != math.floor(new_value):
            self._fill_visible()

    def on_resize(self) -> None:
        self._fill_visible()
