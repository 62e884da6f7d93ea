"""Which stored rows hold a tensor's statistics, and its latest value: one rule for the CLI and the TUI.

A row of a statistics block that does not cover a tensor (no gradient yet, no
delta at its first snapshot) is all NaN (docs/FORMAT.md). A covered row may
still hold a NaN or an Inf in one statistic (the norm of a tensor that is all
NaN): that is a value to show as such, not a missing one. So "the latest value"
is the value at the latest covered row, whatever it is, and None only when no
row covers the tensor.
"""

from __future__ import annotations

import numpy as np


def covered(run, kind: str) -> np.ndarray:
    """[rows, tensors] booleans: the tensor was in the snapshot and the block has a row for it."""
    if not run.has_kind(kind) or not run.n:
        return np.zeros((run.n, len(run.tensors)), dtype=bool)
    stacked = np.stack([run.stat_matrix(kind, s) for s in run.columns(kind)], axis=-1)
    return run.present & ~np.isnan(stacked).all(axis=-1)


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
