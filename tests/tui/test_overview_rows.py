"""The overview's numbers without a terminal: ordering, filter, values at a row, sparklines, go-to."""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui.tui.formatting import fmt
from weighttui.tui.widgets.layer_rows import (
    GroupRow,
    TensorRow,
    arrange,
    matches,
    metric_values,
    natural_key,
    ratio_band,
    sort_values,
    tensor_rows,
)
from weighttui.tui.widgets.sparkline import BARS, resample, spark
from weighttui.tui.widgets.timeline import parse_goto


def test_sparkline_scales_and_resamples():
    assert spark(np.arange(8.0), 8) == BARS
    assert spark([5.0, 5.0], 4) == "  " + BARS[3] * 2  # flat: mid height, left-padded
    assert spark([1e-4, 1e-2, np.nan], 3, log=True) == BARS[0] + BARS[-1] + " "
    assert spark([0.0, 1e-3], 2, log=True)[0] == " "  # log of 0: a gap, not a crash
    # Whole history in `width` buckets (means), not the last `width` values.
    np.testing.assert_allclose(resample(np.arange(100.0), 4), [12, 37, 62, 87])
    assert all(len(fmt(v, 8)) == 8 for v in (0.0, -0.00123456, 1.5e-17, -12345.678, np.inf, np.nan, 1e300))


def test_rows_grouping_filter_and_sorts(tmp_path, tui):
    path = tmp_path / "run.wtui"
    tui.fixed_log(path, 12)
    data = weighttui.open(path)
    rows = tensor_rows(data)
    assert [r.name for r in rows] == data.tensor_names
    shown = arrange(rows, sort="model", pattern="", collapsed=set())
    assert isinstance(shown[0], GroupRow) and shown[0].layer == "encoder.layers.0"
    assert [e.key for e in shown[:3]] == ["g:encoder.layers.0", "t:encoder.layers.0.weight",
                                          "t:encoder.layers.0.bias"]
    folded = arrange(rows, sort="model", pattern="", collapsed={"head"})
    assert folded[-1].key == "g:head" and folded[-1].collapsed
    assert [e.name for e in arrange(rows, sort="name", pattern="layers.1", collapsed=set())
            if isinstance(e, TensorRow)] == ["encoder.layers.1.bias", "encoder.layers.1.weight"]
    assert matches("encoder.layers.0.weight", "*.0.W*") and not matches("head.weight", "*.0.*")
    assert natural_key("layers.2") < natural_key("layers.10")

    values = sort_values(data, rows, data.n - 1, "update ratio", {})
    # per optimizer step, as the alert rules count it (this log records every 10th step)
    ratio = data.stat_matrix("delta", "ratio")[-1] / (data.steps[-1] - data.steps[-2])
    assert data.steps[-1] - data.steps[-2] > 1
    assert values["head.weight"] == pytest.approx(ratio[6], rel=1e-12)
    flat = arrange(rows, sort="update ratio", pattern="", collapsed=set(), sort_values=values)
    assert [r.name for r in flat][0] == data.tensors[int(np.nanargmax(ratio))].name
    # First snapshot has no delta: NaN values sort last instead of breaking the order.
    first = sort_values(data, rows, 0, "update ratio", {})
    assert all(np.isnan(v) for v in first.values())


def test_values_at_a_row_fall_back_to_the_last_snapshot_covering_the_tensor(tmp_path):
    path = tmp_path / "partial.wtui"
    with weighttui.Recorder(path, bins=8) as rec:
        for step in range(6):
            tensors = {"a": np.full(4, step + 1.0)}
            if step % 2 == 0:  # b is only in every other snapshot
                tensors["b"] = np.full(4, 10.0 * (step + 1))
            rec.snapshot(step, tensors)
    data = weighttui.open(path)
    cols = [r.col for r in tensor_rows(data)]
    out = metric_values(data, cols, 5)
    now, hist = out["norm"]
    assert now[0] == np.linalg.norm(np.full(4, 6.0))
    assert now[1] == np.linalg.norm(np.full(4, 50.0))  # from step 4, the last snapshot with b
    assert hist[1].size == 3 and hist[0].size == 6
    assert np.isnan(out["grad"][0]).all()  # no gradients in this log


def test_ratio_band_and_goto():
    assert [ratio_band(v) for v in (1e-5, 1e-3, 0.5, np.inf, np.nan)] == ["slow", "good", "fast", "fast", ""]
    steps = np.array([0, 10, 20, 30, 40])
    epochs = np.array([0, 0, 1, 1, 2])
    assert parse_goto("25", steps, epochs) == 2
    assert parse_goto("step 40", steps, epochs) == 4
    assert parse_goto("e1", steps, epochs) == 2
    assert parse_goto("epoch 2", steps, epochs) == 4
    assert parse_goto("e9", steps, epochs) is None
    assert parse_goto("-5", steps, epochs) == 0
    assert parse_goto("banana", steps, epochs) is None


def test_one_ratio_band_for_colours_alerts_and_help(monkeypatch):
    """The overview's green band, the ratio alerts' defaults and the help text are one constant."""
    from weighttui.analysis import diagnose
    from weighttui.tui.screens import help as help_screen
    from weighttui.tui.widgets import layer_rows

    low, high = diagnose.RATIO_BAND
    cfg = diagnose.DiagnoseConfig()
    assert (cfg.ratio_low, cfg.ratio_high) == (low, high) == (1e-4, 1e-2)
    assert [ratio_band(v) for v in (low * 0.99, low, high, high * 1.01)] == ["slow", "good", "good", "fast"]
    colours = dict(help_screen.SECTIONS)["Colours"]
    assert "green inside 1e-4..1e-2" in dict(colours)["update ratio"]
    monkeypatch.setattr(layer_rows, "RATIO_BAND", (1e-3, 1e-1))  # the colours follow the constant
    assert ratio_band(5e-4) == "slow" and ratio_band(5e-2) == "good"
