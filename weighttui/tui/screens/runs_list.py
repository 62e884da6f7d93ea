"""The run list of the multi-run viewer: one row per log, updated in place.

Rows are keyed by the log's path and cells are only rewritten when their
text changed, so a sweep of dozens of live runs redraws little per refresh.
"""

from __future__ import annotations

import shlex
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from weighttui.analysis.multirun import RunRow
from weighttui.log.text import inert
from weighttui.tui.formatting import number_cell
from weighttui.tui.screens.base import RunsScreen
from weighttui.tui.widgets.header import STATUS_STYLE
from weighttui.tui.widgets.sparkline import spark

SPARK_WIDTH = 16
COLUMNS = (("run", "run"), ("status", "status"), ("alerts", "alerts"), ("framework", "fw"), ("snapshots", "snaps"),
           ("last_step", "last step"), ("loss", "loss"), ("trend", "trend"), ("meta", "meta"),
           ("corrupt", "corrupt"))
EXTRA_STYLE = {"error": "bold red", "diverged": "bold red"}
ALERT_STYLE = {"error": "bold red", "warning": "yellow"}
ALERTS_SHOWN = 3  # the highlighted run's first alerts, under the list


def alerts_cell(row: RunRow) -> Text:
    """`ok`, or the first alert's rule (errors first) and how many more; `…` until computed."""
    if row.alerts is None:
        return Text("…", style="dim")
    if not row.alerts:
        return Text("ok", style="dim green")
    more = f" +{row.alerts - 1}" if row.alerts > 1 else ""
    return Text(row.alert_rule + more, style=ALERT_STYLE.get(row.alert_severity, "yellow"))


def row_cells(row: RunRow) -> dict[str, Text]:
    """The cells of one run's row, by column key."""
    status_style = STATUS_STYLE.get(row.status, EXTRA_STYLE.get(row.status, "bold"))
    return {
        "run": Text(inert(row.name), style="bold"),
        "status": Text(row.status, style=status_style),
        "alerts": alerts_cell(row),
        "framework": Text(inert(row.framework or "–")),
        "snapshots": Text("…" if row.partial else str(row.snapshots), justify="right"),
        "last_step": Text("–" if row.last_step is None else str(row.last_step), justify="right"),
        "loss": number_cell(row.loss),
        "trend": Text(spark(row.loss_values, SPARK_WIDTH) if row.loss_values.size else "", style="cyan"),
        "meta": Text(inert(row.meta), style="dim"),
        "corrupt": Text(str(row.corruptions) if row.corruptions else "", style="bold yellow", justify="right"),
    }


# DataTable's caches this table trims row by row (set_cells); without them (another Textual) it
# falls back to update_cell
_ROW_CACHES = ("_cell_render_cache", "_row_render_cache", "_row_renderable_cache", "_line_cache")


class RunTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", show=False),
        Binding("k", "cursor_up", show=False),
    ]

    def set_cells(self, changes: list[tuple[str, str, Text, bool]]) -> None:
        """Set cells: [(row key, column key, value, widen the column)].

        DataTable.update_cell keys all its render caches by one update count, so any change makes
        it draw every visible cell again, through Rich: in a live sweep, where every run's row
        changes a few times a second, that was half the UI thread's time
        (benchmarks/bench_store_sweep.py --live). Here only the changed rows' cached renders are
        dropped (their cell, row and renderables entries; the assembled lines, which are cheap),
        unless a column must widen, which redraws all as before.
        """
        if not changes:
            return
        if any(widen for *_rest, widen in changes) or not all(hasattr(self, c) for c in _ROW_CACHES):
            for row, column, value, widen in changes:
                self.update_cell(row, column, value, update_width=widen)
            return
        rows: set[RowKey] = set()
        for row, column, value, _widen in changes:
            rk, ck = RowKey(row), ColumnKey(column)
            if rk not in self._row_locations or ck not in self._column_locations:
                raise CellDoesNotExist(f"No cell exists for row_key={rk!r}, column_key={ck!r}.")
            self._data[rk][ck] = value
            rows.add(rk)
        indices = {self._row_locations.get(rk) for rk in rows}
        caches: tuple[tuple[Any, int, set], ...] = (
            (self._cell_render_cache, 0, rows), (self._row_render_cache, 0, rows),
            (self._row_renderable_cache, 1, indices))
        for cache, at, drop in caches:
            for key in [k for k in cache.keys() if k[at] in drop]:
                cache.discard(key)
        self._line_cache.clear()
        self.refresh()


