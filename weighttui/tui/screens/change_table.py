"""The change table screen (key `c`): how much each tensor moves, at the timeline position.

Numbers come from `weighttui.analysis.changes.change_table` (pure). Rows are keyed by
tensor and updated in place; they are rebuilt only when the set of tensors
changes. Keys: `s` / `S` next sort column / reverse (or click a header),
`a` / `b` mark the timeline position (the app keeps the marks when the screen is left),
`x` clear the marks, `w` averaging
window, enter opens the tensor, escape goes back. Stagnant tensors are
yellow, too-fast ones red.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from weighttui.analysis.changes import COLUMNS, LABELS, change_table
from weighttui.analysis.diagnose import DiagnoseConfig
from weighttui.log.text import inert
from weighttui.tui.formatting import fmt_change
from weighttui.tui.screens.base import RunScreen
from weighttui.tui.state import RunView
from weighttui.tui.widgets.layer_table import ROW_TABLE_BINDINGS

KEYS = ("tensor", *COLUMNS, "flag")
WINDOWS = (5, 10, 20, 50)
FLAG_STYLE = {"nonfinite": "bold magenta", "stagnant": "bold yellow", "fast": "bold red", "": ""}


class RowTable(DataTable[Any], inherit_bindings=False):
    """A row-cursor DataTable that leaves left/right/home/end to the app's timeline."""

    BINDINGS = list(ROW_TABLE_BINDINGS)


def _sort_key(key: str, entry: dict) -> tuple[int, Any]:
    v = entry[key]
    if isinstance(v, str):
        return (0, v)
    return (1, 0.0) if v is None or math.isnan(v) else (0, v)


