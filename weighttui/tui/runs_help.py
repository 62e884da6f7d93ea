"""The `?` help of the multi-run viewer (the single-run help lists other keys)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

SECTIONS = (
    ("Run list", (
        ("↑ ↓  j k", "move between runs"),
        ("enter", "open the run in the single-run viewer (q there comes back here)"),
    )),
    ("Comparison", (
        ("↑ ↓  j k", "choose the tensor (names the runs have in common)"),
        ("/", "filter tensors by substring or glob (e.g. *attn*.weight); esc clears"),
        ("s  S", "next / previous statistic: weights norm, std, update ratio, grad norm, then scalars"),
        ("l", "log / linear y axis (update ratio and grad norm start on log)"),
    )),
    ("Everywhere", (
        ("tab", "switch between the run list and the comparison"),
        ("?", "this help"),
        ("q", "quit"),
    )),
    ("Columns", (
        ("status", "live, finished, failed, interrupted, stalled (no growth for 30 s, or 10 s with "
                   "the writer gone), waiting (file or header not there yet), error (unreadable)"),
        ("at step N", "each run's value at the last step every run reached: like with like"),
    )),
)


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for title, rows in SECTIONS:
        table.add_row(Text(title, style="bold underline"), "")
        for key, text in rows:
            table.add_row(key, text)
        table.add_row("", "")
    return table


class RunsHelpScreen(ModalScreen):
    DEFAULT_CSS = """
    RunsHelpScreen { align: center middle; }
    RunsHelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: round $accent;
                                      background: $surface; padding: 0 1; }
    """
    BINDINGS = [("escape,q,question_mark", "close", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_table())

    def action_close(self) -> None:
        self.dismiss()
