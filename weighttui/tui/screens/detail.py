"""The tensor detail screen: one tensor's histograms, percentiles, statistics and samples over time.

Opened by `open_tensor(name)` on the app (enter on a row). Keys: `[` / `]` previous
/ next tensor along the overview's order (`RunView.tensor_order`); `w` / `d` / `g` weights, update
(delta) or gradient statistics; `u` the per-unit norms strip instead of the histograms;
`n` the instrument charts on / off (by default on terminals at least 44 lines tall; on a short
one they take the place of the chart rows);
`l` linear / log density; `r` value range over the whole run / the snapshots shown;
`z` all snapshots up to the position / only the most recent (one per column);
`i` / `o` zoom in / out, `<` / `>` pan, `0` the whole run again: a zoomed range is read
at full resolution (screens/detail_zoom.py), and while zoomed ← → walk every snapshot
of the run (the timeline's row view may have thinned them); escape goes back. The
timeline keys belong to the app otherwise: this screen follows `RunView.row`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Footer, Static

from weighttui.analysis import heatmap
from weighttui.data.units import units_at
from weighttui.log.records import TensorInfo
from weighttui.log.schema import DEAD_WINDOW
from weighttui.log.text import inert
from weighttui.tui.formatting import fmt_stat
from weighttui.tui.screens import detail_zoom
from weighttui.tui.screens.base import RunScreen
from weighttui.tui.screens.detail_zoom import Span, Window
from weighttui.tui.state import RunView, SeekStep
from weighttui.tui.widgets.charts import BAND_COLORS, SERIES_COLORS, LineChart
from weighttui.tui.widgets.heatmap_view import HeatmapView, HistogramBars
from weighttui.tui.widgets.unit_strip import UnitStrip, exploding

Series = dict[str, np.ndarray]

KIND_NAMES = {"weights": "weights", "delta": "updates (delta)", "grad": "gradients"}
STAT_LABELS = {"ratio_step": "ratio/step", "zero_frac": "zeros", "changed_frac": "changed"}  # the statistics table

# (chart title, [(label, how to compute it from the series dict, colour)], log y)
CHARTS: dict[str, list[tuple[str, list[tuple[str, Callable[[Series], np.ndarray], str]], bool]]] = {
    "weights": [
        ("mean ± std", [("mean", lambda s: s["mean"], "cyan"),
                        ("+std", lambda s: s["mean"] + s["std"], "blue"),
                        ("-std", lambda s: s["mean"] - s["std"], "blue")], False),
        ("norm", [("norm", lambda s: s["norm"], "green")], False),
        ("min / max", [("max", lambda s: s["max"], "orange"), ("min", lambda s: s["min"], "magenta")], False),
        ("zero fraction", [("zeros", lambda s: s["zero_frac"], "red")], False),
    ],
    "delta": [
        ("update ratio per step", [("ratio", lambda s: s["ratio_step"], "yellow")], True),
        ("update norm", [("norm", lambda s: s["norm"], "green")], True),
        ("|Δ| max / mean", [("max", lambda s: s["max_abs"], "orange"), ("mean", lambda s: s["mean_abs"], "cyan")],
         True),
        ("changed fraction", [("changed", lambda s: s["changed_frac"], "red")], False),
    ],
}
CHARTS["grad"] = CHARTS["weights"]
# Instrument charts (docs/instruments.md), one row under the others when the log has them:
# (chart title, kind of the series, [(label, stat, colour)], log y, y range)
INSTRUMENT_CHARTS: dict[str, list[tuple[str, str, list[tuple[str, str, str]], bool, tuple | None]]] = {
    "weights": [("spectral norm sigma_max · stable rank", "weights",
                 [("sigma", "sigma_max", "green"), ("srank", "stable_rank", "blue")], True, None),
                ("distance from init |W-W0|/|W0|", "weights", [("dist", "dist_init", "cyan")], False, None),
                ("WeightWatcher alpha (its fits; alert outside 2..6)", "weights", [("alpha", "alpha", "magenta")],
                 False, None)],
    "delta": [("cos(update, previous update) · cos(update, gradient)", "delta",
               [("prev", "cos_prev", "yellow"), ("grad", "cos_grad", "magenta")], False, (-1.0, 1.0)),
              ("spectral update sigma(dW)/sigma(W)", "delta", [("ratio", "sigma_ratio", "orange")], True, None),
              # next to the update ratio (the view's first chart): what the optimizer made of the gradient
              ("optimizer: step size · moment norms · NaN/Inf", "optim",
               [("step", "eff_lr", "yellow"), ("|m|", "m_norm", "cyan"), ("|v|", "v_norm", "blue"),
                ("bad", "nonfinite", "red")], True, None)],
    "grad": [("dead units (gradient 0 for 3+ snapshots)", "grad", [("dead", "dead_units", "red")], False, None)],
}
INSTRUMENT_MIN_HEIGHT = 44  # the instrument row by default only on tall terminals (the others keep their room)
YLIM = {"zero fraction": (0.0, 1.0), "changed fraction": (0.0, 1.0)}  # fractions: the whole 0..1

# plotext is the slow part of this screen (tens of ms a chart): the heatmap, bars and header
# follow every timeline move and update at once, the charts catch up at most this often.
CHART_DELAY = 0.25


def _charts_of(data, view: str) -> list:
    """The view's instrument charts whose columns the log has (some snapshot carried one)."""
    return [c for c in INSTRUMENT_CHARTS[view] if data.has_kind(c[1])
            and any(stat in data.columns(c[1]) for _label, stat, _color in c[2])]