class ChangeTableScreen(RunScreen):
    DEFAULT_CSS = """
    ChangeTableScreen { layout: vertical; }
    ChangeTableScreen #chead { height: 2; padding: 0 1; background: $panel; }
    ChangeTableScreen DataTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "close", "back"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse", "reverse", show=False),
        Binding("a", "mark('a')", "mark a"),
        Binding("b", "mark('b')", "mark b"),
        Binding("x", "clear_marks", "clear marks", show=False),
        Binding("w", "window", "window", show=False),
        Binding("enter", "open", "open tensor", show=False),
    ]
    HELP_TITLE = "change table"
    KEYS_HELP = (("Change table", (
        ("↑ ↓  j k", "move between tensors"),
        ("enter", "open the tensor"),
        ("s  S", "next sort column / reverse the order (or click a column header)"),
        ("a  b", "mark the timeline position as a / b: the change a→b column"),
        ("x", "clear the marks"),
        ("w", "averaging window: 5, 10, 20, 50 snapshots"),
        ("esc", "back"),
    )), ("Flags", (
        ("nonfinite", "magenta: its weights hold NaN/Inf at this snapshot (its nan cells are those)"),
        ("stagnant", "yellow: a trainable tensor that hardly moves"),
        ("fast", "red: update ratio above the healthy band"),
        ("from 0", "the norm started at 0 (a zero-initialised bias): no relative change"),
    )))

    def __init__(self, *, sort: str = "ratio", reverse: bool = True, config: DiagnoseConfig | None = None,
                 marks: dict[str, int | None] | None = None):
        super().__init__()
        self.sort_key = sort
        self.reverse = reverse
        self.window = 10
        # the marks a and b (steps), in a dict the app keeps: they stay set when the screen is left
        # and opened again (`c`), as a user marks a, looks elsewhere, and comes back for b
        self.marks: dict[str, int | None] = {} if marks is None else marks
        self.config = config
        self.rows: list[dict] = []
        self._shape: tuple[str, ...] | None = None
        self._cells: dict[tuple[str, str], str] = {}
        self._key: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="chead")
        yield RowTable(id="changes", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    @property
    def table(self) -> RowTable:
        return self.query_one(RowTable)

    @property
    def mark_a(self) -> int | None:
        return self.marks.get("a")

    @property
    def mark_b(self) -> int | None:
        return self.marks.get("b")

    def on_mount(self) -> None:
        for key in KEYS:
            self.table.add_column(LABELS[key], key=key)
        self.table.focus()  # the base class draws next

    # ----------------------------------------------------------------- keys

    def action_sort(self) -> None:
        self.sort_key = KEYS[(KEYS.index(self.sort_key) + 1) % len(KEYS)]
        self._resort()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._resort()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, key not in ("tensor", "flag")
        self._resort()

    def action_mark(self, which: str) -> None:
        view = self.view()
        if view.row < 0:
            return
        self.marks[which] = view.step  # the position's own step, also between thinned rows
        self.refresh_data(force=True)

    def action_clear_marks(self) -> None:
        self.marks.clear()
        self.refresh_data(force=True)

    def action_window(self) -> None:
        self.window = WINDOWS[(WINDOWS.index(self.window) + 1) % len(WINDOWS)] if self.window in WINDOWS else 10
        self.refresh_data(force=True)

    def action_open(self) -> None:
        table = self.table
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            if key.value is not None:
                self.host.open_tensor(key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.host.open_tensor(event.row_key.value)

    # -------------------------------------------------------------- refresh

    def refresh_data(self, force: bool = False) -> None:
        view = self.view()
        data = view.data
        key = (data.resets, data.snapshot_count, data.n, view.row, view.snapshot, self.window, self.mark_a,
               self.mark_b, id(data.run))
        if key == self._key and not force:
            return
        self._key = key
        rows, row = view.upto  # as of the position: a snapshot the thinned row view lacks is its own
        self.rows = change_table(rows, row=row if row >= 0 else None, window=self.window,
                                 mark_a=self.mark_a, mark_b=self.mark_b, config=self.config)
        self._header(view)
        table = self.table
        shape = tuple(r["tensor"] for r in self.rows)
        if shape != self._shape:  # new tensors (or a new run): rebuild the rows once
            self._shape = shape
            table.clear()
            self._cells.clear()
            for entry in self.rows:
                cells = self._cells_of(entry)
                table.add_row(*cells, key=entry["tensor"])
                for k, c in zip(KEYS, cells, strict=True):
                    self._cells[(entry["tensor"], k)] = c.plain + str(c.style)
            self._resort(view)
            return
        changed = False
        for entry in self.rows:
            for k, c in zip(KEYS, self._cells_of(entry), strict=True):
                sig = c.plain + str(c.style)
                if self._cells.get((entry["tensor"], k)) != sig:
                    self._cells[(entry["tensor"], k)] = sig
                    table.update_cell(entry["tensor"], k, c)
                    changed = True
        if changed and self.sort_key != "tensor":
            self._resort(view)

    def _cells_of(self, entry: dict) -> list[Text]:
        style = FLAG_STYLE[entry["flag"]]
        cells = [Text(inert(entry["tensor"]), style=style)]
        from_zero = entry.get("norm_start") == 0.0
        bad = bool(entry.get("nonfinite"))
        for k in COLUMNS:
            cells.append(Text(fmt_change(k, entry[k], from_zero=from_zero, nonfinite=bad), style=style,
                              justify="right"))
        cells.append(Text(entry["flag"], style=style))
        return cells

    def _resort(self, view: RunView | None = None) -> None:
        order = {inert(e["tensor"]): _sort_key(self.sort_key, e) for e in self.rows}  # by the cell shown
        if self.table.row_count:
            # one column asked for: the key function gets that cell (the tensor name) itself
            self.table.sort("tensor", key=lambda cell: order.get(cell.plain, (2, 0)), reverse=self.reverse)
        self._header(view or self.view())

    def _header(self, view: RunView) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("changes", style="bold")
        if view.step is not None:
            t.append(f" at step {view.step} (snapshot {view.snapshot_number + 1}/{view.data.snapshot_count})")
        t.append(f" · mean over {self.window} snapshots · sorted by {LABELS[self.sort_key]} "
                 f"{'↓' if self.reverse else '↑'}", style="dim")
        stagnant = sum(1 for r in self.rows if r["flag"] == "stagnant")
        fast = sum(1 for r in self.rows if r["flag"] == "fast")
        bad = sum(1 for r in self.rows if r["flag"] == "nonfinite")
        t.append("\n")
        if bad:
            t.append(f"{bad} nonfinite", style=FLAG_STYLE["nonfinite"])
            t.append(" · ")
        t.append(f"{stagnant} stagnant", style=FLAG_STYLE["stagnant"] if stagnant else "dim")
        t.append(" · ")
        t.append(f"{fast} too fast", style=FLAG_STYLE["fast"] if fast else "dim")
        t.append("  marks: ", style="dim")
        t.append(f"a = step {self.mark_a}" if self.mark_a is not None else "a = (press a)")
        t.append(", ")
        t.append(f"b = step {self.mark_b}" if self.mark_b is not None else "b = (press b)")
        src = self.rows[0].get("change_ab_from") if self.rows else ""
        if src:
            t.append(f"  (change a→b from {'complete values' if src == 'values' else 'sampled elements'})",
                     style="dim")
        self.query_one("#chead", Static).update(t)