class RunListScreen(RunsScreen):
    DEFAULT_CSS = """
    RunListScreen #runs-title { height: 1; background: $panel; padding: 0 1; }
    RunListScreen RunTable { height: 1fr; }
    RunListScreen #runs-note { height: auto; max-height: 8; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [Binding("enter", "open", "open run")]

    def __init__(self):
        super().__init__()
        self._cells: dict[str, dict[str, str]] = {}  # path -> column -> plain text shown
        self._shown: dict[str, RunRow] = {}  # path -> the row those cells were made from
        self._loss_label = "loss"

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        table = RunTable(id="runs", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static(id="runs-note")
        yield Footer()

    @property
    def table(self) -> RunTable:
        return self.query_one(RunTable)

    def refresh_data(self) -> None:
        app = self.host
        rows = app.run_rows()
        self.query_one("#runs-title", Static).update(app.title_line())
        table = self.table
        changes: list[tuple[str, str, Text, bool]] = []
        for row in rows:
            if self._shown.get(row.path) is row:
                continue  # the same row as drawn (RunSlot.row() keeps it while the run is unchanged)
            self._shown[row.path] = row
            cells = row_cells(row)
            plain = {k: c.plain + "|" + str(c.style) for k, c in cells.items()}
            old = self._cells.get(row.path)
            if old is None:
                table.add_row(*(cells[k] for k, _ in COLUMNS), key=row.path)
            else:
                for k, text in plain.items():
                    if old[k] != text:
                        # widen a column for a wider cell, never narrow it: a narrower cell makes
                        # DataTable measure every cell of the column again, and with every run of a
                        # live sweep changing each refresh that was most of the viewer's CPU
                        # (benchmarks/bench_store_sweep.py --live)
                        column = table.columns.get(ColumnKey(k))
                        wider = column is None or cells[k].cell_len > column.content_width
                        changes.append((row.path, k, cells[k], wider))
            self._cells[row.path] = plain
        table.set_cells(changes)
        self._relabel_loss(rows)
        self.refresh_note()

    def _relabel_loss(self, rows: list[RunRow]) -> None:
        """Call the loss column what the runs call it ("val_loss" ...), if they agree."""
        names = {r.loss_name for r in rows if r.loss_name}
        label = names.pop() if len(names) == 1 else "loss"
        if label != self._loss_label:
            self._loss_label = label
            col = self.table.columns.get(ColumnKey("loss"))
            if col is not None:
                col.label = Text(inert(label))
                self.table.refresh()

    def refresh_status(self) -> None:
        self.refresh_data()

    def current_path(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def on_data_table_row_highlighted(self, _event) -> None:
        self.refresh_note()

    def on_data_table_row_selected(self, event) -> None:
        if event.row_key.value is not None:
            self.host.open_run(event.row_key.value)

    def action_open(self) -> None:
        path = self.current_path()
        if path is not None:
            self.host.open_run(path)

    def refresh_note(self) -> None:
        """Below the table: errors, ignored files, and how to open the highlighted run alone."""
        app = self.host
        note = Text(no_wrap=False)
        if not app.slots:
            where = app.directory or "the given paths"
            note.append(f"no run logs yet in {where}; waiting for one to appear…\n", style="yellow")
        for slot in app.slots:
            if slot.error:
                note.append(f"{inert(slot.name)}: {inert(slot.error)}\n", style="red")
        if app.ignored:
            shown = ", ".join(f"{inert(name)} ({inert(why)})" for name, why in list(app.ignored_names().items())[:4])
            more = len(app.ignored) - 4
            n = len(app.ignored)
            what = "file that is not a weighttui log" if n == 1 else "files that are not weighttui logs"
            note.append(f"ignored {n} {what}: {shown}" + (f" and {more} more" if more > 0 else "") + "\n",
                        style="dim")
        path = self.current_path()
        current = next((s for s in app.slots if s.path == path), None)
        if current is not None and current.alerts:
            for a in current.alerts[:ALERTS_SHOWN]:
                where = f"{inert(a.tensor)}: " if a.tensor else ""
                note.append(f"{inert(current.name)}: {a.rule} ", style=ALERT_STYLE.get(a.severity, "yellow"))
                note.append(f"{where}{inert(a.message)} (from step {a.step})\n")
            if len(current.alerts) > ALERTS_SHOWN:
                more_alerts = len(current.alerts) - ALERTS_SHOWN
                note.append(f"and {more_alerts} more: open the run for all of them\n", style="dim")
        if path is not None:
            note.append("enter opens it here; or in another terminal: ", style="dim")
            note.append(inert(shlex.join(["weighttui", app.mode, path, *app.threshold_options()])), style="bold")
        self.query_one("#runs-note", Static).update(note)
