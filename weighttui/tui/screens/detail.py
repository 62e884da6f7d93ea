"""The tensor detail screen: one tensor's histograms, percentiles, statistics and samples over time.

Opened by `open_tensor(name)` on the app (enter on a row). Keys: `[` / `]` previous
/ next tensor along the overview's order (`RunView.tensor_order`); `w` / `d` / `g` weights, update
(delta) or gradient statistics; `l` linear / log density; `r` value range
over the whole run / the snapshots shown; `z` all snapshots up to the
position / only the most recent (one per column); escape goes back. The
timeline keys belong to the app: this screen follows `RunView.row`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Footer, Static

from weighttui.analysis import heatmap
from weighttui.analysis.series import tensor_series
from weighttui.log.records import TensorInfo
from weighttui.log.text import inert
from weighttui.tui.formatting import fmt_value
from weighttui.tui.screens.base import RunScreen
from weighttui.tui.state import RunView
from weighttui.tui.widgets.charts import BAND_COLORS, SERIES_COLORS, LineChart
from weighttui.tui.widgets.heatmap_view import HeatmapView, HistogramBars

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
    "weights": [("spectral norm sigma_max", "weights", [("sigma", "sigma_max", "green")], False, None),
                ("distance from init |W-W0|/|W0|", "weights", [("dist", "dist_init", "cyan")], False, None)],
    "delta": [("cos(update, previous update) · cos(update, gradient)", "delta",
               [("prev", "cos_prev", "yellow"), ("grad", "cos_grad", "magenta")], False, (-1.0, 1.0)),
              ("spectral update sigma(dW)/sigma(W)", "delta", [("ratio", "sigma_ratio", "orange")], True, None)],
    "grad": [("dead units (gradient 0 for 3+ snapshots)", "grad", [("dead", "dead_units", "red")], False, None),
             ("optimizer: Adam step size · moment norms", "optim",
              [("step", "eff_lr", "yellow"), ("|m|", "m_norm", "cyan"), ("|v|", "v_norm", "blue")], True, None)],
}
INSTRUMENT_MIN_HEIGHT = 44  # the instrument row only on tall terminals (the others keep their room)
YLIM = {"zero fraction": (0.0, 1.0), "changed fraction": (0.0, 1.0)}  # fractions: the whole 0..1

# plotext is the slow part of this screen (tens of ms a chart): the heatmap, bars and header
# follow every timeline move and update at once, the charts catch up at most this often.
CHART_DELAY = 0.25


class DetailScreen(RunScreen):
    DEFAULT_CSS = """
    DetailScreen { layout: vertical; }
    DetailScreen #dhead { height: 3; padding: 0 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }
    DetailScreen #top { height: 2fr; }
    DetailScreen #heat { width: 3fr; }
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
        Binding("w", "kind('weights')", "weights", show=False),
        Binding("d", "kind('delta')", "delta", show=False),
        Binding("g", "kind('grad')", "grads", show=False),
        Binding("l", "toggle_log", "lin/log", show=False),
        Binding("r", "toggle_range", "range", show=False),
        Binding("z", "toggle_zoom", "zoom", show=False),
    ]
    HELP_TITLE = "tensor detail"
    KEYS_HELP = (("Tensor detail", (
        ("[ ]", "previous / next tensor (in the overview's order)"),
        ("w d g", "weights / updates (delta) / gradients"),
        ("l", "histogram density: linear / log"),
        ("r", "value range: the whole run / the snapshots shown"),
        ("z", "zoom: every snapshot up to the position / the most recent"),
        ("click", "on the heatmap: move the timeline there"),
        ("esc", "back to the list"),
    )),)

    def __init__(self, name: str, *, kind: str = "weights"):
        super().__init__()
        self.tensor = name
        self.kind = kind
        self.log_density = False
        self.range_mode = "run"  # or "window": the snapshots shown
        self.zoom = "run"  # or "recent"
        self._key: tuple | None = None
        self._charts_due: tuple | None = None  # arguments of the next chart redraw
        self._charts_for: tuple[str, str] | None = None  # (tensor, kind) the charts show
        self._chart_timer: Timer | None = None
        self._tall = False
        self._inst_shown = False  # the log has instrument columns for this tensor and view

    def compose(self) -> ComposeResult:
        yield Static(id="dhead")
        with Horizontal(id="top"):
            yield HeatmapView(id="heat")
            yield HistogramBars(id="bars")
        with Horizontal(id="middle"):
            yield LineChart(id="bands")
            yield LineChart(id="samples")
        with Horizontal(id="bottom"):
            for i in range(4):
                yield LineChart(id=f"stat{i}")
        with Horizontal(id="instruments"):
            for i in range(2):
                yield LineChart(id=f"inst{i}")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if not self.view().data.has_kind(self.kind):
            self.kind = "weights"  # the base class draws next

    def on_resize(self, event: events.Resize) -> None:
        # small terminals: give the heatmap the room, drop the chart rows that would be unreadable
        height = event.size.height
        self.query_one("#bottom").display = height >= 34
        self.query_one("#middle").display = height >= 24
        self._tall = height >= INSTRUMENT_MIN_HEIGHT
        self.query_one("#instruments").display = self._inst_shown and self._tall

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

    def action_toggle_log(self) -> None:
        self.log_density = not self.log_density
        self.refresh_data()

    def action_toggle_range(self) -> None:
        self.range_mode = "window" if self.range_mode == "run" else "run"
        self.refresh_data()

    def action_toggle_zoom(self) -> None:
        self.zoom = "recent" if self.zoom == "run" else "run"
        self.refresh_data()

    # -------------------------------------------------------------- refresh

    def refresh_data(self) -> None:
        """Redraw at the view's row (the app asks after updates and timeline moves)."""
        view = self.view()
        data = view.data
        row = view.row
        key = (data.resets, data.snapshot_count, data.n, row, self.tensor, self.kind, self.log_density,
               self.range_mode, self.zoom, id(data.run))
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
        pos_step = int(data.steps[row]) if 0 <= row < data.n else None
        steps, lo, hi, counts = data.histograms(self.tensor, self.kind)
        stats = tensor_series(data, self.tensor, self.kind)
        self._header(view, info, pos_step, stats)
        self.query_one(HeatmapView).show(
            steps, lo, hi, counts, position_step=pos_step, zoom=self.zoom, range_mode=self.range_mode,
            log=self.log_density, message=f"no {KIND_NAMES[self.kind]} histograms in this log")
        self._bars(steps, lo, hi, counts, pos_step, stats)
        self._charts_due = (view, steps, lo, hi, counts, pos_step, stats, key)
        if (self.tensor, self.kind) != self._charts_for:  # another tensor or view: all at once
            self._flush_charts()
        elif self._chart_timer is None:
            self._chart_timer = self.set_timer(CHART_DELAY, self._flush_charts)

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

    def _header(self, view: RunView, info: TensorInfo, pos_step: int | None, stats: Series) -> None:
        data = view.data
        row = view.row
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
            elif kind == self.kind:
                second.append(f" {key}:{kind} ", style="reverse bold")
            else:
                second.append(f" {key}:{kind} ")
        density = "log" if self.log_density else "linear"
        second.append(f"  density {density} · range {self.range_mode} · zoom {self.zoom}", style="dim")
        first, t = t, Text()
        if pos_step is None:
            t.append("no snapshots yet", style="dim")
        else:
            where = "following" if view.position is None else "at timeline position"
            t.append(f"step {pos_step}", style="bold")
            epoch = int(data.epochs[row])
            if epoch >= 0:
                t.append(f" epoch {epoch}")
            t.append(f" (snapshot {row + 1}/{data.n}, {where})  ", style="dim")
            i = self._at(stats, pos_step)
            if i is None:
                t.append("this tensor has no statistics here", style="dim")
            else:
                shown = ("mean", "std", "min", "max", "norm", "zero_frac", "nan", "inf") if self.kind != "delta" \
                    else ("ratio_step", "norm", "max_abs", "mean_abs", "changed_frac")
                for stat in shown:
                    v = stats[stat][i]
                    label = STAT_LABELS.get(stat, stat)
                    bad = stat in ("nan", "inf") and v > 0
                    t.append(f"{label} ", style="dim")
                    t.append(f"{fmt_value(v, 0).strip()}  ", style="bold red" if bad else "")
        self.query_one("#dhead", Static).update(Text("\n").join([first, second, t]))

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
        bars.show(float(lo[i]), float(hi[i]), c, mean=mean, std=std, log=self.log_density,
                  title=f"{what} at step {int(steps[i])}: {total:,} values{src}")

    def _charts(self, view: RunView, steps: np.ndarray, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray,
                pos_step: int | None, stats: Series, key: tuple) -> None:
        data = view.data
        marker = pos_step
        bands = heatmap.percentile_bands(lo, hi, counts) if steps.size else np.zeros((0, 9))
        series = [(f"p{q}" if q in (0, 50, 100) else "", bands[:, k], BAND_COLORS[k])
                  for k, q in enumerate(heatmap.PERCENTILES)]
        self.query_one("#bands", LineChart).show(
            "percentiles: p0 p50 p100, and 7 16 31 69 84 93 between", steps, series, marker=marker,
            key=key)
        s_steps, samples = data.samples(self.tensor)
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
            chart.show(title, stats["steps"], [(label, fn(stats), color) for label, fn, color in lines],
                       marker=marker, log_y=log_y, key=key, ylim=YLIM.get(title))
        self._instrument_charts(data, marker, key)

    def _instrument_charts(self, data, marker, key) -> None:
        """The instrument row: shown on tall terminals when the log has any of its columns."""
        shown = False
        for i, (title, kind, lines, log_y, ylim) in enumerate(INSTRUMENT_CHARTS[self.kind]):
            chart = self.query_one(f"#inst{i}", LineChart)
            series = tensor_series(data, self.tensor, kind) if data.has_kind(kind) else {}
            traces = [(label, series[stat], color) for label, stat, color in lines
                      if stat in series and np.isfinite(series[stat]).any()]
            if not traces:
                chart.show(title + ": not in this log", np.zeros(0), [], key=key)
                continue
            shown = True
            chart.show(title, series["steps"], traces, marker=marker, log_y=log_y, key=key, ylim=ylim)
        self._inst_shown = shown
        self.query_one("#instruments").display = shown and self._tall

