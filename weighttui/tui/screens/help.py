"""The `?` help screen: the keys of the screen it was opened on, then those that work everywhere.

Each screen lists its own keys (`RefreshableScreen.KEYS_HELP`); the app adds the timeline and the
screen keys (`TIMELINE`, `SCREENS`). Escape or `?` closes the help; `q` quits, as everywhere.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from weighttui.analysis.diagnose import RATIO_BAND
from weighttui.tui.formatting import fmt_band

OVERVIEW = ("Overview", (
    ("↑ ↓  j k", "move between tensors"),
    ("PgUp PgDn", "move a page"),
    ("enter / click", "open the tensor (or fold/unfold a layer group)"),
    ("/", "filter tensors by substring or glob (e.g. *attn*.weight); esc clears"),
    ("s", "cycle the sort: model order, name, update ratio, norm change, alerts"),
    ("z", "fold or unfold every layer group"),
    ("m", "choose the metric columns (fewer columns, wider sparklines)"),
))
TIMELINE = ("Timeline (every screen)", (
    ("← →", "previous / next snapshot: every one of the log, also where a long run's charts are thinned"),
    ("shift+← →", "10 rows of the timeline back / forward (10 snapshots; on a thinned run, 10 of its rows)"),
    ("home", "first snapshot"),
    ("end", "latest snapshot, and follow new ones"),
    ("space", "play / stop (through every snapshot)"),
    ("+ -", "play faster / slower (snapshots a second)"),
    ("g  :", "go to a step (1200) or an epoch (e5); on the tensor screen, where g shows gradients: `:`"),
    ("p", "pause the display (data keeps loading)"),
))
SCREENS = ("Screens", (
    ("c", "change table (how much each tensor moved)"),
    ("!", "alerts"),
    ("ctrl+s", "save the screen as SVG (in $WEIGHTTUI_SCREENSHOT_DIR or the current directory)"),
    ("?", "this help (esc or ? closes it)"),
    ("esc", "back"),
    ("q", "quit"),
))
COLOURS = ("Colours", (
    ("update ratio", f"green inside {fmt_band(RATIO_BAND[0])}..{fmt_band(RATIO_BAND[1])}, cyan ↓ below (slow), "
                     "red ↑ above (fast), dim \"frozen\" when it does not move (or is not trainable)"),
    ("✖ ▲", "error / warning alert on the tensor (✖ also for NaN/Inf values)"),
    ("nan inf", "a statistic that is not finite; – where the log has no value"),
))
# The overview's help (other screens list their own keys first, then TIMELINE and SCREENS).
SECTIONS = (OVERVIEW, TIMELINE, SCREENS, COLOURS)


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
    # q quits, as on every other screen (a modal screen does not pass keys on to the app's bindings)
    BINDINGS = [("escape,question_mark", "close", "close"), ("q", "app.quit", "quit")]

    def __init__(self, sections=SECTIONS, *, title: str = ""):
        super().__init__()
        self.sections = sections
        self.title_text = title

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            if self.title_text:
                box.border_title = self.title_text
            yield Static(help_table(self.sections))

    def action_close(self) -> None:
        self.dismiss()