UNITS_CACHE = 4096  # snapshots' unit norms kept for the strip (one tensor's: a few KiB each)


def _ids(units: np.ndarray, most: int = 8) -> str:
    shown = " ".join(f"#{int(u)}" for u in units[:most])
    return shown + (f" +{units.size - most}" if units.size > most else "")


class DetailScreen(RunScreen):
    DEFAULT_CSS = """
    DetailScreen { layout: vertical; }
    DetailScreen #dhead { height: 3; padding: 0 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }
    DetailScreen #top { height: 2fr; }
    DetailScreen #heat { width: 3fr; }
    DetailScreen #units { width: 3fr; display: none; }
    DetailScreen #bars { width: 2fr; margin-left: 1; }
    DetailScreen #middle { height: 1fr; }
    DetailScreen #bottom { height: 1fr; }
    DetailScreen #instruments { height: 1fr; display: none; }
    """
    # The footer shows the first ones (esc back first: it must fit at 80 columns); all are in `?`.
    BINDINGS = [
        Binding("escape", "close", "back"),
        Binding("left_square_bracket", "move(-1)", "prev", show=False),
        Binding("right_square_bracket", "move(1)", "next tensor"),
        # in the footer when the log has instrument columns (check_action)
        Binding("n", "toggle_instruments", "instruments"),
        Binding("w", "kind('weights')", "weights", show=False),
        Binding("d", "kind('delta')", "delta", show=False),
        Binding("g", "kind('grad')", "grads", show=False),
        Binding("u", "toggle_units", "units", show=False),
        Binding("l", "toggle_log", "lin/log", show=False),
        Binding("r", "toggle_range", "range", show=False),
        Binding("z", "toggle_zoom", "recent", show=False),
        Binding("i", "zoom(0.5)", "zoom in", show=False),
        Binding("o", "zoom(2.0)", "zoom out", show=False),
        Binding("comma,less_than_sign", "pan(-1)", "pan back", show=False),
        Binding("full_stop,greater_than_sign", "pan(1)", "pan on", show=False),
        Binding("0", "reset_zoom", "whole run", show=False),
        # while zoomed, the timeline keys walk every snapshot (else they are the app's: SkipAction)
        Binding("left", "cursor(-1)", "back", show=False),
        Binding("right", "cursor(1)", "forward", show=False),
        Binding("shift+left", "cursor(-10)", "back 10", show=False),
        Binding("shift+right", "cursor(10)", "forward 10", show=False),
    ]
    HELP_TITLE = "tensor detail"
    KEYS_HELP = (("Tensor detail", (
        ("[ ]", "previous / next tensor (in the overview's order)"),
        ("w d g", "weights / updates (delta) / gradients"),
        ("u", "per-unit norms over time (units x snapshots) / histograms"),
        ("n", "instrument charts (sigma_max, dist_init, alpha, cosines, optimizer) on / off; "
              "on a short terminal in place of the chart rows"),
        ("l", "histogram density: linear / log"),
        ("r", "value range: the whole run / the snapshots shown"),
        ("z", "all snapshots up to the position / the latest, one per column"),
        ("i o", "zoom in / out around the position (every snapshot)"),
        ("< >  , .", "pan the zoomed range back / on by half its width"),
        ("0", "the whole run again (the timeline's rows)"),
        ("← → shift+← →", "while zoomed: one / ten snapshots of the whole log"),
        ("click", "on the heatmap or the strip: go to that snapshot"),
        ("esc", "back to the list"),
    )),)

    def __init__(self, name: str, *, kind: str = "weights"):
        super().__init__()
        self.tensor = name
        self.kind = kind
        self.log_density = False
        self.range_mode = "run"  # or "window": the snapshots shown
        self.zoom = "run"  # or "recent"
        self.span: Span | None = None  # the zoomed step range [start, stop); None: the whole run
        self.cursor: int | None = None  # a snapshot's step chosen inside the zoom (the row view may lack it)
        self.units = False  # the per-unit strip instead of the histogram heatmap
        self.window: Window | None = None  # what is drawn now
        self._pos_before: int | None = None  # the position step at the last draw
        self._recent: tuple | None = None  # `z` on a thinned run: the latest snapshots' histograms
        self._recent_key: tuple | None = None
        self._window_key: tuple | None = None
        self._units_cache: dict[tuple[str, int], tuple | None] = {}
        self._units_for: tuple | None = None  # the data the cache belongs to
        self._key: tuple | None = None
        self._charts_due: tuple | None = None  # arguments of the next chart redraw
        self._charts_for: tuple[str, str] | None = None  # (tensor, kind) the charts show
        self._chart_timer: Timer | None = None
        self._tall = False
        self._inst_shown = False  # the log has instrument columns for this tensor and view
        self.instruments: bool | None = None  # `n`: the instrument row on / off; None: on tall terminals

    def compose(self) -> ComposeResult:
        yield Static(id="dhead")
        with Horizontal(id="top"):
            yield HeatmapView(id="heat")
            yield UnitStrip(id="units")
            yield HistogramBars(id="bars")
        with Horizontal(id="middle"):
            yield LineChart(id="bands")
            yield LineChart(id="samples")
        with Horizontal(id="bottom"):
            for i in range(4):
                yield LineChart(id=f"stat{i}")
        with Horizontal(id="instruments"):
            for i in range(max(len(charts) for charts in INSTRUMENT_CHARTS.values())):
                yield LineChart(id=f"inst{i}")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if not self.view().data.has_kind(self.kind):
            self.kind = "weights"  # the base class draws next

    def on_resize(self, event: events.Resize) -> None:
        # small terminals: give the heatmap the room, drop the chart rows that would be unreadable
        self._tall = event.size.height >= INSTRUMENT_MIN_HEIGHT
        self._layout()

    def _layout(self) -> None:
        """Which chart rows fit: the instrument row when chosen (`n`) or on tall terminals; on a short
        terminal it takes the place of the percentile/statistics rows, as tall as the heatmap."""
        height = self.size.height
        inst = self._inst_shown and (self._tall if self.instruments is None else self.instruments)
        short = inst and not self._tall
        self.query_one("#bottom").display = height >= 34 and not short
        self.query_one("#middle").display = height >= 24 and not short
        row = self.query_one("#instruments")
        row.display = inst
        row.styles.height = "2fr" if short else "1fr"
        self.refresh_bindings()  # the footer's `n` follows whether there are instrument charts

    # ----------------------------------------------------------------- keys

    def action_move(self, delta: int) -> None:
        view = self.view()
        order = list(view.tensor_order or view.data.tensor_names)
        if not order:
            return
        i = order.index(self.tensor) if self.tensor in order else -delta if delta > 0 else 0
        self.tensor = order[(i + delta) % len(order)]
        self.refresh_data()

    def action_kind(self, kind: str) -> None:
        if not self.view().data.has_kind(kind):
            self.notify(f"this log has no {KIND_NAMES[kind]} statistics", severity="warning")
            return
        self.kind = kind
        self.refresh_data()

    def action_toggle_units(self) -> None:
        self.units = not self.units
        self.query_one(HeatmapView).display = not self.units
        self.query_one(UnitStrip).display = self.units
        self.refresh_data()
        self.call_after_refresh(self.refresh_data)  # again once the strip has its width

    def action_toggle_instruments(self) -> None:
        shown = self._tall if self.instruments is None else self.instruments
        self.instruments = not shown  # remembered while the screen is open (other tensors and views too)
        self._layout()
        if self.instruments and not self._inst_shown:
            views = ", ".join(f"{KIND_NAMES[v]} ({v[0]})" for v in self._instrument_views())
            self.notify(f"no instrument charts of {inert(self.tensor)} in this view; this log has them for: {views}",
                        severity="warning", markup=False)

    def _instrument_views(self) -> list[str]:
        """The views whose instrument charts have a column in this log (any tensor's)."""
        data = self.view().data
        return [view for view in INSTRUMENT_CHARTS if _charts_of(data, view)]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_instruments":
            return bool(self._instrument_views())  # a log without instrument columns: no key
        return True

    def action_toggle_log(self) -> None:
        self.log_density = not self.log_density
        self.refresh_data()

    def action_toggle_range(self) -> None:
        self.range_mode = "window" if self.range_mode == "run" else "run"
        self.refresh_data()

    def action_toggle_zoom(self) -> None:
        self.zoom = "recent" if self.zoom == "run" else "run"
        self.refresh_data()

    def action_zoom(self, factor: float) -> None:
        view = self.view()
        self.span = detail_zoom.zoom(view.data, self.span, self._position_step(view), factor)
        if self.span is None:
            self.cursor = None
        self.refresh_data()

    def action_pan(self, direction: int) -> None:
        self.span = detail_zoom.pan(self.view().data, self.span, direction)
        self.refresh_data()

    def action_reset_zoom(self) -> None:
        self.span = None
        self.cursor = None
        self.refresh_data()

    def action_cursor(self, delta: int) -> None:
        """While zoomed: move to the snapshot `delta` snapshots away, at full resolution."""
        view = self.view()
        data = view.data
        here = self._position_step(view)
        if self.span is None or here is None or not data.row_count:
            raise SkipAction()  # not zoomed: the app's timeline keys
        i = data.rows_for_steps(None, here + 1)[1] - 1
        j = min(max(i + delta, 0), data.row_count - 1)
        step = int(data.snapshot_rows(j, j + 1)[0][0])
        self.span = detail_zoom.follow(data, self.span, step)
        self.cursor = step
        self.post_message(SeekStep(step))  # the app's timeline follows (to the row at or before it)
        self.refresh_data()

    def on_seek_step(self, message: SeekStep) -> None:
        # a click on the zoomed heatmap names a snapshot the row view may lack: remember it exactly;
        # the message goes on to the app, whose timeline moves to the row at or before it
        if self.span is not None:
            self.cursor = message.step

    # -------------------------------------------------------------- refresh

    def _position_step(self, view: RunView) -> int | None:
        """The step the screen is at: the zoom's cursor while the app's timeline stays on it (or,
        for a host whose timeline holds only the row view's rows, on the row at or before it),
        else the timeline's position (exact: `RunView.step`, also between a thinned view's rows)."""
        data = view.data
        here = view.step
        cur = self.cursor
        if cur is not None and cur != here:
            steps = data.steps
            at = int(np.searchsorted(steps, cur, side="right")) - 1
            if self.span is None or here is None or at < 0 or int(steps[at]) != here:
                self.cursor = cur = None  # the timeline moved elsewhere: follow it
        return cur if cur is not None else here

    def _read(self, data, span: Span | None) -> Window:
        """The tensor's window, read again only when the rows of the range changed."""
        rows = data.rows_for_steps(*span) if span is not None else None
        key = (self.tensor, self.kind, span, rows, data.snapshot_count if span is None else None,
               data.n, data.resets, id(data.run))
        if key != self._window_key or self.window is None:
            self.window = detail_zoom.read(data, self.tensor, self.kind, span)
            self._window_key = key
        return self.window

    def _recent_span(self, data, win: Window, pos_step: int | None, columns: int) -> Span | None:
        """With `z` (the most recent snapshots, one per column) on a thinned row view: the steps of
        the last `columns` snapshots up to the position, to read at full resolution."""
        if self.zoom != "recent" or self.span is not None or win.full or pos_step is None or columns < 1:
            return None
        hi = data.rows_for_steps(None, pos_step + 1)[1]
        steps, _offsets = data.snapshot_rows(max(0, hi - columns), hi)
        return (int(steps[0]), int(steps[-1]) + 1) if steps.size else None

    def _recent_hist(self, data, span: Span):
        key = (self.tensor, self.kind, span, data.resets, id(data.run))
        if self._recent_key != key or self._recent is None:
            self._recent = data.histograms(self.tensor, self.kind, start=span[0], stop=span[1])
            self._recent_key = key
        return self._recent

    def refresh_data(self) -> None:
        """Redraw at the view's row (the app asks after updates and timeline moves)."""
        view = self.view()
        data = view.data
        row = view.row
        pos_step = self._position_step(view)
        if self.span is not None and pos_step is not None and pos_step != self._pos_before:
            # the timeline moved outside the zoomed range (home, play, a live run's latest): the range
            # follows it, keeping its width (panning away from the position leaves it be)
            self.span = detail_zoom.follow(data, self.span, pos_step)
        self._pos_before = pos_step
        strip_w = self.query_one(UnitStrip).size.width if self.units else 0
        key = (data.resets, data.snapshot_count, data.n, row, self.tensor, self.kind, self.log_density,
               self.range_mode, self.zoom, id(data.run), self.span, pos_step, self.units, strip_w)
        if key == self._key:
            return
        self._key = key
        try:
            info = data.tensor(self.tensor)
        except KeyError:
            head = Text(inert(self.tensor), style="bold red")
            head.append(": not in this run (yet)")
            self.query_one("#dhead", Static).update(head)
            return
        win = self._read(data, self.span)
        heat = self.query_one(HeatmapView)
        columns = heat.size.width - heat.GUTTER
        recent = self._recent_span(data, win, pos_step, columns)
        steps, lo, hi, counts = win.hist if recent is None else self._recent_hist(data, recent)
        stats = win.stats
        # the position between the row view's rows (the app's ← → walk every snapshot): its own
        # values and histogram, read from the store, for the header and the bars
        exact = self._exact(data, pos_step, stats)
        here = stats if exact is None else exact.stats
        self._header(view, info, pos_step, here, win, columns, recent_full=recent is not None)
        heat.show(steps, lo, hi, counts, position_step=pos_step, zoom=self.zoom, range_mode=self.range_mode,
                  log=self.log_density, message=f"no {KIND_NAMES[self.kind]} histograms in this log")
        if self.units:
            self._units(view, info, pos_step)
        self._bars(*((steps, lo, hi, counts) if exact is None or not exact.hist[0].size else exact.hist),
                   pos_step, here)
        self._charts_due = (view, win, pos_step, key)
        if (self.tensor, self.kind) != self._charts_for:  # another tensor or view: all at once
            self._flush_charts()
        elif self._chart_timer is None:
            self._chart_timer = self.set_timer(CHART_DELAY, self._flush_charts)

    def _exact(self, data, pos_step: int | None, stats: Series) -> Window | None:
        """The tensor at the position's own snapshot when the window drawn lacks it (a thinned row
        view); None when the window has it, or the snapshot did not cover the tensor."""
        steps = stats.get("steps")
        if pos_step is None or steps is None or (steps.size and bool((steps == pos_step).any())):
            return None
        win = detail_zoom.read(data, self.tensor, self.kind, (pos_step, pos_step + 1))
        return win if win.stats.get("steps", np.zeros(0)).size else None

    def _flush_charts(self) -> None:
        self._chart_timer = None
        if self._charts_due is None:
            return
        args, self._charts_due = self._charts_due, None
        self._charts_for = (self.tensor, self.kind)
        self._charts(*args)

    @staticmethod
    def _at(stats: Series, pos_step: int | None) -> int | None:
        steps = stats.get("steps")
        if steps is None or not steps.size or pos_step is None:
            return None
        i = int(np.searchsorted(steps, pos_step, side="right")) - 1
        return i if i >= 0 else None

    @staticmethod
    def _weights_nonfinite(data, name: str, step: int) -> bool:
        """Whether the tensor's weights hold NaN/Inf at the snapshot of `step`."""
        counts = [data.series(name, stat, "weights", start=step, stop=step + 1)[1] for stat in ("nan", "inf")
                  if stat in data.columns("weights")]
        return any(bool(np.nansum(c) > 0) for c in counts)

    def _header(self, view: RunView, info: TensorInfo, pos_step: int | None, stats: Series, win: Window,
                columns: int, *, recent_full: bool = False) -> None:
        data = view.data
        t = Text()
        t.append(inert(info.name), style="bold")
        shape = "x".join(map(str, info.shape)) or "scalar"
        t.append(f"  {shape}  {inert(info.dtype)}  layer {inert(info.layer) or '-'}")
        if not info.trainable:
            t.append("  (frozen)", style="yellow")
        second = Text()
        second.append("view ", style="dim")
        for kind, key in (("weights", "w"), ("delta", "d"), ("grad", "g")):
            if not data.has_kind(kind):
                second.append(f" {key}:{kind} ", style="dim strike")
            elif kind == self.kind and not self.units:
                second.append(f" {key}:{kind} ", style="reverse bold")
            else:
                second.append(f" {key}:{kind} ")
        second.append(" u:units ", style="reverse bold" if self.units else "")
        second.append("  ")
        second.append(win.label(self.span, columns if columns > 0 and not self.units else None),
                      style="bold" if self.span is not None else "")
        density = "log" if self.log_density else "linear"
        recent = " · most recent" + (", every snapshot" if recent_full else "") if self.zoom == "recent" else ""
        second.append(f"  density {density} · range {self.range_mode}{recent}", style="dim")
        first, t = t, Text()
        if pos_step is None:
            t.append("no snapshots yet", style="dim")
        else:
            where = "following" if view.position is None else "at timeline position"
            if self.cursor is not None:
                where = "zoom cursor"
            t.append(f"step {pos_step}", style="bold")
            index = data.rows_for_steps(None, pos_step + 1)[1]
            # read from the store at full resolution: the cursor's snapshot may be one the row view lacks
            epochs = data.snapshot_meta(index - 1, index)[1]
            if epochs.size and int(epochs[0]) >= 0:
                t.append(f" epoch {int(epochs[0])}")
            t.append(f" (snapshot {index}/{data.row_count}, {where})  ", style="dim")
            i = self._at(stats, pos_step)
            if i is None:
                t.append("this tensor has no statistics here", style="dim")
            else:
                shown = ("mean", "std", "min", "max", "norm", "zero_frac", "nan", "inf") if self.kind != "delta" \
                    else ("ratio_step", "norm", "max_abs", "mean_abs", "changed_frac")
                lost = self._weights_nonfinite(data, info.name, int(stats["steps"][i]))
                for stat in shown:
                    v = stats[stat][i]
                    label = STAT_LABELS.get(stat, stat)
                    bad = stat in ("nan", "inf") and v > 0
                    t.append(f"{label} ", style="dim")
                    t.append(f"{fmt_stat(stat, float(v), weights_nonfinite=lost)}  ", style="bold red" if bad else "")
        self.query_one("#dhead", Static).update(Text("\n").join([first, second, t]))

    # ------------------------------------------------------------ units

    def _unit_rows(self, data, pos_step: int | None, columns: int) -> np.ndarray:
        """Snapshot indices the strip reads: those of the range (or the most recent up to the
        position), every stride-th when there are more than columns (stride a power of two, so
        the rows stay the same as a live run grows), and the latest of them always."""
        lo, hi = data.rows_for_steps(*self.span) if self.span is not None else (0, data.row_count)
        if self.zoom == "recent" and pos_step is not None:
            hi = min(hi, data.rows_for_steps(None, pos_step + 1)[1])
            lo = max(lo, hi - columns)
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        stride = 1
        while -(-(hi - lo) // stride) > max(1, columns - 1):
            stride *= 2
        rows = np.arange(-(-lo // stride) * stride, hi, stride, dtype=np.int64)
        if not rows.size or rows[-1] != hi - 1:
            rows = np.append(rows, hi - 1)
        return rows

    def _unit_norms(self, data, rows: np.ndarray) -> list[tuple | None]:
        """(weights, grad) unit norms of the tensor at these snapshot indices, read from their
        frames (cached: the store does not keep them)."""
        ident = (data.path, data.resets, id(data.run))
        if ident != self._units_for or len(self._units_cache) > UNITS_CACHE:
            self._units_cache = {}
            self._units_for = ident
        if data.path is None or not rows.size:
            return [None] * int(rows.size)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        _steps, offsets = data.snapshot_rows(lo, hi)
        offs = offsets[rows - lo]
        want = [int(o) for o in offs if (self.tensor, int(o)) not in self._units_cache]
        if want:
            by_id = {t.id: t for t in data.tensors}
            try:
                got = units_at(data.path, want, self.tensor, by_id)
            except OSError:
                got = [None] * len(want)
            for o, g in zip(want, got, strict=True):
                self._units_cache[(self.tensor, o)] = g
        return [self._units_cache[(self.tensor, int(o))] for o in offs]

    def _units(self, view: RunView, info: TensorInfo, pos_step: int | None) -> None:
        data = view.data
        strip = self.query_one(UnitStrip)
        what = "gradients" if self.kind == "grad" else "weights"
        columns = max(1, strip.size.width - strip.GUTTER)
        rows = self._unit_rows(data, pos_step, columns)
        norms = self._unit_norms(data, rows)
        units = next((w.size for w in (n[0] for n in norms if n is not None)), 0)
        keep = [i for i, n in enumerate(norms) if n is not None and n[0].size == units]
        pairs = [n for n in norms if n is not None and n[0].size == units]
        if not units or not keep:
            strip.show(np.zeros(0), np.zeros((0, 0)), title=f"per-unit norms of {inert(info.name)}",
                       message="no per-unit norms for this tensor in this log (2-D and conv weights, "
                               "recorded with the 'units' instrument: docs/instruments.md)")
            return
        steps, _offs = data.snapshot_rows(int(rows[0]), int(rows[-1]) + 1)
        steps = steps[rows[keep] - rows[0]]
        w = np.stack([wn for wn, _gn in pairs]).astype(np.float64)
        g = np.stack([gn if gn is not None and gn.size == units else np.full(units, np.nan)
                      for _wn, gn in pairs]).astype(np.float64)
        stride = int(np.median(np.diff(rows))) if rows.size > 1 else 1
        res = "every snapshot" if stride <= 1 else f"every {detail_zoom.ordinal(stride)} snapshot"
        title = f"per-unit norms of {what}: {units} units × snapshots ({res})"
        strip.show(steps, g if self.kind == "grad" else w, w, g, position_step=pos_step, title=title,
                   summary=self._unit_summary(data, pos_step, units))

    def _unit_summary(self, data, pos_step: int | None, units: int) -> str:
        """Dead and exploding units at the position, by the rules of the dead_units and
        exploding_units columns (log/schema.py), naming which."""
        if pos_step is None:
            return ""
        end = data.rows_for_steps(None, pos_step + 1)[1]
        rows = np.arange(max(0, end - 3 * DEAD_WINDOW), end, dtype=np.int64)
        norms = [n for n in self._unit_norms(data, rows) if n is not None and n[0].size == units]
        if not norms:
            return f"step {pos_step}: no unit norms"
        hot = np.nonzero(exploding(norms[-1][0][None, :])[0])[0]
        grads = [n[1] for n in norms if n[1] is not None and n[1].size == units and not np.isnan(n[1]).all()]
        out = f"step {pos_step}: "
        if len(grads) >= DEAD_WINDOW:
            dead = np.nonzero(np.all(np.stack(grads[-DEAD_WINDOW:]) == 0, axis=0))[0]
            out += f"{dead.size} dead" + (f" {_ids(dead)}" if dead.size else "") + " · "
        return out + f"{hot.size} exploding" + (f" {_ids(hot)}" if hot.size else "")

    # ------------------------------------------------------------ panels

    def _bars(self, steps: np.ndarray, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray, pos_step: int | None,
              stats: Series) -> None:
        bars = self.query_one(HistogramBars)
        what = {"weights": "weights", "delta": "updates", "grad": "gradients"}[self.kind]
        if pos_step is None or not steps.size:
            bars.show(np.nan, np.nan, None, title=f"histogram of {what}", note=f"no {what} histograms")
            return
        i = int(np.searchsorted(steps, pos_step, side="right")) - 1
        if i < 0:
            bars.show(np.nan, np.nan, None, title=f"histogram of {what}", note="none at or before this step")
            return
        c = counts[i]
        j = self._at(stats, int(steps[i]))
        if self.kind != "delta" and j is not None:
            mean, std = float(stats["mean"][j]), float(stats["std"][j])
            src = ""
        else:  # delta blocks carry no mean/std: estimate them from the histogram
            mean, std = heatmap.hist_moments(lo[i], hi[i], c)
            src = " · μ,σ from bins"
        total = int(c.sum())
        title = f"{what} at step {int(steps[i])}: {total:,} values{src}"
        here = self._at(stats, pos_step)
        if int(steps[i]) != pos_step and here is not None and any(
                key in stats and float(stats[key][here]) > 0 for key in ("nan", "inf")):
            # the position's values are all NaN/Inf (no histogram to draw): say so, not just the older step
            title = f"{what} at step {pos_step}: NaN/Inf · shown: step {int(steps[i])}"
        bars.show(float(lo[i]), float(hi[i]), c, mean=mean, std=std, log=self.log_density, title=title)

    def _charts(self, view: RunView, win: Window, pos_step: int | None, key: tuple) -> None:
        data = view.data
        marker = pos_step
        steps, lo, hi, counts = win.hist
        stats = win.stats
        bands = heatmap.percentile_bands(lo, hi, counts) if steps.size else np.zeros((0, 9))
        series = [(f"p{q}" if q in (0, 50, 100) else "", bands[:, k], BAND_COLORS[k])
                  for k, q in enumerate(heatmap.PERCENTILES)]
        self.query_one("#bands", LineChart).show(
            "percentiles: p0 p50 p100, and 7 16 31 69 84 93 between", steps, series, marker=marker,
            key=key)
        s_steps, samples = win.samples
        info = data.tensor(self.tensor)
        traces = [("", samples[:, k], SERIES_COLORS[k % len(SERIES_COLORS)]) for k in range(samples.shape[1])]
        self.query_one("#samples", LineChart).show(
            f"sampled weights ({samples.shape[1]} of {info.size:,} elements)", s_steps, traces, marker=marker,
            key=key)
        for i, (title, lines, log_y) in enumerate(CHARTS[self.kind]):
            chart = self.query_one(f"#stat{i}", LineChart)
            if "steps" not in stats or not stats["steps"].size:
                chart.show(title, np.zeros(0), [], key=key)
                continue
            with np.errstate(all="ignore"):  # mean ± std of extreme values overflows to inf: drawn as such
                traces = [(label, fn(stats), color) for label, fn, color in lines]
            chart.show(title, stats["steps"], traces, marker=marker, log_y=log_y, key=key, ylim=YLIM.get(title))
        self._instrument_charts(data, win, marker, key)

    def _instrument_charts(self, data, win: Window, marker, key) -> None:
        """The instrument row, when the log has any of its columns: on tall terminals, or chosen with `n`."""
        shown = False
        charts = _charts_of(data, self.kind)
        for i, chart in enumerate(self.query("#instruments LineChart").results(LineChart)):
            chart.display = i < len(charts)
        for i, (title, kind, lines, log_y, ylim) in enumerate(charts):
            chart = self.query_one(f"#inst{i}", LineChart)
            series = detail_zoom.series(data, self.tensor, kind, self.span, win.full)
            traces = [(label, series[stat], color) for label, stat, color in lines
                      if stat in series and np.isfinite(series[stat]).any()]
            if not traces:  # in the log, not for this tensor here (alpha: no fit yet, or a matrix it skips)
                chart.show(title + ": no value for this tensor here", np.zeros(0), [], key=key)
                continue
            shown = True
            # (a line is drawn through its finite points: alpha's fits, NaN between)
            chart.show(title, series["steps"], traces, marker=marker, log_y=log_y, key=key, ylim=ylim)
        if shown != self._inst_shown:
            self._inst_shown = shown
            self._layout()
