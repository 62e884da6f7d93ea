"""Comparison of several runs: one tensor's statistic, one line per run.

Left: the tensors the runs have in common (`/` filters them). Right: a
plotext chart with one series per run and a legend, and a table of each
run's latest value, its value at the last step every run reached (so a fast
run is compared with a slow one at the same step), and its range.
The chart is redrawn only when its inputs changed, and while runs are live
at most once every LIVE_REDRAW_S (plotext is the slow part); choosing another
tensor or statistic redraws at once.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.data_table import ColumnKey
from textual.widgets.option_list import Option

from weighttui.analysis.multirun import Aligned, compare, filter_names
from weighttui.log.text import inert
from weighttui.tui.formatting import number_cell
from weighttui.tui.screens.base import RunsScreen
from weighttui.tui.widgets.charts import SERIES_COLORS
from weighttui.tui.widgets.runs_chart import RunsChart

LIVE_REDRAW_S = 1.0

# The chart shows the trend and the run list the status: here only the numbers, to fit beside the list.
TABLE_COLUMNS = (("run", "run"), ("meta", "meta"), ("last", "last step"), ("latest", "latest"),
                 ("common", "at common step"), ("min", "min"), ("max", "max"))


def series_color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]


class TensorList(OptionList):
    BINDINGS = [
        Binding("j", "cursor_down", show=False),
        Binding("k", "cursor_up", show=False),
    ]

    def on_key(self, event) -> None:
        # Keys that arrive in one burst with "/" ("/fc2⏎" typed fast or pasted) are all queued
        # here before the screen's "/" binding would run (it sees the key only after it bubbled
        # up), so the box is opened here and the keys after it are handed to the box.
        screen = self.screen
        if not isinstance(screen, CompareScreen):
            return
        box = screen.query_one("#cmp-filter", Input)
        if screen.focused is not box:  # (has_focus lags: it follows the Focus message)
            if event.key == "slash":
                screen.action_filter()
                event.stop()
                event.prevent_default()
            return
        if event.key in ("enter", "escape"):
            screen.close_filter(clear=event.key == "escape")
        elif event.is_printable and event.character:
            box.insert_text_at_cursor(event.character)
        else:
            return
        event.stop()
        event.prevent_default()


class CompareScreen(RunsScreen):
    DEFAULT_CSS = """
    CompareScreen #cmp-title { height: 1; background: $panel; padding: 0 1; }
    CompareScreen #cmp-left { width: 30; max-width: 35%; }
    CompareScreen TensorList { height: 1fr; }
    CompareScreen #cmp-tensors-title { height: 1; padding: 0 1; color: $text-muted; }
    CompareScreen #cmp-filter { height: 3; display: none; }
    CompareScreen #cmp-right { width: 1fr; }
    CompareScreen RunsChart { height: 1fr; min-height: 8; }
    CompareScreen #cmp-values { height: auto; max-height: 12; }
    """
    # Keys typed right after tab (before on_mount) must reach the list, never the filter box.
    AUTO_FOCUS = "TensorList"
    BINDINGS = [
        Binding("s", "metric(1)", "statistic"),
        Binding("S", "metric(-1)", "previous statistic", show=False),
        Binding("slash", "filter", "filter"),
        Binding("l", "log", "log scale"),
    ]

    def __init__(self):
        super().__init__()
        self.pattern = ""
        self.aligned: Aligned | None = None
        self._names: list[str] | None = None  # tensor names in the list now
        self._cells: dict[str, dict[str, str]] = {}
        self._order: list[str] = []  # run paths in table order
        self._chart_key = None  # (view, data versions) the chart shows now
        self._drawn_at = 0.0
        self._redraw_timer = None

    def compose(self) -> ComposeResult:
        yield Static(id="cmp-title")
        with Horizontal():
            with Vertical(id="cmp-left"):
                yield Static("tensors", id="cmp-tensors-title")
                yield Input(placeholder="filter: substring or glob", id="cmp-filter")
                yield TensorList(id="cmp-tensors")
            with Vertical(id="cmp-right"):
                yield RunsChart(id="cmp-chart")
                table: DataTable[Text] = DataTable(id="cmp-values", cursor_type="none", zebra_stripes=True)
                for key, label in TABLE_COLUMNS:
                    table.add_column(label, key=key)
                yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TensorList).focus()  # the base class draws next

    @property
    def tensor_list(self) -> TensorList:
        return self.query_one(TensorList)

    @property
    def chart(self) -> RunsChart:
        return self.query_one(RunsChart)

    # ------------------------------------------------------------ refresh

    def refresh_data(self) -> None:
        app = self.host
        self._refresh_tensors()
        metric = app.metric
        tensor = app.tensor
        log_y = metric.log and app.log_y
        view = (tensor, metric, log_y, tuple((s.path, s.name) for s in app.slots))
        versions = tuple(s.version() for s in app.slots)
        if (view, versions) == self._chart_key:
            return  # nothing this screen shows has changed
        wait = self._drawn_at + LIVE_REDRAW_S - time.monotonic()
        if self._chart_key is not None and view == self._chart_key[0] and wait > 0:
            # Only live data moved on: draw it once the interval is over.
            if self._redraw_timer is None:
                self._redraw_timer = self.set_timer(wait, self._deferred_refresh)
            return
        self._chart_key = (view, versions)
        self._drawn_at = time.monotonic()
        runs = [s.data for s in app.slots]
        self.aligned = aligned = compare(runs, tensor, metric)
        what = inert(metric.label if not metric.per_tensor else f"{tensor or '(no tensor)'} · {metric.label}")
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append("compare ", style="dim")
        title.append(what, style="bold")
        if not metric.per_tensor:
            title.append("  (a scalar: the same for every tensor)", style="dim")
        title.append(f"   {len(runs)} runs · s: next statistic ({app.metric_position()})", style="dim")
        if log_y:
            title.append(" · log scale", style="dim")
        self.query_one("#cmp-title", Static).update(title)
        series = [(inert(slot.name), aligned.values[i], series_color(i)) for i, slot in enumerate(app.slots)]
        self.chart.show(what, aligned.steps, series, log_y=log_y)
        self._refresh_table(aligned)

    def _deferred_refresh(self) -> None:
        self._redraw_timer = None
        if self.is_current:
            self.refresh_view()

    def refresh_status(self) -> None:
        pass  # nothing here moves with the clock alone (statuses are on the run list)

    def _refresh_tensors(self) -> None:
        app = self.host
        every = app.tensor_names()
        names = filter_names(every, self.pattern)
        if names == self._names:
            return
        self._names = names
        title = f"tensors ({len(names)} of {len(every)})" if self.pattern else f"tensors ({len(every)})"
        self.query_one("#cmp-tensors-title", Static).update(title)
        lst = self.tensor_list
        lst.clear_options()
        lst.add_options([Option(Text(inert(n)), id=n) for n in names])  # Text: a name is never markup
        if app.tensor in names:
            lst.highlighted = names.index(app.tensor)
        elif names:
            lst.highlighted = 0
            app.tensor = names[0]

    def _refresh_table(self, aligned: Aligned) -> None:
        app = self.host
        table = self.query_one("#cmp-values", DataTable)
        order = [s.path for s in app.slots]
        if order[: len(self._order)] != self._order:  # a run went away (not expected): rebuild
            table.clear()
            self._cells.clear()
            self._order = []
        common = aligned.common_step
        at_common = aligned.at(common)
        last_steps, latest = aligned.latest()
        table.columns[ColumnKey("common")].label = Text("at common step" if common is None else f"at step {common}")
        for i, slot in enumerate(app.slots):
            row = aligned.values[i] if i < aligned.values.shape[0] else np.zeros(0)
            finite = row[np.isfinite(row)]
            cells = {
                "run": Text("━━ ", style=series_color(i)) + Text(inert(slot.name), style="bold"),
                "meta": Text(inert(slot.meta_text()), style="dim"),
                "last": Text("–" if i >= last_steps.size or last_steps[i] < 0 else str(int(last_steps[i])),
                             justify="right"),
                "latest": number_cell(latest[i] if i < latest.size and last_steps[i] >= 0 else None),
                "common": number_cell(at_common[i] if i < at_common.size else math.nan),
                "min": number_cell(finite.min() if finite.size else math.nan),
                "max": number_cell(finite.max() if finite.size else math.nan),
            }
            plain = {k: c.plain for k, c in cells.items()}
            old = self._cells.get(slot.path)
            if old is None:
                table.add_row(*(cells[k] for k, _ in TABLE_COLUMNS), key=slot.path)
                self._order.append(slot.path)
            else:
                for k, text in plain.items():
                    if old[k] != text:
                        table.update_cell(slot.path, k, cells[k], update_width=True)
            self._cells[slot.path] = plain

    # ------------------------------------------------------------- keys

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = event.option.id
        if name is not None and name != self.host.tensor:
            self.host.tensor = name
            self.refresh_data()

    def action_metric(self, direction: int) -> None:
        self.host.cycle_metric(direction)
        self.refresh_data()

    def action_log(self) -> None:
        self.host.log_y = not self.host.log_y
        self.refresh_data()

    def action_filter(self) -> None:
        box = self.query_one("#cmp-filter", Input)
        box.display = True
        box.value = self.pattern
        self.set_focus(box)  # at once (focus() waits a turn): the next keys typed belong in the box

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "cmp-filter":
            self.pattern = event.value.strip()
            self.refresh_data()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "cmp-filter":
            self.close_filter(clear=False)

    def on_key(self, event) -> None:
        if event.key == "escape" and self.focused is self.query_one("#cmp-filter", Input):
            self.close_filter(clear=True)
            event.stop()

    def close_filter(self, *, clear: bool) -> None:
        """Back to the list (at once, so the next keys move in it); esc also drops the filter."""
        box = self.query_one("#cmp-filter", Input)
        if clear:
            box.value = ""
        if self.pattern != box.value.strip():  # the box's Changed message may not have come yet
            self.pattern = box.value.strip()
            self.refresh_data()
        box.display = bool(self.pattern)
        self.set_focus(self.tensor_list)
