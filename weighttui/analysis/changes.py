"""The change table: how much each tensor moves, one row per tensor. No textual.

Used by the app's change screen (key `c`) and `weighttui export --format
changes`. Update ratios are per optimizer step (a delta spans one writer
snapshot interval; see diagnose.step_interval), so the 1e-4..1e-2 band and
the ~1e-3 rule of thumb apply whatever `every` the writer used.
"""

from __future__ import annotations

import numpy as np

from weighttui.analysis.diagnose import DiagnoseConfig, quiet_nan, step_interval

COLUMNS = (
    "ratio",  # update ratio per step at the row
    "ratio_mean",  # its mean over the last `window` snapshots
    "update_norm",  # norm of the last update (delta)
    "max_abs",  # largest absolute change of one element in it
    "changed_frac",  # fraction of elements that changed in it
    "norm_change",  # relative change of the weight norm since the tensor's first snapshot
    "change_ab",  # |w_b - w_a| / |w_a| between the marked snapshots (complete values or samples)
)

# Complete values are read from the log for the marks only up to this many elements in all.
EXACT_LIMIT = 20_000_000

LABELS = {
    "tensor": "tensor",
    "ratio": "ratio/step",
    "ratio_mean": "mean ratio",
    "update_norm": "update norm",
    "max_abs": "max |Δ|",
    "changed_frac": "changed",
    "norm_change": "norm Δ since start",
    "change_ab": "change a→b",
    "flag": "flag",
}

FLAGS = ("nonfinite", "stagnant", "fast", "")


def _latest_columns(run) -> tuple[list[str], np.ndarray]:
    """Tensor names once each and the column holding each (a re-declared name: the newest)."""
    last = {}
    for i, t in enumerate(run.tensors):
        last[t.name] = i
    names = list(last)
    return names, np.array([last[nm] for nm in names], dtype=np.int64)


def _last_present(present: np.ndarray, row: int) -> np.ndarray:
    """Per column, the last row <= row where the tensor was present, or -1."""
    window = present[: row + 1][::-1]
    found = window.any(axis=0)
    return np.where(found, row - np.argmax(window, axis=0), -1)


def snapshot_step(run, step: int | None) -> int | None:
    """The step of the run's last snapshot at or before `step`, at full resolution (every
    snapshot, also those a thinned row view lacks); None if there is none or step is None."""
    if step is None:
        return None
    hi = run.rows_for_steps(None, int(step) + 1)[1]
    return int(run.snapshot_meta(hi - 1, hi)[0][0]) if hi > 0 else None


def _sample_change(run, name: str, step_a: int, step_b: int) -> float:
    sa, sb = _sample_at(run, name, step_a), _sample_at(run, name, step_b)
    if sa is None or sb is None:
        return float("nan")
    return _relative_change(sa, sb)


