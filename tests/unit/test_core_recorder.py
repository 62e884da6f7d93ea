"""The framework-free Recorder, read back through weighttui.open()."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import weighttui
from weighttui import Recorder
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS, delta_stats, histogram, weight_stats


def _params(rng, scale=1.0):
    return {
        "enc.weight": (rng.normal(size=(8, 5)) * scale).astype(np.float32),
        "enc.bias": np.zeros(8, dtype=np.float32),
        "head.weight": (rng.normal(size=(1, 8)) * scale).astype(np.float32),
    }


def test_round_trip_statistics_histograms_samples_and_deltas(tmp_path):
    path = tmp_path / "run.wtui"
    rng = np.random.default_rng(0)
    history = []
    with Recorder(path, bins=16, sample=4, meta={"lr": 0.1}) as rec:
        params = _params(rng)
        for step in range(5):
            grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
            rec.snapshot(step, params, epoch=step // 2, grads=grads, scalars={"loss": 1.0 / (step + 1)})
            history.append(({k: v.copy() for k, v in params.items()}, grads))
            params = {k: v - 0.1 * grads[k] for k, v in params.items()}
    run = weighttui.open(path)
    assert run.status == "finished"
    assert run.steps.tolist() == [0, 1, 2, 3, 4]
    assert run.epochs.tolist() == [0, 0, 1, 1, 2]
    assert run.run.meta == {"lr": 0.1} and run.run.framework == "numpy"
    assert run.tensor_names == ["enc.weight", "enc.bias", "head.weight"]
    assert run.tensor("enc.weight").layer == "enc" and run.tensor("enc.weight").shape == (8, 5)
    for name in run.tensor_names:
        info = run.tensor(name)
        for row, (values, grads) in enumerate(history):
            want = weight_stats(values[name])
            # the fused kernel sums in another order than the float64 reference: within 1e-9
            got = np.array([run.series(name, stat)[1][row] for stat in WEIGHT_STATS])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
            assert run.series(name, "norm", "grad")[1][row] == pytest.approx(weight_stats(grads[name])[5], rel=1e-9)
            _s, lo, hi, counts = run.histograms(name)
            assert counts[row].tolist() == histogram(values[name], 16)[2].tolist()
            _s, samples = run.samples(name)
            np.testing.assert_array_equal(samples[row], values[name].reshape(-1)[info.sample_index])
            ratio = run.series(name, "ratio", "delta")[1][row]
            if row == 0:
                assert math.isnan(ratio)  # no previous snapshot: not covered
            else:
                want = delta_stats(values[name], history[row - 1][0][name])
                assert ratio == pytest.approx(want[DELTA_STATS.index("ratio")], nan_ok=True)
    assert run.scalars("loss")[1].tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert run.end.snapshots == 5 and run.end.dropped == 0


def test_schedule_every_and_epochs(tmp_path):
    path = tmp_path / "run.wtui"
    x = {"w": np.ones(3, dtype=np.float32)}
    with Recorder(path, every=3, epochs=[1, 2]) as rec:
        for step in range(12):
            rec.snapshot(step, x, epoch=step // 4)
    # epochs 1 and 2 are steps 4..11; of those, multiples of 3
    assert weighttui.open(path).steps.tolist() == [6, 9]


def test_full_values_at_chosen_epochs_are_bit_exact(tmp_path):
    path = tmp_path / "run.wtui"
    rng = np.random.default_rng(1)
    kept = {}
    with Recorder(path, every=100, full_epochs=[1, 3]) as rec:
        for epoch in range(4):
            params = {"a": rng.normal(size=(3, 4)).astype(np.float32),
                      "b": rng.integers(-5, 5, size=7).astype(np.int8),
                      "c": np.float16(rng.normal())}
            rec.snapshot(epoch * 10, params, epoch=epoch)
            kept[epoch] = params
    run = weighttui.open(path)
    assert [run.values_epoch(s) for s in run.full_steps] == [1, 3]
    for epoch in (1, 3):
        got = run.weights(epoch=epoch)
        for name, want in kept[epoch].items():
            assert got[name].dtype == np.asarray(want).dtype
            np.testing.assert_array_equal(got[name], want)
    with pytest.raises(KeyError, match="epochs \\[1, 3\\]"):
        run.weights(epoch=2)


def test_include_exclude_patterns(tmp_path):
    path = tmp_path / "run.wtui"
    x = {"enc.0.weight": np.ones(2), "enc.0.bias": np.ones(2), "dec.weight": np.ones(2)}
    with Recorder(path, include=["enc.*"], exclude=["*.bias"]) as rec:
        rec.snapshot(0, x)
    assert weighttui.open(path).tensor_names == ["enc.0.weight"]


def test_odd_dtypes_and_shapes_are_recorded(tmp_path):
    path = tmp_path / "run.wtui"
    tensors = {
        "f16": np.linspace(-1, 1, 10).astype(np.float16),
        "i8": np.arange(-3, 3, dtype=np.int8),
        "u8": np.arange(4, dtype=np.uint8),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.float64(4.0),
        "nan": np.array([np.nan, 1.0, np.inf], dtype=np.float32),
    }
    with Recorder(path) as rec:
        assert rec.snapshot(0, tensors)
    run = weighttui.open(path)
    assert run.tensor_names == list(tensors)
    assert run.tensor("empty").shape == (0, 3) and run.tensor("scalar").shape == ()
    assert run.series("nan", "nan")[1][0] == 1 and run.series("nan", "inf")[1][0] == 1
    assert run.series("scalar", "mean")[1][0] == 4.0
    assert run.series("f16", "max")[1][0] == 1.0
    # the first NaN in a tensor is an event a person should see
    kinds = [(e.kind, e.tensor) for e in run.events]
    assert ("nonfinite", run.tensor("nan").id) in kinds


def test_sampled_delta_policy_marks_inexact(tmp_path):
    path = tmp_path / "run.wtui"
    with Recorder(path, delta="sample", sample=8) as rec:
        for step in range(3):
            rec.snapshot(step, {"w": np.arange(100, dtype=np.float32) * (1 + step * 0.01)})
    run = weighttui.open(path)
    exact = run.series("w", "exact", "delta")[1]
    assert math.isnan(exact[0]) and exact[1:].tolist() == [0.0, 0.0]


def test_append_mode_starts_a_new_run_and_keeps_the_old(tmp_path):
    path = tmp_path / "run.wtui"
    with Recorder(path) as rec:
        rec.snapshot(0, {"w": np.ones(2)})
        rec.snapshot(1, {"w": np.ones(2)})
    with Recorder(path, mode="a") as rec:
        rec.snapshot(0, {"v": np.ones(3)})
    latest = weighttui.open(path)
    assert len(latest.runs) == 2 and latest.tensor_names == ["v"] and latest.steps.tolist() == [0]
    first = weighttui.open(path, run=0)
    assert first.tensor_names == ["w"] and first.steps.tolist() == [0, 1]


def test_bad_input_never_raises_and_is_reported_once(tmp_path, capsys):
    path = tmp_path / "run.wtui"
    with Recorder(path) as rec:
        assert rec.snapshot(0, {"w": np.array(["a", "b"])}) is False
        assert rec.snapshot(1, {"w": np.array(["a", "b"])}) is False
        assert rec.snapshot(2, {"ok": np.ones(2)}) is True
        rec.scalars(2, loss="not a number", acc=0.5)
    err = capsys.readouterr().err
    assert err.count("tensor 'w' skipped") == 1
    run = weighttui.open(path)
    assert run.steps.tolist() == [2] and run.scalar_names == ["acc"]
    assert err.count("scalar 'loss' skipped: not a number (str)") == 1
    assert [e.kind for e in run.events] == ["tensor_skipped", "scalar_skipped"]


def test_unwritable_path_is_reported_and_training_goes_on(tmp_path, capsys):
    rec = Recorder(tmp_path / "no" / "such" / "dir" / "run.wtui")
    assert not rec.active
    assert rec.snapshot(0, {"w": np.ones(2)}) is False
    rec.close()
    assert "recording stopped, training continues" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_stops_recording_without_raising(capsys):
    rec = Recorder("/dev/full", mode="a")
    for step in range(20):
        rec.snapshot(step, {"w": np.ones(100)})
    rec.close()
    assert not rec.active
    assert "No space left on device" in capsys.readouterr().err


def test_constructor_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError):
        Recorder(tmp_path / "a", every=0)
    with pytest.raises(ValueError):
        Recorder(tmp_path / "b", mode="x")
    with pytest.raises(ValueError):
        Recorder(tmp_path / "c", delta="sometimes")


def test_full_epochs_store_the_end_of_each_chosen_epoch_in_a_step_loop(tmp_path):
    """The weights at epoch N are those of its last call (docs/core.md, Epochs):
    stored when the next epoch's first call shows that it ended, or at close()."""
    path = tmp_path / "run.wtui"
    with Recorder(path, every=4, full_epochs=[1, 2]) as rec:
        for step in range(30):
            w = np.full(3, step, dtype=np.float32)
            rec.snapshot(step, {"w": w}, epoch=step // 10)
            w += 1000  # an in-place update after the call does not change what was kept
    run = weighttui.open(path)
    assert run.full_steps == [19, 29]  # once per chosen epoch, at its last call
    assert run.weights(epoch=1)["w"].tolist() == [19, 19, 19]
    assert run.weights(epoch=2)["w"].tolist() == [29, 29, 29]  # ended by close()
    assert run.steps.tolist() == [0, 4, 8, 12, 16, 20, 24, 28]


def test_full_epochs_given_but_never_marked_is_said_at_close(tmp_path, capfd):
    path = tmp_path / "run.wtui"
    with Recorder(path, full_epochs=[1]) as rec:
        for step in range(5):
            rec.snapshot(step, {"w": np.ones(2)})
    err = capfd.readouterr().err
    assert err.count("full_epochs=[1] stored nothing: no call said which epoch") == 1
    assert [e.kind for e in weighttui.open(path).events] == ["full_epochs"]


@pytest.mark.torch
def test_snapshot_accepts_torch_tensors_with_grad_and_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "run.wtui"
    w = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    with Recorder(path) as rec:
        assert rec.snapshot(0, {"w": w, "bf": w.detach().to(torch.bfloat16)}, grads={"w": torch.ones(6)})
    run = weighttui.open(path)
    assert run.series("w", "max")[1][0] == pytest.approx(1.0)
    assert run.series("bf", "min")[1][0] == -1.0
    assert run.series("w", "norm", "grad")[1][0] == pytest.approx(6 ** 0.5)


def test_new_logs_are_private_unless_asked(tmp_path):
    old = os.umask(0o022)
    try:
        with Recorder(tmp_path / "private.wtui") as rec:
            rec.snapshot(0, {"w": np.ones(1)})
        with Recorder(tmp_path / "shared.wtui", file_mode=0o644) as rec:
            rec.snapshot(0, {"w": np.ones(1)})
    finally:
        os.umask(old)
    assert (tmp_path / "private.wtui").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.wtui").stat().st_mode & 0o777 == 0o644


def test_appending_to_a_file_holding_only_part_of_a_header_starts_it_anew(tmp_path, capsys):
    """A writer that died inside its first write leaves a prefix of the header: appending
    to it starts the log anew (header, run) and says so once, on stderr and as an event."""
    from weighttui.log.format import HEADER

    path = tmp_path / "run.wtui"
    path.write_bytes(HEADER[:5])
    with Recorder(path, mode="a") as rec:
        rec.snapshot(0, {"w": np.ones(2)})
    assert rec.written == 1
    assert capsys.readouterr().err.count("held only the start of a header") == 1
    run = weighttui.open(path)
    assert len(run.runs) == 1 and run.steps.tolist() == [0] and run.corruptions == []
    assert [e.kind for e in run.events] == ["restarted"]
    assert path.read_bytes().startswith(HEADER)


def test_appending_to_a_foreign_file_raises_from_the_constructor(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a log")
    with pytest.raises(weighttui.LogFormatError, match="cannot append"):
        Recorder(path, mode="a")
    assert path.read_bytes() == b"hello, this is not a log"


def test_float64_values_beyond_float32_and_subnormals_under_a_raising_seterr(tmp_path, recwarn):
    # a caller's np.seterr(all="raise") (or -W error) must not cost the snapshot, nor warnings leak to it
    path = tmp_path / "run.wtui"
    big = np.array([1e200, 2.0, 3.0])
    old = np.seterr(all="raise")
    try:
        with Recorder(path) as rec:
            for s in range(2):
                rec.snapshot(s, {"big": big + s, "tiny": np.array([5e-324, 0.0, 1e-310 * s])})
    finally:
        np.seterr(**old)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    run = weighttui.open(path)
    assert run.steps.tolist() == [0, 1]
    assert not [e for e in run.events if e.kind == "recorder_error"]
    _, top = run.series("big", "max")
    assert top.tolist() == [1e200, 1e200]


@pytest.mark.parametrize("instruments", [False, True])
def test_a_gradient_that_cannot_be_recorded_is_left_out_not_the_snapshot(tmp_path, capsys, instruments):
    path = tmp_path / "run.wtui"
    ok = np.ones(3, np.float32)
    with Recorder(path, instruments=instruments) as rec:
        rec.snapshot(1, {"w": ok, "v": ok}, grads={"w": ok, "v": ok})
        rec.snapshot(2, {"w": ok * 2, "v": ok}, grads={"w": ok, "v": np.array(["a", "b", "c"])})
        rec.snapshot(3, {"w": ok * 3, "v": ok}, grads={"w": ok, "v": np.ones(3, np.complex64)})
    run = weighttui.open(path)
    assert run.steps.tolist() == [1, 2, 3]
    assert not [e for e in run.events if e.kind == "recorder_error"]
    assert [e for e in run.events if e.kind == "tensor_skipped" and "gradient of 'v'" in e.message]
    _, g = run.series("v", "norm", kind="grad")
    assert np.isfinite(g[0]) and np.isnan(g[1:]).all()
    _, gw = run.series("w", "norm", kind="grad")
    np.testing.assert_allclose(gw, np.sqrt(3), rtol=1e-6)
    assert "gradient of 'v' skipped" in capsys.readouterr().err


def test_a_step_beyond_64_bits_is_refused_and_recording_goes_on(tmp_path, capsys):
    path = tmp_path / "run.wtui"
    with Recorder(path) as rec:
        rec.snapshot(1, {"w": np.ones(3)})
        assert not rec.snapshot(2**64, {"w": np.ones(3)}, scalars={"loss": 1.0})
        rec.scalars(2**63, loss=2.0)
        assert rec.snapshot(5, {"w": np.ones(3)}, scalars={"loss": 3.0})
    run = weighttui.open(path)
    assert run.steps.tolist() == [1, 5] and run.status == "finished"
    assert run.scalars("loss")[0].tolist() == [5]
    assert "does not fit the log's 64-bit integers" in capsys.readouterr().err


def test_series_of_an_instrument_not_recorded_reads_nan_and_says_so(tmp_path):
    path = tmp_path / "run.wtui"
    with Recorder(path) as rec:  # the default instruments: no update cosines
        for s in range(3):
            rec.snapshot(s, {"w": np.ones((4, 4)) * (s + 1)})
    run = weighttui.open(path)
    with pytest.warns(UserWarning, match="'cos_prev' \\(delta\\) is not in this run"):
        steps, cos = run.series("w", "cos_prev")
    assert steps.tolist() == [0, 1, 2] and np.isnan(cos).all()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.series("w", "cos_prev")  # said once
        run.series("w", "norm")
