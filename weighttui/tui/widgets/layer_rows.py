"""What the layer table shows, computed from RunData with numpy (no widgets).

- `TensorRow` / `GroupRow`: the table's rows, in the order `arrange()` puts
  them (grouped by layer, or flat when sorted by a metric), after the filter.
- `metric_values()`: for the rows on screen, each metric's value at the
  timeline row and its history (for the sparkline), in one numpy pass.

Kept apart from the widget so the ordering and numbers can be tested
without a terminal.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from weighttui.analysis.diagnose import RATIO_BAND, Alert, step_interval
from weighttui.data.run import RowsUpTo, RunData

# The metric columns: (key, kind, stat, label, log scale)
METRICS = (
    ("norm", "weights", "norm", "norm", False),
    ("std", "weights", "std", "std", False),
    ("ratio", "delta", "ratio", "update ratio", True),
    # instruments (docs/instruments.md): chosen with `m`, not shown by default; the optimizer's state
    # next to the update ratio it makes
    ("eff_lr", "optim", "eff_lr", "step size", True),
    ("m_norm", "optim", "m_norm", "|moment 1|", True),
    ("v_norm", "optim", "v_norm", "|moment 2|", True),
    ("optim_bad", "optim", "nonfinite", "state NaN/Inf", False),
    ("grad", "grad", "norm", "grad norm", False),
    ("sigma", "weights", "sigma_max", "sigma max", False),
    ("srank", "weights", "stable_rank", "stable rank", False),
    ("dist", "weights", "dist_init", "dist init", False),
    ("cos_prev", "delta", "cos_prev", "cos prev upd", False),
    ("cos_grad", "delta", "cos_grad", "cos upd/grad", False),
    ("sratio", "delta", "sigma_ratio", "sigma ratio", True),
    ("dead", "grad", "dead_units", "dead units", False),
    ("exploding", "weights", "exploding_units", "exploding units", False),
    ("alpha", "weights", "alpha", "alpha", False),
)
# Metrics fitted now and then, NaN between (alpha: every alpha_every snapshots, docs/instruments.md):
# the value shown is the latest fit, the sparkline the fits
SPARSE = frozenset({"alpha"})
# columns only a matrix has (2-D, or conv reshaped to 2-D): a bias never has a value there, diverged or not
MATRIX_ONLY = frozenset({"sigma", "srank", "sratio", "dead", "exploding", "alpha"})
SORTS = ("model", "name", "update ratio", "norm change", "alerts")


@dataclass
class TensorRow:
    name: str
    col: int  # column in RunData's matrices
    layer: str
    shape: tuple
    size: int
    trainable: bool

    @property
    def key(self) -> str:
        return "t:" + self.name


@dataclass
class GroupRow:
    layer: str
    members: list = field(default_factory=list)  # TensorRow
    collapsed: bool = False

    @property
    def key(self) -> str:
        return "g:" + self.layer

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


def natural_key(name: str):
    """layers.2 sorts before layers.10."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def tensor_rows(data) -> list[TensorRow]:
    """One row per tensor name (the newest declaration of a name wins), in declaration order."""
    cols: dict[str, int] = {}
    for i, info in enumerate(data.tensors):
        cols[info.name] = i
    out = []
    for name, col in sorted(cols.items(), key=lambda kv: kv[1]):
        info = data.tensors[col]
        out.append(TensorRow(name, col, info.layer or "", tuple(info.shape), int(info.size), bool(info.trainable)))
    return out


def matches(name: str, pattern: str) -> bool:
    """Case-insensitive substring match, or a glob when the pattern has * ? or [."""
    if not pattern:
        return True
    pat = pattern.lower()
    if any(c in pat for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pat)
    return pat in name.lower()


def arrange(rows: list[TensorRow], *, sort: str, pattern: str, collapsed: set[str],
            sort_values: dict[str, float] | None = None) -> list:
    """The table's rows in display order: GroupRow and TensorRow items.

    "model" keeps declaration order and "name" natural name order, both
    grouped by layer (collapsed groups hide their tensors); the metric sorts
    give a flat list, largest first, so the outliers are on top.
    """
    shown = [r for r in rows if matches(r.name, pattern)]
    if sort in ("model", "name"):
        groups: dict[str, GroupRow] = {}
        for r in shown:
            groups.setdefault(r.layer, GroupRow(r.layer)).members.append(r)
        ordered = list(groups.values())
        if sort == "name":
            ordered.sort(key=lambda g: natural_key(g.layer))
            for g in ordered:
                g.members.sort(key=lambda r: natural_key(r.name))
        out: list = []
        for g in ordered:
            g.collapsed = g.layer in collapsed
            out.append(g)
            if not g.collapsed:
                out.extend(g.members)
        return out
    values = sort_values or {}

    def key(r: TensorRow):
        v = values.get(r.name, float("nan"))
        missing = not np.isfinite(v)
        return (missing, -v if not missing else 0.0, natural_key(r.name))

    return sorted(shown, key=key)


