"""The overview screen: header, scalars, the layer table, filter and timeline.

The app calls `refresh_data()` after each coalesced data update or timeline
move; the table's rows are rebuilt only when the set of tensors, the filter,
the sort or the grouping changes, otherwise its cells are updated in place.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.layer_rows import SORTS, GroupRow, TensorRow, arrange, sort_values, tensor_rows
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.scalars import ScalarsPanel
from weighttui.tui.formatting import fmt, fmt_int
from weighttui.tui.widgets.timeline import Timeline


class OverviewScreen(Screen):
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("z", "fold_all", "fold", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.sort = SORTS[0]
        self.pattern = ""
        self.collapsed: set[str] = set()
        self._rows: list[TensorRow] = []
        self._shape_key = None  # (resets, tensor count) the rows were built for
        self._sorted_at: int | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield ScalarsPanel(id="scalars")
        yield Static(id="sortline")
        yield LayerTable(id="layers")
        yield Static(id="empty")
        yield Input(placeholder="filter: substring or glob (esc clears)", id="filter")
        yield Timeline(id="timeline")
        yield Footer(compact=True)

    @property
    def table(self) -> LayerTable:
        return self.query_one(LayerTable)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.table.focus()
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.refresh_data()  # data moved on while another screen was on top

    def on_resize(self, event) -> None:
        if self.table.set_layout(event.size.width):
            self.refresh_data()

    # ------------------------------------------------------------- refresh

    def refresh_data(self) -> None:
        app = self.app
        data = app.data
        table = self.table
        if table.set_layout(self.size.width or app.size.width):
            pass
        key = (data.resets, len(data.tensors), id(data.run))
        if key != self._shape_key:
            self._shape_key = key
            self._rows = tensor_rows(data)
            self._arrange()
        empty = self.query_one("#empty", Static)
        if not self._rows:
            empty.display = True
            table.display = False
            empty.update(self._empty_text())
        else:
            empty.display = False
            table.display = True
        table.update_values(data, app.row, app.alerts_by_tensor)
        self.refresh_status()
        self.query_one(ScalarsPanel).refresh_from(app)
        self.query_one(Timeline).refresh_from(app)

    def refresh_status(self) -> None:
        """Header only: the app calls this each second (time since, stalled) and while paused."""
        self.query_one(RunHeader).refresh_from(self.app)

    def _empty_text(self) -> Text:
        app = self.app
        if app.waiting == "missing":
            return Text(f"Waiting for {app.path} to appear.\nStart the training (or `weighttui demo`) "
                        "and this screen fills in.", style="yellow")
        if app.data.run is None:
            return Text("Waiting for the run to start…", style="yellow")
        return Text("The run has declared no tensors yet.", style="dim")

    def _arrange(self) -> None:
        app = self.app
        values = sort_values(app.data, self._rows, app.row, self.sort, app.alerts_by_tensor)
        entries = arrange(self._rows, sort=self.sort, pattern=self.pattern, collapsed=self.collapsed,
                          sort_values=values)
        self.table.set_entries(entries)
        # DetailScreen's [ ] walk this order, folded groups included.
        unfolded = entries if not self.collapsed else arrange(
            self._rows, sort=self.sort, pattern=self.pattern, collapsed=set(), sort_values=values)
        app.tensor_order = [e.name for e in unfolded if isinstance(e, TensorRow)]
        self._sorted_at = app.row
        sortline = self.query_one("#sortline", Static)
        shown = sum(1 for e in entries if isinstance(e, TensorRow))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{len(self._rows)} tensors", style="bold")
        line.append(f" · {sum(r.size for r in self._rows):,} params · sort: ", style="dim")
        line.append(self.sort, style="bold")
        if self.sort not in ("model", "name") and self._sorted_at is not None and self._sorted_at >= 0:
            line.append(f" (at step {int(app.data.steps[self._sorted_at])}, s to re-sort)", style="dim")
        if self.pattern:
            line.append("  filter: ", style="dim")
            line.append(self.pattern, style="bold yellow")
            line.append(f" ({len(set(app.tensor_order))} match)", style="dim")
        elif shown < len(self._rows) and self.collapsed:
            line.append(f"  {len(self.collapsed)} group(s) folded", style="dim")
        sortline.update(line)

    # ------------------------------------------------------------- actions

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._arrange()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.pattern
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.pattern = event.value.strip()
            self._arrange()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = bool(self.pattern)
            self.table.focus()

    def on_key(self, event) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.value = ""
            self.pattern = ""
            box.display = False
            self._arrange()
            self.table.focus()
            event.stop()

    def action_fold_all(self) -> None:
        layers = {r.layer for r in self._rows}
        self.collapsed = set() if self.collapsed >= layers else layers
        self._arrange()

    def on_layer_table_row_selected(self, event: LayerTable.RowSelected) -> None:
        entry = self.table.current_entry()
        if isinstance(entry, GroupRow):
            self.collapsed ^= {entry.layer}
            self._arrange()
        elif isinstance(entry, TensorRow):
            self.app.open_tensor(entry.name)


class TensorStatsScreen(ModalScreen):
    """Fallback for `enter` while the detail screen is not available: the tensor's statistics now."""

    DEFAULT_CSS = """
    TensorStatsScreen { align: center middle; }
    TensorStatsScreen > Static { width: auto; max-width: 100%; height: auto; max-height: 100%;
                                 border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [("escape,q,enter", "close", "close")]

    def __init__(self, name: str):
        super().__init__()
        self.tensor = name

    def compose(self) -> ComposeResult:
        yield Static(id="stats")

    def on_mount(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        self.query_one("#stats", Static).update(tensor_stats_table(self.app.data, self.tensor, self.app.row))

    def action_close(self) -> None:
        self.dismiss()


def tensor_stats_table(data, name: str, row: int) -> Table:
    info = data.tensor(name)
    col = [i for i, t in enumerate(data.tensors) if t.name == name][-1]
    title = f"{name}  {'×'.join(map(str, info.shape)) or 'scalar'} {info.dtype}  {fmt_int(info.size)} params"
    table = Table(title=title, title_style="bold", show_edge=False)
    table.add_column("kind", style="bold")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    if row < 0:
        table.add_row("", "no snapshot yet", "")
        return table
    table.caption = f"step {int(data.steps[row])} (esc closes)"
    for kind in ("weights", "delta", "grad"):
        if not data.has_kind(kind):
            continue
        for i, stat in enumerate(data.columns(kind)):
            value = data.stat_matrix(kind, stat)[row, col]
            table.add_row(kind if i == 0 else "", stat, fmt(value, 12).strip())
    return table
