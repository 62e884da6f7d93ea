"""Choose the overview's metric columns (key `m`): fewer columns give each a wider sparkline."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList

from weighttui.tui.widgets.layer_rows import METRICS
from weighttui.tui.widgets.layer_table import METRIC_KEYS


class ColumnsScreen(ModalScreen[tuple[str, ...] | None]):
    """Dismisses with the metric keys to show (in table order), or None on escape (no change)."""

    DEFAULT_CSS = """
    ColumnsScreen { align: center middle; }
    ColumnsScreen > Vertical { width: 44; height: auto; border: round $accent; background: $surface;
                               padding: 0 1; }
    ColumnsScreen SelectionList { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter", "done", "done", priority=True)]

    def __init__(self, shown: tuple[str, ...], offered: frozenset[str] | None = None):
        """offered: the metric keys to list (offered_metrics: those the log has); None: every one."""
        super().__init__()
        self.shown = shown
        self.offered = offered

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Columns (space toggles, enter applies):")
            yield SelectionList[str](*((label, key, key in self.shown) for key, _k, _s, label, _l in METRICS
                                       if self.offered is None or key in self.offered or key in self.shown))

    def action_done(self) -> None:
        chosen = set(self.query_one(SelectionList).selected)
        self.dismiss(tuple(key for key, *_ in METRICS if key in chosen))

    def action_cancel(self) -> None:
        self.dismiss(None)


def offered_metrics(data) -> frozenset[str]:
    """The default columns, and the instruments' this log has (a column of a statistic no snapshot
    carried would stay empty)."""
    return frozenset(key for key, kind, stat, _label, _log in METRICS
                     if key in METRIC_KEYS or (data.has_kind(kind) and stat in data.columns(kind)))
