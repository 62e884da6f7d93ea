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


def latest_of(run, kind: str, stats, *, sparse=(), window: int = 64) -> dict[str, list[float | None]]:
    """{stat: latest(matrix, cover)} for several statistics of one kind, where cover is covered(run, kind)
    (and, for a stat in `sparse`, the stat not NaN: NaN between fits) and the matrix the stat's over the
    row view ("ratio/step": per_step_ratio's). The same values, without [rows, tensors] matrices: the row
    view's last `window` rows are read, then 4x as many before them while a tensor present earlier has no
    covered row yet (the latest covered row within a suffix of rows is the latest of all of them)."""
    t = len(run.tensors)
    out: dict[str, list[float | None]] = {s: [None] * t for s in stats}
    n = run.n
    if not stats or not t or not n or not run.has_kind(kind):
        return out
    every = list(run.columns(kind))  # covered: the block has a row for the tensor (not every statistic NaN)
    base = {s: s.partition("/")[0] for s in stats}
    keys = list(dict.fromkeys([*every, *base.values()]))
    shown = run.snapshot_index
    interval = step_interval(run) if any(s != b for s, b in base.items()) else None
    todo = {s: np.ones(t, dtype=bool) for s in stats}  # tensors whose latest covered row is still ahead
    hi = n
    while hi > 0:
        lo = max(0, hi - window)
        got = run.snapshots_stats(shown[lo:hi], [("weights", None)] + [(kind, k) for k in keys])
        present, m = got[0], dict(zip(keys, got[1:], strict=True))
        cover = present.copy()
        if every:
            blank = np.isnan(m[every[0]])
            for k in every[1:]:
                blank &= np.isnan(m[k])
            cover &= ~blank
        for s in stats:
            values = m[base[s]] if interval is None or s == base[s] else m[base[s]] / interval[lo:hi, None]
            cov = cover
            if s in sparse:
                with np.errstate(invalid="ignore"):
                    cov = cover & ~np.isnan(values)
            has = cov.any(axis=0) & todo[s]
            last = cov.shape[0] - 1 - np.argmax(cov[::-1], axis=0)
            for c in np.flatnonzero(has).tolist():
                out[s][c] = float(values[last[c], c])
            todo[s] &= ~has
        if not any(v.any() for v in todo.values()):
            break
        hi, window = lo, window * 4
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
