"""The scalars strip: loss, metrics, learning rate as sparklines with values.

Each scalar gets a cell of `CELL` characters (name, sparkline of its whole
history up to the timeline position, value there), laid out in as many
columns as fit, on at most `MAX_LINES` lines.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widgets import Static

from weighttui.log.text import inert
from weighttui.tui.formatting import fmt
from weighttui.tui.state import RedrawRequest, RunView
from weighttui.tui.widgets.sparkline import spark

MAX_LINES = 2
PRIORITY = ("loss", "val_loss", "accuracy", "acc", "val_accuracy", "lr", "learning_rate")


def ordered_names(names: list[str]) -> list[str]:
    """Loss first, then metrics people look for, then the rest in log order."""
    first = [n for n in PRIORITY if n in names]
    return first + [n for n in names if n not in first]


def scalars_text(view: RunView, width: int) -> Text:
    data = view.data
    names = ordered_names(data.scalar_names)
    if not names:
        return Text("")
    upto = view.step  # exact, also between a thinned row view's rows
    # Cells of at least 26 characters; with fewer scalars than fit on a line, each gets more room, so the
    # sparklines are wider (up to 60 characters a cell).
    per_line = max(1, min(width // 26, len(names)))
    cell = max(26, min(60, width // per_line))
    room = per_line * MAX_LINES
    lines = []
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, name in enumerate(names[:room]):
        steps, values = data.scalars(name)
        if upto is not None and view.position is not None:
            values = values[: int(np.searchsorted(steps, upto, side="right"))]
        shown = inert(name)
        label = shown if len(shown) <= 10 else shown[:9] + "…"
        spark_w = cell - 10 - 1 - 8 - 3
        piece = Text(no_wrap=True)
        piece.append(f"{label:<10} ", style="bold")
        piece.append(spark(values, spark_w), style="cyan")
        piece.append(" " + fmt(values[-1] if values.size else None, 8))
        piece.pad_right(cell - piece.cell_len)
        line.append_text(piece)
        if (i + 1) % per_line == 0:
            lines.append(line)
            line = Text(no_wrap=True, overflow="ellipsis")
    if line.plain:
        lines.append(line)
    if len(names) > room and lines:
        lines[-1].append(f" +{len(names) - room} more", style="dim")
    return Text("\n").join(lines)


class ScalarsPanel(Static):
    DEFAULT_CSS = """
    ScalarsPanel { height: auto; max-height: 2; padding: 0 1; }
    """

    def show(self, view: RunView) -> None:
        text = scalars_text(view, self.size.width - 2 if self.size.width else 78)
        self.display = bool(text.plain)
        self.update(text)

    def on_resize(self) -> None:
        self.post_message(RedrawRequest())  # drawn for another width: the screen draws it again
