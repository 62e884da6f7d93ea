"""One tensor's statistics over time: which stored rows hold them, the latest value, and the
series the detail screen charts. One rule for the CLI and the TUI.

A row of a statistics block that does not cover a tensor (no gradient yet, no
delta at its first snapshot) is all NaN (docs/FORMAT.md). A covered row may
still hold a NaN or an Inf in one statistic (the norm of a tensor that is all
NaN): that is a value to show as such, not a missing one. So "the latest value"
is the value at the latest covered row, whatever it is, and None only when no
row covers the tensor.
"""

from __future__ import annotations

import numpy as np

from weighttui.analysis.diagnose import step_interval
from weighttui.data.run import RunData


def tensor_series(data: RunData, tensor: str, kind: str, *, start: int | None = None,
                  stop: int | None = None) -> dict[str, np.ndarray]:
    """{"steps": [N], stat: [N] ...} of one tensor and kind (weights / delta / grad).

    Update (delta) statistics also get "ratio_step": the update ratio divided
    by the steps one delta spans, so runs recorded every 1 and every 10 steps
    read alike. Without start/stop: the rows of the row view; with them:
    every snapshot whose step lies in [start, stop) (RunData's range reads).
    """
    out: dict[str, np.ndarray] = {"steps": np.zeros(0, dtype=np.int64)}
    if not data.has_kind(kind):
        return out
    for stat in data.columns(kind):
        steps, values = data.series(tensor, stat, kind, start=start, stop=stop)
        out[stat] = values
        out["steps"] = steps
    if kind == "delta" and "ratio" in out:
        if start is None and stop is None:
            col = [i for i, t in enumerate(data.tensors) if t.name == tensor][-1]
            rows = data.present[:, col]
            out["ratio_step"] = out["ratio"] / step_interval(data)[rows]
        else:
            out["ratio_step"] = out["ratio"] / _range_interval(data, out["steps"], start, stop)
    return out


def _range_interval(data: RunData, steps: np.ndarray, start: int | None, stop: int | None) -> np.ndarray:
    """Steps one delta spans at each of `steps` (snapshots of a range read, every one of them):
    the gap to the snapshot before it, as step_interval counts it (the run's first borrows the
    second's gap; at least 1)."""
    lo, hi = data.rows_for_steps(start, stop)
    first = max(0, lo - 1)
    every, _offsets = data.snapshot_rows(first, max(hi, min(first + 2, data.row_count)))
    gaps = np.ones(every.size)
    if every.size >= 2:
        d = np.diff(every).astype(np.float64)
        gaps[1:] = np.where(d > 0, d, 1.0)
        if first == 0:
            gaps[0] = gaps[1]
    at = np.clip(np.searchsorted(every, steps), 0, max(0, every.size - 1))
    return gaps[at] if every.size else np.ones(steps.size)


def covered(run, kind: str) -> np.ndarray:
    """[rows, tensors] booleans: the tensor was in the snapshot and the block has a row for it."""
    if not run.has_kind(kind) or not run.n:
        return np.zeros((run.n, len(run.tensors)), dtype=bool)
    blank = None  # every statistic NaN so far (one matrix at a time: no [rows, tensors, stats] stack)
    for s in run.columns(kind):
        nan = np.isnan(run.stat_matrix(kind, s, keep=False))
        blank = nan if blank is None else np.logical_and(blank, nan, out=blank)
    return run.present & ~blank if blank is not None else run.present.copy()


def latest(matrix: np.ndarray, cover: np.ndarray) -> list[float | None]:
    """Per tensor (column), the value at its latest covered row: a float (NaN/Inf kept) or None."""
    out: list[float | None] = []
    rows = np.arange(cover.shape[0])[:, None]
    last = np.where(cover, rows, -1).max(axis=0) if cover.shape[0] else np.full(cover.shape[1], -1)
    for c, r in enumerate(last.tolist()):
        out.append(None if r < 0 else float(matrix[r, c]))
    return out


def nonfinite_now(run) -> list[str]:
    """Tensors whose latest snapshot holds NaN or Inf values (weights; the run has diverged there)."""
    if not run.n or not run.tensors:
        return []
    present = run.present  # a weights block covers every tensor its snapshot names
    bad = np.zeros(present.shape[1], dtype=bool)
    for stat in ("nan", "inf"):
        if stat in run.columns("weights"):
            values = np.array([np.nan if v is None else v for v in latest(run.stat_matrix("weights", stat), present)])
            with np.errstate(invalid="ignore"):
                bad |= values > 0
    return [run.tensors[c].name for c in np.nonzero(bad)[0]]
