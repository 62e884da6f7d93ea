"""The timeline bar (position among the snapshots) and the go-to prompt.

The bar is one line: play state and speed, a track with a marker at the
shown row, and which snapshot/step/epoch that is. Clicking the track moves
the position there. The app owns the position; this widget draws it and asks to move it (`SeekStep`).
"""

from __future__ import annotations

import re

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from weighttui.tui.state import RedrawRequest, RunView, SeekStep


def timeline_text(view: RunView, width: int) -> Text:
    data = view.data
    n = data.n
    row = view.row
    out = Text(no_wrap=True, overflow="ellipsis")
    # at the latest snapshot (End), in watch and replay alike: live, or the run is over
    following = view.position is None and not view.playing
    if following and view.status in ("live", "loading", "waiting"):
        out.append("● live ", style="bold green")  # not "⏸": new snapshots come on screen as they arrive
    elif following:
        out.append("■ ended ", style="dim")  # following a run that is over: nothing more will come
    else:
        out.append("▶ " if view.playing else "⏸ ", style="bold")
        out.append(f"{view.speed:g}/s ", style="dim")
    if following and view.status not in ("live", "loading", "waiting"):
        out.append("latest ", style="bold")
    elif view.position is None:
        out.append("following ", style="bold green")
    else:
        out.append("replay    " if view.mode == "replay" else "scrubbing ", style="bold yellow")
    if n <= 0:
        out.append("─" * max(8, width - len(out) - 20), style="dim")
        out.append("  no snapshots yet", style="dim")
        return out
    step, epoch = view.step, view.epoch
    count = data.snapshot_count
    if count > n:  # thinned row view: the position among every snapshot (← → walk them all)
        index = view.snapshot_number
        label = f"  {index + 1}/{count}  step {step}"
        frac = index / max(1, count - 1)
    else:
        label = f"  {row + 1}/{n}  step {step}"
        frac = row / max(1, n - 1)
    if epoch >= 0:
        label += f"  epoch {epoch}"
    if count > n:
        label += f"  (charts thinned to {n})"
    track_w = max(8, width - len(out) - len(label))
    at = round(frac * (track_w - 1))
    out.append("━" * at, style="bold")
    out.append("●", style="bold yellow")
    out.append("─" * (track_w - at - 1), style="dim")
    out.append(label)
    return out


class Timeline(Static):
    DEFAULT_CSS = """
    Timeline { height: 1; background: $panel; padding: 0 1; }
    """

    _steps: np.ndarray | None = None  # the steps of the snapshots drawn (a click picks one)
    _plain = ""

    def show(self, view: RunView) -> None:
        text = timeline_text(view, self.size.width - 2 if self.size.width else 78)
        self._steps, self._plain = view.data.steps, text.plain
        self.update(text)

    def on_resize(self) -> None:
        self.post_message(RedrawRequest())  # drawn for another width: the screen draws it again

    def on_click(self, event: events.Click) -> None:
        steps, plain = self._steps, self._plain
        if steps is None:
            return
        n = steps.size
        start = plain.find("━") if "━" in plain else plain.find("●")
        end = plain.rfind("─") if "─" in plain else plain.find("●")
        if n <= 1 or start < 0 or end <= start:
            return
        frac = (event.x - 1 - start) / (end - start)
        if 0 <= frac <= 1:
            self.post_message(SeekStep(int(steps[round(frac * (n - 1))])))


def parse_goto(text: str, steps, epochs) -> int | None:
    """The row for "120" / "step 120" (the last snapshot at or before that step)
    or "e5" / "epoch 5" (the first snapshot of that epoch, or of the next one
    recorded). None if the text is neither or nothing matches."""
    m = re.fullmatch(r"\s*(?:(e|epoch)|(?:s|step))?\s*(-?\d+)\s*", text.lower())
    if not m or len(steps) == 0:
        return None
    value = int(m.group(2))
    if m.group(1):
        later = np.nonzero(np.asarray(epochs) >= value)[0]
        return int(later[0]) if later.size else None
    return max(0, int(np.searchsorted(np.asarray(steps), value, side="right")) - 1)


class GotoScreen(ModalScreen[str]):
    """Asks for a step ("1200") or an epoch ("e5"); dismisses with the text, or "" on escape."""

    DEFAULT_CSS = """
    GotoScreen { align: center middle; }
    GotoScreen > Vertical { width: 48; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [("escape", "cancel", "cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Go to step (e.g. 1200) or epoch (e.g. e5):")
            yield Input(placeholder="step or eN", id="goto-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss("")