def _last_present(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: index of the last True row and whether there is one."""
    has = present.any(axis=0)
    last = present.shape[0] - 1 - np.argmax(present[::-1], axis=0)
    return np.asarray(last), np.asarray(has)


def snapshot_values(data, cols: list[int], index: int) -> dict[str, np.ndarray]:
    """The values at one snapshot of the run (its index among all, full resolution: one the row
    view thinned away), read from the store: per metric key, "nan", "inf" (weights) and
    "present" (the snapshot covered the tensor), each per col. The update ratio is per
    optimizer step, divided by the steps since the snapshot before it (as step_interval)."""
    idx = np.asarray(cols, dtype=np.int64)
    keys: list[tuple[str, str | None]] = [("weights", None), ("weights", "nan"), ("weights", "inf")]
    names = ["present", "nan", "inf"]
    for key, kind, stat, _label, _log in METRICS:
        if data.has_kind(kind):
            keys.append((kind, stat))
            names.append(key)
    got = data.snapshot_stats(index, keys)
    out = {name: a[idx] for name, a in zip(names, got, strict=True)}
    if "ratio" in out:
        steps = data.snapshot_meta(max(0, index - 1), index + 2)[0]
        gap = float(steps[1] - steps[0]) if steps.size >= 2 else 1.0  # the first borrows the second's
        out["ratio"] = out["ratio"] / (gap if gap > 0 else 1.0)
    for key, *_rest in METRICS:
        out.setdefault(key, np.full(idx.size, np.nan))
    return out


def metric_values(data, cols: list[int], row: int, exact: dict[str, np.ndarray] | None = None,
                  only: str | None = None) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """For each metric (or the one named `only`): (value at `row` per col, history up to `row` per col).

    A tensor missing from the snapshot at `row` shows its last value before
    it. History holds only the snapshots that covered the tensor. `exact`
    (snapshot_values of a snapshot after `row` that the row view lacks): the
    values there, ending the histories, for the tensors it covered.
    """
    out = {}
    metrics = [m for m in METRICS if only is None or m[0] == only]
    if row < 0 or not cols:
        empty = np.full(len(cols), np.nan)
        return {m[0]: (empty, [np.zeros(0)] * len(cols)) for m in metrics}
    idx = np.asarray(cols, dtype=np.int64)
    present = data.present[: row + 1][:, idx]
    last, has = _last_present(present)
    span = np.arange(idx.size)
    for key, kind, stat, _label, _log in metrics:
        if not data.has_kind(kind):
            out[key] = (np.full(idx.size, np.nan), [np.zeros(0)] * idx.size)
            continue
        m = data.stat_matrix(kind, stat)[: row + 1][:, idx]
        if key == "ratio":
            # per optimizer step, like the alert rules: a writer recording every
            # 10 steps must not look 10x "too fast" against the RATIO_BAND
            m = m / step_interval(data, row + 1)[:, None]
        if key in SPARSE:  # the latest fit, and the fits
            fitted = present & np.isfinite(m)
            last, has = _last_present(fitted)
            now = np.where(has, m[last, span], np.nan)
            hist = [m[fitted[:, j], j] for j in range(idx.size)]
        else:
            now = np.where(has, m[last, span], np.nan)
            hist = [m[present[:, j], j] for j in range(idx.size)]
        if exact is not None:
            here, value = exact["present"], exact[key]
            if key in SPARSE:
                here = here & np.isfinite(value)
            now = np.where(here, value, now)
            hist = [np.append(h, value[j]) if here[j] else h for j, h in enumerate(hist)]
        out[key] = (now, hist)
    return out


def sort_values(data: RunData | RowsUpTo, rows: list[TensorRow], row: int, sort: str,
                alerts_by_tensor: Mapping[str, Sequence[Alert]]) -> dict[str, float]:
    """The number each tensor is sorted by (largest first) for the metric sorts, as of `row`
    (the viewer passes `RunView.upto`: at a snapshot the row view lacks, that snapshot's values)."""
    if sort in ("model", "name") or not rows:
        return {}
    if sort == "alerts":
        return {r.name: _alert_rank(alerts_by_tensor.get(r.name)) for r in rows}
    cols = [r.col for r in rows]
    if row < 0:
        return {}
    if sort == "update ratio":
        now, _hist = metric_values(data, cols, row, only="ratio")["ratio"]
        return {r.name: float(v) for r, v in zip(rows, now, strict=True)}
    # norm change: relative change of the norm since the tensor's first snapshot
    idx = np.asarray(cols, dtype=np.int64)
    present = data.present[: row + 1][:, idx]
    m = data.stat_matrix("weights", "norm")[: row + 1][:, idx]
    first = np.argmax(present, axis=0)
    last, has = _last_present(present)
    span = np.arange(idx.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = np.abs(m[last, span] / m[first, span] - 1.0)
    change = np.where(has, change, np.nan)
    return {r.name: float(v) for r, v in zip(rows, change, strict=True)}


def _alert_rank(alerts) -> float:
    if not alerts:
        return float("nan")
    errors = sum(1 for a in alerts if a.severity == "error")
    return errors * 1000.0 + len(alerts)


def ratio_band(value: float, *, trainable: bool = True) -> str:
    """'good', 'slow', 'fast', 'frozen' (not trainable, or not moving at all) or '' (unknown)
    for an update-to-weight ratio."""
    if not trainable or value == 0:
        return "frozen"
    if value is None or not np.isfinite(value):
        return "fast" if value is not None and np.isinf(value) else ""
    if value < RATIO_BAND[0]:
        return "slow"
    if value > RATIO_BAND[1]:
        return "fast"
    return "good"
