"""The overview screen: header, scalars, the layer table, filter and timeline.

The app redraws it (`refresh_view`) after each coalesced data update or
timeline move, from the app's `RunView`; the table's rows are rebuilt only when the set of tensors, the filter,
the sort or the grouping changes, otherwise its cells are updated in place.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static

from weighttui.tui.screens.base import RunScreen
from weighttui.tui.screens.help import COLOURS, OVERVIEW
from weighttui.tui.state import RunView
from weighttui.tui.widgets.header import RunHeader
from weighttui.tui.widgets.layer_rows import SORTS, GroupRow, TensorRow, arrange, sort_values, tensor_rows
from weighttui.tui.widgets.layer_table import LayerTable
from weighttui.tui.widgets.scalars import ScalarsPanel
from weighttui.tui.widgets.timeline import Timeline


class OverviewScreen(RunScreen):
    KEYS_HELP = (OVERVIEW, COLOURS)
    HELP_TITLE = "overview"
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("z", "fold_all", "fold", show=False),
        Binding("m", "columns", "columns", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.sort = SORTS[0]
        self.pattern = ""
        self.collapsed: set[str] = set()
        self._rows: list[TensorRow] = []
        self._shape_key: tuple | None = None  # (resets, tensor count, run) the rows were built for
        self._sorted_at: int | None = None  # the step the metric sort was computed at
        self._order: list[str] = []  # tensors in table order, folded groups included

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
        self.table.focus()  # the base class draws next

    def on_resize(self, event: events.Resize) -> None:
        if self.table.set_layout(event.size.width):
            self.refresh_view()

    # ------------------------------------------------------------- refresh

    def refresh_data(self) -> None:
        view = self.view()
        data = view.data
        table = self.table
        table.set_layout(self.size.width or self.app.size.width)
        key = (data.resets, len(data.tensors), id(data.run))
        if key != self._shape_key:
            self._shape_key = key
            self._rows = tensor_rows(data)
            self._arrange(view)
        empty = self.query_one("#empty", Static)
        if not self._rows:
            empty.display = True
            table.display = False
            empty.update(self._empty_text(view))
        else:
            empty.display = False
            table.display = True
        table.update_values(data, view.row, view.alerts_by_tensor, view.snapshot)
        self.query_one(RunHeader).show(view)
        self.query_one(ScalarsPanel).show(view)
        self.query_one(Timeline).show(view)

    def refresh_status(self) -> None:
        """Header and timeline: the app calls this each second (time since, stalled: the timeline's
        "live following" becomes "ended" with it) and while paused."""
        view = self.view()
        self.query_one(RunHeader).show(view)
        self.query_one(Timeline).show(view)

    @staticmethod
    def _empty_text(view: RunView) -> Text:
        if view.waiting == "missing":
            return Text(f"Waiting for {view.path} to appear.\nStart the training (or `weighttui demo`) "
                        "and this screen fills in.", style="yellow")
        if view.data.run is None:
            return Text("Waiting for the run to start…", style="yellow")
        return Text("The run has declared no tensors yet.", style="dim")

    def _arrange(self, view: RunView | None = None) -> None:
        view = view or self.view()
        rows, row = view.upto  # as of the position: a snapshot the thinned row view lacks is its own
        values = sort_values(rows, self._rows, row, self.sort, view.alerts_by_tensor)
        entries = arrange(self._rows, sort=self.sort, pattern=self.pattern, collapsed=self.collapsed,
                          sort_values=values)
        self.table.set_entries(entries)
        # DetailScreen's [ ] walk this order, folded groups included.
        unfolded = entries if not self.collapsed else arrange(
            self._rows, sort=self.sort, pattern=self.pattern, collapsed=set(), sort_values=values)
        self._order = [e.name for e in unfolded if isinstance(e, TensorRow)]
        self.host.set_tensor_order(self._order)
        self._sorted_at = view.step
        sortline = self.query_one("#sortline", Static)
        shown = sum(1 for e in entries if isinstance(e, TensorRow))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{len(self._rows)} tensors", style="bold")
        line.append(f" · {sum(r.size for r in self._rows):,} params · sort: ", style="dim")
        line.append(self.sort, style="bold")
        if self.sort not in ("model", "name") and self._sorted_at is not None:
            line.append(f" (at step {self._sorted_at}, s to re-sort)", style="dim")
        if self.pattern:
            line.append("  filter: ", style="dim")
            line.append(self.pattern, style="bold yellow")
            line.append(f" ({len(set(self._order))} match)", style="dim")
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

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.value = ""
            self.pattern = ""
            box.display = False
            self._arrange()
            self.table.focus()
            event.stop()

    def action_columns(self) -> None:
        from weighttui.tui.screens.columns import ColumnsScreen, offered_metrics

        self.app.push_screen(ColumnsScreen(self.table.shown_metrics, offered_metrics(self.view().data)),
                             self._set_columns)

    def _set_columns(self, chosen: tuple[str, ...] | None) -> None:
        if chosen is None:
            return
        self.table.chosen_metrics = chosen
        if self.table.set_layout(self.size.width or self.app.size.width):
            self.refresh_view()

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
            self.host.open_tensor(entry.name)
