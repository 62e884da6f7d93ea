"""One tensor's statistics over time, as the detail screen charts them."""

from __future__ import annotations

import numpy as np

from weighttui.analysis.diagnose import step_interval
from weighttui.data.run import RunData


def tensor_series(data: RunData, tensor: str, kind: str) -> dict[str, np.ndarray]:
    """{"steps": [N], stat: [N] ...} of one tensor and kind (weights / delta / grad).

    Update (delta) statistics also get "ratio_step": the update ratio divided
    by the steps one delta spans, so runs recorded every 1 and every 10 steps
    read alike.
    """
    out: dict[str, np.ndarray] = {"steps": np.zeros(0, dtype=np.int64)}
    if not data.has_kind(kind):
        return out
    for stat in data.columns(kind):
        steps, values = data.series(tensor, stat, kind)
        out[stat] = values
        out["steps"] = steps
    if kind == "delta" and "ratio" in out:
        col = [i for i, t in enumerate(data.tensors) if t.name == tensor][-1]
        rows = data.present[:, col]
        out["ratio_step"] = out["ratio"] / step_interval(data)[rows]
    return out
