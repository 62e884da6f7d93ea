"""The tensor detail screen: one tensor's histograms, percentiles, statistics and samples over time.

Opened by `app.open_tensor(name)` (enter on a row). Keys: `[` / `]` previous
/ next tensor along `app.tensor_order`; `w` / `d` / `g` weights, update
(delta) or gradient statistics; `l` linear / log density; `r` value range
over the whole run / the snapshots shown; `z` all snapshots up to the
position / only the most recent (one per column); escape goes back. The
timeline keys belong to the app: this screen follows `app.row`.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static

from weighttui.analysis import heatmap
from weighttui.analysis.diagnose import step_interval
from weighttui.tui.widgets.charts import BAND_COLORS, SERIES_COLORS, LineChart
from weighttui.tui.formatting import fmt_value
from weighttui.tui.widgets.heatmap_view import HeatmapView, HistogramBars

KIND_NAMES = {"weights": "weights", "delta": "updates (delta)", "grad": "gradients"}

# (chart title, [(label, how to compute it from the series dict, colour)], log y)
CHARTS = {
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

# plotext is the slow part of this screen (tens of ms a chart): the heatmap, bars and header
# follow every timeline move and update at once, the charts catch up at most this often.
CHART_DELAY = 0.25


class DetailScreen(Screen):
    DEFAULT_CSS = """
    DetailScreen { layout: vertical; }
    DetailScreen #dhead { height: 3; padding: 0 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }
    DetailScreen #top { height: 2fr; }
    DetailScreen #heat { width: 3fr; }
    DetailScreen #bars { width: 2fr; margin-left: 1; }
    DetailScreen #middle { height: 1fr; }
    DetailScreen #bottom { height: 1fr; }
    """
    BINDINGS = [
        Binding("left_square_bracket", "move(-1)", "prev tensor"),
        Binding("right_square_bracket", "move(1)", "next tensor"),
        Binding("w", "kind('weights')", "weights"),
        Binding("d", "kind('delta')", "delta"),
        Binding("g", "kind('grad')", "grads"),
        Binding("l", "toggle_log", "lin/log"),
        Binding("r", "toggle_range", "range"),
        Binding("z", "toggle_zoom", "zoom"),
        Binding("escape", "close", "back"),
    ]

    def __init__(self, name: str, *, kind: str = "weights"):
        super().__init__()
        self.tensor = name
        self.kind = kind
        self.log_density = False
        self.range_mode = "run"  # or "window": the snapshots shown
        self.zoom = "run"  # or "recent"
        self._key = None
        self._charts_due = None  # arguments of the next chart redraw
        self._charts_for = None  # (tensor, kind) the charts show
        self._chart_timer = None

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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if not self.app.data.has_kind(self.kind):
            self.kind = "weights"
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def on_resize(self, event) -> None:
        # small terminals: give the heatmap the room, drop the chart rows that would be unreadable
        height = event.size.height
        self.query_one("#bottom").display = height >= 34
        self.query_one("#middle").display = height >= 24

    # ----------------------------------------------------------------- keys

    def action_close(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_move(self, delta: int) -> None:
        order = list(getattr(self.app, "tensor_order", None) or self.app.data.tensor_names)
        if not order:
            return
        i = order.index(self.tensor) if self.tensor in order else -delta if delta > 0 else 0
        self.tensor = order[(i + delta) % len(order)]
        self.refresh_data()

    def action_kind(self, kind: str) -> None:
        if not self.app.data.has_kind(kind):
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
        """Redraw from app.data at app.row (the app calls this after updates and timeline moves)."""
        app = self.app
        data = app.data
        row = app.row
        key = (data.resets, data.snapshot_count, data.n, row, self.tensor, self.kind, self.log_density,
               self.range_mode, self.zoom, id(data.run))
        if key == self._key:
            return
        self._key = key
        try:
            info = data.tensor(self.tensor)
        except KeyError:
            self.query_one("#dhead", Static).update(Text(f"{self.tensor}: not in this run (yet)", style="bold red"))
            return
        pos_step = int(data.steps[row]) if 0 <= row < data.n else None
        steps, lo, hi, counts = data.histograms(self.tensor, self.kind)
        stats = self._series()
        self._header(info, row, pos_step, stats)
        self.query_one(HeatmapView).show(
            steps, lo, hi, counts, position_step=pos_step, zoom=self.zoom, range_mode=self.range_mode,
            log=self.log_density, message=f"no {KIND_NAMES[self.kind]} histograms in this log")
        self._bars(steps, lo, hi, counts, pos_step, stats)
        self._charts_due = (steps, lo, hi, counts, pos_step, stats, key)
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

    def _series(self) -> dict:
        """{"steps": [N], stat: [N]} of this tensor and kind, plus per-step ratio for deltas."""
        data = self.app.data
        out = {}
        if not data.has_kind(self.kind):
            return {"steps": np.zeros(0, dtype=np.int64)}
        for stat in data.columns(self.kind):
            steps, values = data.series(self.tensor, stat, self.kind)
            out[stat] = values
            out["steps"] = steps
        if self.kind == "delta" and "ratio" in out:
            col = [i for i, t in enumerate(data.tensors) if t.name == self.tensor][-1]
            rows = data.present[:, col]
            out["ratio_step"] = out["ratio"] / step_interval(data)[rows]
        return out

    def _at(self, stats: dict, pos_step) -> int | None:
        steps = stats.get("steps")
        if steps is None or not steps.size or pos_step is None:
            return None
        i = int(np.searchsorted(steps, pos_step, side="right")) - 1
        return i if i >= 0 else None

    def _header(self, info, row, pos_step, stats) -> None:
        data = self.app.data
        t = Text()
        t.append(info.name, style="bold")
        shape = "x".join(map(str, info.shape)) or "scalar"
        t.append(f"  {shape}  {info.dtype}  layer {info.layer or '-'}")
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
        second.append(f"  density {'log' if self.log_density else 'linear'} · range {self.range_mode} · zoom {self.zoom}",
                 style="dim")
        first, t = t, Text()
        if pos_step is None:
            t.append("no snapshots yet", style="dim")
        else:
            where = "following" if getattr(self.app, "position", None) is None else "at timeline position"
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
                    label = {"ratio_step": "ratio/step", "zero_frac": "zeros", "changed_frac": "changed"}.get(stat, stat)
                    bad = stat in ("nan", "inf") and v > 0
                    t.append(f"{label} ", style="dim")
                    t.append(f"{fmt_value(v, 0).strip()}  ", style="bold red" if bad else "")
        self.query_one("#dhead", Static).update(Text("\n").join([first, second, t]))

    def _bars(self, steps, lo, hi, counts, pos_step, stats) -> None:
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
            mean, std = _hist_moments(lo[i], hi[i], c)
            src = " · μ,σ from bins"
        total = int(c.sum())
        bars.show(float(lo[i]), float(hi[i]), c, mean=mean, std=std, log=self.log_density,
                  title=f"{what} at step {int(steps[i])}: {total:,} values{src}")

    def _charts(self, steps, lo, hi, counts, pos_step, stats, key) -> None:
        data = self.app.data
        marker = pos_step
        bands = heatmap.percentile_bands(lo, hi, counts) if steps.size else np.zeros((0, 9))
        series = [(f"p{q}" if q in (0, 50, 100) else "", bands[:, k], BAND_COLORS[k])
                  for k, q in enumerate(heatmap.PERCENTILES)]
        self.query_one("#bands", LineChart).show(
            "percentiles 0 7 16 31 50 69 84 93 100", steps, series, marker=marker,
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
                       marker=marker, log_y=log_y, key=key)


def _hist_moments(lo: float, hi: float, counts) -> tuple[float, float]:
    total = counts.sum()
    if not total or not (np.isfinite(lo) and np.isfinite(hi)):
        return float("nan"), float("nan")
    if hi == lo:
        return float(lo), 0.0
    edges = np.linspace(lo, hi, counts.size + 1)
    mid = (edges[:-1] + edges[1:]) / 2
    mean = float((counts * mid).sum() / total)
    return mean, float(np.sqrt(max(0.0, (counts * (mid - mean) ** 2).sum() / total)))
