"""Choose the overview's metric columns (key `m`): fewer columns give each a wider sparkline."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList

from weighttui.tui.widgets.layer_rows import METRICS


class ColumnsScreen(ModalScreen[tuple[str, ...] | None]):
    """Dismisses with the metric keys to show (in table order), or None on escape (no change)."""

    DEFAULT_CSS = """
    ColumnsScreen { align: center middle; }
    ColumnsScreen > Vertical { width: 44; height: auto; border: round $accent; background: $surface;
                               padding: 0 1; }
    ColumnsScreen SelectionList { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter", "done", "done", priority=True)]

    def __init__(self, shown: tuple[str, ...]):
        super().__init__()
        self.shown = shown

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Columns (space toggles, enter applies):")
            yield SelectionList[str](*((label, key, key in self.shown) for key, _k, _s, label, _l in METRICS))

    def action_done(self) -> None:
        chosen = set(self.query_one(SelectionList).selected)
        self.dismiss(tuple(key for key, *_ in METRICS if key in chosen))

    def action_cancel(self) -> None:
        self.dismiss(None)
