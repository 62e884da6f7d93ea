"""The `?` help of the multi-run viewer (the single-run help lists other keys)."""

from __future__ import annotations

from weighttui.tui.screens.help import HelpScreen

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
                   "the writer gone), waiting (file or header not there yet), error (unreadable), "
                   "queued (not read yet: a few runs are read at a time), diverged (NaN/Inf now)"),
        ("alerts", "ok, or the first alert's rule and how many more (--threshold KEY=VALUE sets the "
                   "rules' thresholds, as for one run); the highlighted run's alerts are listed under the "
                   "table; … until the run has been read"),
        ("snaps", "… while only a big log's latest snapshots are read (its history follows)"),
        ("at step N", "each run's value at the last step every run reached: like with like"),
    )),
)


class RunsHelpScreen(HelpScreen):
    """The help screen of the single-run viewer, listing the multi-run keys."""

    def __init__(self):
        super().__init__(SECTIONS)
