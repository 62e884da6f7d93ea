"""The `?` help screen: every key, grouped by what it does."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from weighttui.analysis.diagnose import RATIO_BAND
from weighttui.tui.formatting import fmt_band

SECTIONS = (
    ("Overview", (
        ("↑ ↓  j k", "move between tensors"),
        ("PgUp PgDn", "move a page"),
        ("enter / click", "open the tensor (or fold/unfold a layer group)"),
        ("/", "filter tensors by substring or glob (e.g. *attn*.weight); esc clears"),
        ("s", "cycle the sort: model order, name, update ratio, norm change, alerts"),
        ("z", "fold or unfold every layer group"),
    )),
    ("Timeline (every screen)", (
        ("← →", "previous / next snapshot"),
        ("shift+← →", "10 snapshots back / forward"),
        ("home", "first snapshot"),
        ("end", "latest snapshot, and follow new ones"),
        ("space", "play / stop"),
        ("+ -", "play faster / slower"),
        ("g", "go to a step (1200) or an epoch (e5)"),
        ("p", "pause the display (data keeps loading)"),
    )),
    ("Screens", (
        ("c", "change table (how much each tensor moved)"),
        ("!", "alerts"),
        ("ctrl+s", "save the screen as SVG (in $WEIGHTTUI_SCREENSHOT_DIR or the current directory)"),
        ("?", "this help"),
        ("esc", "back"),
        ("q", "quit"),
    )),
    ("Colours", (
        ("update ratio", f"green inside {fmt_band(RATIO_BAND[0])}..{fmt_band(RATIO_BAND[1])}, cyan ↓ below (slow), "
                          "red ↑ above (fast)"),
        ("✖ ▲", "error / warning alert on the tensor (✖ also for NaN/Inf values)"),
    )),
)


def help_table(sections=SECTIONS) -> Table:
    """Keys and their meaning, by section: [(title, [(key, text), ...]), ...]."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for title, rows in sections:
        table.add_row(Text(title, style="bold underline"), "")
        for key, text in rows:
            table.add_row(key, text)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [("escape,q,question_mark", "close", "close")]

    def __init__(self, sections=SECTIONS):
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_table(self.sections))

    def action_close(self) -> None:
        self.dismiss()
