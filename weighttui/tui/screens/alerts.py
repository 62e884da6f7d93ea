"""The alerts screen (key `!`): what looks wrong, where it began, what to try.

Lists `RunView.alerts` (computed by the app with `weighttui.analysis.diagnose`);
the highlighted alert's advice is shown below the list; enter opens its tensor
(`open_tensor` on the app), escape goes back.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from weighttui.analysis.diagnose import Alert
from weighttui.log.text import inert
from weighttui.tui.screens.base import RunScreen
from weighttui.tui.screens.change_table import RowTable

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}


class AlertsScreen(RunScreen):
    DEFAULT_CSS = """
    AlertsScreen { layout: vertical; }
    AlertsScreen #ahead { height: 1; padding: 0 1; background: $panel; }
    AlertsScreen DataTable { height: 1fr; }
    AlertsScreen #advice { height: auto; max-height: 6; padding: 0 1; border-top: solid $primary; }
    """
    BINDINGS = [
        Binding("escape", "close", "back"),
        Binding("enter", "open", "open tensor"),
    ]
    HELP_TITLE = "alerts"
    KEYS_HELP = (("Alerts", (
        ("↑ ↓  j k", "move between alerts; the advice below follows"),
        ("enter", "open the alert's tensor"),
        ("esc", "back"),
    )),)

    def __init__(self):
        super().__init__()
        self._shown: list[Alert] | None = None
        self._as_of: int | None = None  # the step the alerts are as of, in the header (a replay position)

    def compose(self) -> ComposeResult:
        yield Static(id="ahead")
        yield RowTable(id="alerts", cursor_type="row", zebra_stripes=True)
        yield Static(id="advice")
        yield Footer(compact=True)

    @property
    def table(self) -> RowTable:
        return self.query_one(RowTable)

    def on_mount(self) -> None:
        for label, key in (("severity", "severity"), ("rule", "rule"), ("tensor", "tensor"),
                           ("from step", "step"), ("what", "message")):
            self.table.add_column(label, key=key)
        self.table.focus()  # the base class draws next

    def refresh_data(self) -> None:
        view = self.view()
        alerts = list(view.alerts)
        as_of = view.alerts_as_of
        if alerts == self._shown and as_of == self._as_of:
            return
        self._shown, self._as_of = alerts, as_of
        table = self.table
        keep = table.cursor_row
        table.clear()
        for i, a in enumerate(alerts):
            style = SEVERITY_STYLE.get(a.severity, "")
            table.add_row(Text(a.severity, style=style), Text(a.rule), Text(inert(a.tensor or "(run)")),
                          Text(str(a.step), justify="right"), Text(inert(a.message)), key=str(i))
        if alerts:
            table.move_cursor(row=min(keep, len(alerts) - 1))
        errors = sum(1 for a in alerts if a.severity == "error")
        head = Text(no_wrap=True)
        head.append(f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}", style="bold")
        if as_of is not None:
            head.append(f" as of step {as_of}", style="bold")
        if alerts:
            head.append(f" · {errors} error{'s' if errors != 1 else ''}, {len(alerts) - errors} warnings",
                        style="dim")
            head.append(" · enter opens the tensor", style="dim")
        else:
            head.append(" · nothing looks wrong so far", style="dim")
        self.query_one("#ahead", Static).update(head)
        self._advice()

    def _current(self) -> Alert | None:
        if not self._shown:
            return None
        row = self.table.cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) else None

    def _advice(self) -> None:
        a = self._current()
        box = self.query_one("#advice", Static)
        if a is None:
            box.update("")
            return
        t = Text()
        t.append(inert(a.tensor or "the run"), style="bold")
        t.append(f", from step {a.step}: ")
        t.append(inert(a.message) + "\n")
        t.append("what it usually means / what to try: ", style="dim")
        t.append(inert(a.advice))
        box.update(t)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._advice()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        a = self._current()
        if a is None:
            return
        if a.tensor:
            self.host.open_tensor(a.tensor)
        else:
            self.notify("this alert is about the whole run, not one tensor")
