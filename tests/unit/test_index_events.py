"""A nan_origin event read back from the log's index keeps its kind and flat index (docs/FORMAT.md).

The index used to keep an event's step, time, level, kind, message and tensor only: reopened
through it, `info` said the NaN origin without its kind and flat index, and the `nonfinite`
alert no longer carried "the first non-finite value of the run at flat index N".
"""

from __future__ import annotations

import json

import numpy as np

import weighttui
from weighttui import Recorder, cli
from weighttui.analysis.diagnose import diagnose
from weighttui.data.store import index as store_index


def nan_log(path) -> str:
    rng = np.random.default_rng(5)
    w = rng.normal(size=(64, 64))
    with Recorder(path, every=1, bins=8, sample=0, queue_size=4096) as rec:  # nan_origin is on by default
        for step in range(80):
            shown = w + step * 1e-3
            if step >= 50:
                shown = shown.copy()
                shown[3, 7] = np.nan
            rec.snapshot(step, {"a.weight": shown}, grads={"a.weight": rng.normal(0, 1e-2, w.shape)})
    return str(path)


def test_events_through_the_index_are_those_of_the_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(store_index, "MIN_LOG_BYTES", 0)  # index this small log
    path = nan_log(tmp_path / "nan.wtui")
    plain = weighttui.open(path, cache=False)
    [origin] = [e for e in plain.events if e.kind == "nan_origin"]
    assert (origin.step, origin.where, origin.index) == (50, "weights", 3 * 64 + 7)
    built = weighttui.open(path)  # builds and writes the index
    assert built.index_path is not None
    again = weighttui.open(path)  # reads it
    assert again.index_path == built.index_path and again._loaded
    assert again.events == plain.events
    assert [(a.rule, a.step, a.message) for a in diagnose(again)] == \
        [(a.rule, a.step, a.message) for a in diagnose(plain)]
    assert cli.main(["info", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nan_origin_at"] == {"step": 50, "tensor": "a.weight", "kind": "weights", "index": 199}
