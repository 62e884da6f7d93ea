"""RunData.snapshot_block: one statistic over a range of snapshots at full resolution, whatever the row
view keeps, read a few tensors' slices at a time or as a block: the same as the unthinned row view's
matrices, with an index, without one, and with every sealed segment's statistics read back from the log."""

from __future__ import annotations

import numpy as np
import pytest

from weighttui import Recorder
from weighttui.data.run import RunData
from weighttui.data.store import columns as store_columns
from weighttui.data.store import fromlog
from weighttui.data.store import index as store_index
from weighttui.log.schema import COLUMNS

STEPS = 300


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """17 tensors (so that 2 of them are 'a few'), one declared at step 100, one left out of every
    third snapshot, gradients for most of them; small segments so that a range crosses several."""
    path = tmp_path_factory.mktemp("block") / "run.wtui"
    rng = np.random.default_rng(1)
    w = {f"t{i}.weight": rng.normal(size=(4, 3)) for i in range(16)}
    with Recorder(path, every=1, bins=4, sample=2, instruments=False, queue_size=4096) as rec:
        for step in range(STEPS):
            if step == 100:
                w["late.weight"] = rng.normal(size=(5,))
            params = {n: v + step * 1e-3 for n, v in w.items() if not (n == "t3.weight" and step % 3 == 0)}
            grads = {n: rng.normal(size=v.shape) for n, v in params.items() if n != "t5.weight"}
            rec.snapshot(step, params, grads=grads)
    return str(path)


def _read(path, cache, monkeypatch, held):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)  # index this small log ...
    monkeypatch.setattr(store_columns, "SEAL_ENTRIES", 400)  # ... in segments of about 23 snapshots
    monkeypatch.setattr(store_index, "SEAL_ENTRIES", 400)
    if not held:
        monkeypatch.setattr(fromlog, "STATS_BYTES", 0)  # every sealed segment's statistics read back
    data = RunData(path, cache=cache)
    data.refresh()
    return data


@pytest.mark.parametrize("cache,held", [(True, True), (False, True), (False, False)],
                         ids=["indexed", "no-cache", "no-cache-read-back"])
def test_snapshot_block_is_the_row_view_at_full_resolution(log, monkeypatch, cache, held):
    data = _read(log, cache, monkeypatch, held)
    assert data.snapshot_count == STEPS and data.n == STEPS
    assert len(data._store.runs[0].sealed("weights")) > 5 and (data.index_path is not None) == cache
    t = len(data.tensors)
    thinned = RunData(log, max_rows=16, cache=cache)
    thinned.refresh()
    assert thinned.n <= 16
    ranges = [(0, STEPS), (0, 1), (99, 101), (37, 250), (STEPS - 5, STEPS + 10), (120, 120)]
    keys = [(k, s) for k in ("weights", "grad", "delta") for s in ("norm", "nan", "zero_frac")
            if s in COLUMNS[k]] + [("weights", None)]
    for kind, stat in keys:
        full = data.present if stat is None else data.stat_matrix(kind, stat)
        for lo, hi in ranges:
            want = full[lo:hi]
            for cols in (None, [3, t - 1], [0, 5], list(range(t))):
                got = thinned.snapshot_block(kind, stat, lo, hi, cols)
                expect = want if cols is None else want[:, cols]
                assert got.shape == expect.shape, (kind, stat, lo, hi, cols)
                assert np.array_equal(got, expect, equal_nan=stat is not None), (kind, stat, lo, hi, cols)
    late = data.column("late.weight")
    assert not thinned.snapshot_block("weights", None, 0, 100, [late]).any()
    assert thinned.snapshot_block("weights", None, 100, STEPS, [late]).all()
    assert np.isnan(thinned.snapshot_block("grad", "norm", 0, STEPS, [data.column("t5.weight")])).all()