def _relative_change(a: np.ndarray, b: np.ndarray) -> float:
    """|b - a| / |a| over the elements finite in both (float64); NaN when none is: a tensor that became
    all NaN did not "not change"."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan")
    base, diff = np.linalg.norm(a[ok]), np.linalg.norm(b[ok] - a[ok])
    if base == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / base)


def _sample_at(run, name: str, step: int) -> np.ndarray | None:
    """The tensor's samples at the snapshot of `step`, or None (not covered, none sampled).

    A range read of that step alone: reading the samples of every row would read every
    snapshot frame again in a store without an index (data/store/fromlog.py)."""
    steps, values = run.samples(name, start=step, stop=step + 1)
    if values.shape[1] == 0 or not steps.size:
        return None
    return values[0]


_values_cache: dict = {}  # (id(run), run_id, step) -> {name: array}; the last two marks read


def _values_at(run, step: int):
    owner = getattr(run, "data", run)  # the RunData behind a RowsUpTo (RunData.upto_snapshot)
    key = (id(owner), getattr(run.run, "run_id", None), run.resets, step)
    if key not in _values_cache:
        if len(_values_cache) >= 2:
            _values_cache.pop(next(iter(_values_cache)))
        _values_cache[key] = run.weights(step=step)
    return _values_cache[key]


def _exact_change(run, names, step_a: int, step_b: int):
    """|w_b - w_a| / |w_a| from complete values stored at both steps, or None if not stored."""
    full = set(run.full_steps)
    if step_a not in full or step_b not in full:
        return None
    if sum(run.tensor(nm).size for nm in names) > EXACT_LIMIT:
        return None
    try:
        wa, wb = _values_at(run, step_a), _values_at(run, step_b)
    except (KeyError, OSError):
        return None
    out = np.full(len(names), np.nan)
    for i, nm in enumerate(names):
        if nm in wa and nm in wb and wa[nm].shape == wb[nm].shape:
            out[i] = _relative_change(wa[nm], wb[nm])
    return out


def change_table(run, *, row: int | None = None, window: int = 10, mark_a: int | None = None,
                 mark_b: int | None = None, config: DiagnoseConfig | None = None) -> list[dict]:
    """One dict per tensor: "tensor", the COLUMNS (floats, NaN where unknown) and "flag".

    `row` is the stored row the table describes (default: the latest);
    `mark_a` / `mark_b` are steps (the last snapshot at or before each is used, at full
    resolution: also one a thinned row view lacks); the change between them is exact where the log holds
    complete values at both steps, else estimated from the sampled elements
    ("change_ab_from" says which). "flag" is "nonfinite" for a tensor whose weights hold NaN/Inf
    at the row ("nonfinite" True: its NaN values are those, not missing ones), "stagnant" for a
    trainable tensor that did not
    change (no element changed, or mean update ratio below the stagnant
    threshold), "fast" for a matrix whose mean update ratio per step is above
    the diagnose band; the thresholds are those of `config`.
    """
    config = DiagnoseConfig() if config is None else config
    names, cols = _latest_columns(run)
    nan = np.full(len(names), np.nan)
    if run.n == 0 or not names:
        return [dict(tensor=nm, **{c: float("nan") for c in COLUMNS}, flag="") for nm in names]
    r = run.n - 1 if row is None else max(0, min(run.n - 1, int(row)))
    present = run.present[: r + 1][:, cols]
    at = _last_present(present, r)  # per tensor, the row its "now" values come from
    ok = at >= 0
    rows = np.where(ok, at, 0)
    interval = step_interval(run, r + 1)

    def now(kind, stat):
        if not run.has_kind(kind):
            return nan.copy()
        v = run.stat_matrix(kind, stat)[rows, cols]
        return np.where(ok, v, np.nan)

    ratio_raw = now("delta", "ratio")
    out = {
        "ratio": ratio_raw / interval[rows],
        "update_norm": now("delta", "norm"),
        "max_abs": now("delta", "max_abs"),
        "changed_frac": now("delta", "changed_frac"),
    }
    lo = max(0, r - max(1, window) + 1)
    if run.has_kind("delta"):
        recent = run.stat_matrix("delta", "ratio")[lo : r + 1][:, cols]
        recent = np.where(present[lo:], recent, np.nan)
        with np.errstate(invalid="ignore"), quiet_nan():  # an all-NaN column's mean is NaN, shown as such
            out["ratio_mean"] = np.nanmean(recent / interval[lo : r + 1, None], axis=0)
            raw_mean = np.nanmean(recent, axis=0)
    else:
        out["ratio_mean"] = nan.copy()
        raw_mean = nan.copy()

    norms = run.stat_matrix("weights", "norm")[: r + 1][:, cols]
    usable = present & np.isfinite(norms)
    first = np.argmax(usable, axis=0)
    has_first = usable.any(axis=0)
    n0 = np.where(has_first, norms[first, np.arange(len(cols))], np.nan)
    n_now = np.where(ok, norms[rows, np.arange(len(cols))], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A tensor that started at norm 0 (a zero-initialised bias) has no relative change: NaN here,
        # and its entry's "norm_start" (0) says why (the viewer shows "from 0", not inf).
        out["norm_change"] = np.where(n0 > 0, (n_now - n0) / n0, np.where(n_now == n0, 0.0, np.nan))
    out["norm_change"][~(has_first & ok)] = np.nan

    out["change_ab"] = nan.copy()
    source = ""
    sa, sb = snapshot_step(run, mark_a), snapshot_step(run, mark_b)
    if sa is not None and sb is not None:
        exact = _exact_change(run, names, sa, sb)
        if exact is not None:
            out["change_ab"], source = exact, "values"
        else:
            out["change_ab"] = np.array([_sample_change(run, nm, sa, sb) for nm in names])
            source = "samples"

    # weights holding NaN/Inf now: what NaN means in this row (a diverged value, not a missing one), and its flag
    bad = np.zeros(len(cols), dtype=bool)
    for stat in ("nan", "inf"):
        if stat in run.columns("weights"):
            with np.errstate(invalid="ignore"):
                bad |= ok & (run.stat_matrix("weights", stat)[rows, cols] > 0)
    out["ratio_mean"] = np.where(bad, np.nan, out["ratio_mean"])  # (a window's mean of what stayed finite: no)
    infos = [run.tensors[c] for c in cols]
    trainable = np.array([bool(i.trainable) for i in infos])
    matrix = np.array([len(i.shape) >= config.ratio_min_ndim for i in infos])
    with np.errstate(invalid="ignore"):
        stagnant = trainable & ((out["changed_frac"] == 0) | (raw_mean < config.stagnant_ratio))
        fast = trainable & matrix & (out["ratio_mean"] > config.ratio_high)
    table = []
    for i, nm in enumerate(names):
        entry: dict[str, str | float] = {"tensor": nm}
        for c in COLUMNS:
            entry[c] = float(out[c][i])
        entry["flag"] = "nonfinite" if bad[i] else "stagnant" if stagnant[i] else ("fast" if fast[i] else "")
        entry["nonfinite"] = bool(bad[i])  # NaN in this row is what the NaN/Inf weights made of it
        entry["change_ab_from"] = source  # "values" (complete tensors), "samples" or "" (no marks)
        entry["norm_start"] = float(n0[i])  # the norm norm_change is relative to (NaN: none yet)
        table.append(entry)
    return table
