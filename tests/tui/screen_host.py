"""A small App hosting one screen through the TUI contract (`RunHost`: `view()` and friends).

It holds a RunData read whole from a log (no follower thread), binds the
timeline keys at App level as the real app does, and redraws the active
screen (`refresh_view()`) after every timeline move and `feed()`. Screens
tested here then run unchanged inside `weighttui.tui.app.WeightApp`.
"""

from __future__ import annotations

import os

import numpy as np
from textual.app import App
from textual.binding import Binding
from textual.widgets import Static

import weighttui
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail
from weighttui.tui.screens.base import RefreshableScreen
from weighttui.tui.state import RunHost, RunView, SeekStep


class ScreenHost(App):
    ENABLE_COMMAND_PALETTE = False  # as in the real app
    BINDINGS = [
        Binding("left", "step(-1)", show=False),
        Binding("right", "step(1)", show=False),
        Binding("shift+left", "step(-10)", show=False),
        Binding("shift+right", "step(10)", show=False),
        Binding("home", "first", show=False),
        Binding("end", "last", show=False),
        Binding("escape", "back", show=False),
    ]

    def __init__(self, path=None, *, data: RunData | None = None, make_screen=None, alerts=None,
                 tensor_order=None, position: int | None = None):
        super().__init__()
        self.path = None if path is None else os.fspath(path)
        self.data = data if data is not None else weighttui.open(path)
        self.make_screen = make_screen
        self.alerts = list(alerts) if alerts is not None else []
        self.tensor_order = list(tensor_order) if tensor_order is not None else self.data.tensor_names
        self._position = position
        self.opened: list[str] = []  # tensors open_tensor() was asked for
        self.refreshes = 0
        self.mode, self.playing, self.speed = "replay", False, 10

    # the contract's timeline: a stored row, or None = following the latest
    @property
    def position(self) -> int | None:
        return self._position

    @position.setter
    def position(self, row: int | None) -> None:
        self._position = None if row is None else max(0, min(self.data.n - 1, int(row)))
        self.refresh_screen()

    @property
    def row(self) -> int:
        return self.data.n - 1 if self._position is None else self._position

    def view(self) -> RunView:
        by: dict[str, list] = {}
        for a in self.alerts:
            if a.tensor:
                by.setdefault(a.tensor, []).append(a)
        return RunView(data=self.data, row=self.row, position=self.position, alerts=tuple(self.alerts),
                       alerts_by_tensor=by, tensor_order=tuple(self.tensor_order), mode=self.mode,
                       playing=self.playing, speed=self.speed, path=self.path or "", title="host")

    def set_tensor_order(self, names: list[str]) -> None:
        self.tensor_order = list(names)

    def on_seek_step(self, message: SeekStep) -> None:
        steps = self.data.steps
        self.position = max(0, int(np.searchsorted(steps, message.step, side="right")) - 1)

    def compose(self):
        yield Static("host")

    def on_mount(self) -> None:
        if self.make_screen is not None:
            self.push_screen(self.make_screen())

    def refresh_screen(self) -> None:
        screen = self.screen
        if isinstance(screen, RefreshableScreen):
            with self.batch_update():
                screen.refresh_view()
        self.refreshes += 1

    def feed(self, tail: LogTail) -> bool:
        """Ingest what the log gained (as the real app does on the UI thread) and refresh."""
        changed = self.data.ingest(tail.poll())
        if changed:
            self.refresh_screen()
        return changed

    def open_tensor(self, name: str) -> None:
        from weighttui.tui.screens.detail import DetailScreen

        self.opened.append(name)
        self.push_screen(DetailScreen(name))

    def action_step(self, delta: int) -> None:
        if self.data.n:
            self.position = min(max(self.row + delta, 0), self.data.n - 1)

    def action_first(self) -> None:
        self.position = 0

    def action_last(self) -> None:
        self.position = None

    def action_back(self) -> None:
        if len(self.screen_stack) > 2:
            self.pop_screen()


assert issubclass(ScreenHost, RunHost)  # the host keeps to the contract


# ------------------------------------------------------------------ logs


def tanh_neuron_log(path, *, steps: int = 160, every: int = 2, nan_at: int | None = None) -> str:
    """A real little training run: one tanh neuron learning y = tanh(x1 + x2), so its two
    weights climb to 1.0; plus a wider hidden layer so there is more than one tensor.

    Deterministic (fixed seed); with `nan_at`, the hidden weights get a NaN from that step on.
    """
    import numpy as np

    from weighttui import Recorder

    rng = np.random.default_rng(7)
    x = rng.normal(size=(256, 2))
    y = np.tanh(x @ np.array([1.0, 1.0]))
    w = np.array([[0.1, -0.2]])
    b = np.zeros(1)
    hidden = rng.normal(0, 0.5, size=(16, 8))
    with Recorder(path, every=every, bins=16, sample=16, queue_size=4096) as rec:  # never drops
        for step in range(steps):
            out = np.tanh(x @ w[0] + b[0])
            err = (out - y) * (1 - out ** 2) / len(y)
            gw = (err @ x)[None, :]
            gb = np.array([err.sum()])
            gh = rng.normal(0, 1e-2, hidden.shape)
            params = {"neuron.weight": w, "neuron.bias": b, "hidden.weight": hidden.copy()}
            if nan_at is not None and step >= nan_at:
                params["hidden.weight"][0, 0] = np.nan
            rec.snapshot(step, params, grads={"neuron.weight": gw, "neuron.bias": gb, "hidden.weight": gh},
                         epoch=step // 50)
            w = w - 1.0 * gw
            b = b - 1.0 * gb
            hidden = hidden - 0.05 * gh
    return str(path)
