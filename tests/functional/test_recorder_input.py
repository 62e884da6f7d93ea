"""What the recorders take from a training loop that makes mistakes: an eleventh-session audit of "bad input
gets a clear message, and nothing is lost" (each test is a case the audit found)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import weighttui

BAD_NAME = os.fsdecode(b"layer\xff")  # a name decoded from bytes: 'layer\udcff', not encodable as UTF-8


def test_a_name_that_is_not_text_costs_only_itself(tmp_path, capsys):
    """A tensor or scalar named with a surrogate stopped the whole recording ("error writing the log"):
    the writer met it when encoding. It is left out at the call, said once, and the rest recorded."""
    path = tmp_path / "names.wtui"
    with weighttui.Recorder(path) as rec:
        for step in range(4):
            rec.snapshot(step, {"good": np.ones(3, np.float32) * step, BAD_NAME: np.ones(2, np.float32)},
                         scalars={"loss": 1.0 / (step + 1), BAD_NAME: 2.0})
    err = capsys.readouterr().err
    assert err.count("tensor 'layer\\udcff' skipped: its name is not valid text (UTF-8)") == 1
    assert err.count("scalar 'layer\\udcff' skipped: its name is not valid text (UTF-8)") == 1
    assert "error writing the log" not in err
    run = weighttui.open(path, cache=False)
    assert run.status == "finished" and run.snapshot_count == 4 and run.end.dropped == 0
    assert run.tensor_names == ["good"] and run.scalar_names == ["loss"]


def test_a_second_cause_of_failure_is_said_and_the_calls_it_cost_are_counted(tmp_path, capsys):
    """After one ValueError was reported, a different ValueError (another mistake) lost every later snapshot
    with nothing said; `dropped` and the end record said 0."""
    path = tmp_path / "causes.wtui"
    w = np.ones((3, 4), np.float32)
    with weighttui.Recorder(path) as rec:
        rec.snapshot(0, {"w": w}, epoch=0, optim={"w": {"m": "oops"}})
        for step in range(1, 11):
            rec.snapshot(step, {"w": w}, epoch=float("nan"))
    err = capsys.readouterr().err
    assert "could not convert string to float" in err and "cannot convert float NaN to integer" in err
    assert rec.dropped == 11
    run = weighttui.open(path, cache=False)
    assert run.end.dropped == 11
    assert not any(e.kind == "dropped" for e in run.events)  # (not the disk: the failures are the events)
    assert sum(e.kind == "recorder_error" for e in run.events) == 2


def test_gradients_that_are_not_their_tensors_are_left_out_and_said(tmp_path, capsys):
    """grads swapped by mistake were recorded as the other tensor's gradient, and a misspelt name was ignored
    without a word."""
    path = tmp_path / "grads.wtui"
    w1, b1 = np.ones((64, 32), np.float32), np.ones(32, np.float32)
    g1, gb1 = np.full((64, 32), 0.5, np.float32), np.full(32, 0.25, np.float32)
    with weighttui.Recorder(path) as rec:
        for step in range(3):
            rec.snapshot(step, {"w1": w1, "b1": b1, "w0": w1.T.copy()},
                         grads={"w1": gb1, "b1": g1, "w2": g1, "w0": g1.reshape(-1)})
    err = capsys.readouterr().err
    assert err.count("gradient of 'w1' skipped: its shape (32,) is not its tensor's (64, 32)") == 1
    assert err.count("gradient of 'b1' skipped") == 1
    assert err.count("gradient 'w2' skipped: no tensor of this snapshot has that name") == 1
    run = weighttui.open(path, cache=False)
    assert np.isnan(run.series("w1", "norm", kind="grad")[1]).all()
    # the same number of elements in another shape is that tensor's gradient (a flattened one, say)
    assert run.series("w0", "norm", kind="grad")[1][-1] == pytest.approx(float(np.linalg.norm(g1)), rel=1e-6)


def test_a_loss_of_one_element_is_a_scalar_and_a_non_number_is_said(tmp_path, capsys):
    """`loss=np.array([0.5])` (numpy 2.4's float() refuses it) disappeared from the log, as did None, silently."""
    path = tmp_path / "scalars.wtui"
    with weighttui.Recorder(path) as rec:
        rec.snapshot(0, {"w": np.ones(3, np.float32)}, scalars={"loss": np.array([0.5]), "acc": 0.9, "note": None})
        rec.scalars(1, lr=np.array([1e-3], np.float32))
    err = capsys.readouterr().err
    assert err.count("scalar 'note' skipped: not a number (NoneType)") == 1
    run = weighttui.open(path, cache=False)
    assert set(run.scalar_names) == {"loss", "acc", "lr"}
    assert run.scalars("loss")[1].tolist() == [0.5]
    assert any(e.kind == "scalar_skipped" for e in run.events)


def test_jax_leaves_whose_paths_read_the_same_are_said(tmp_path, capsys):
    """{"layers": [a], "layers/0": b}: two leaves named `layers/0`; one vanished without a word (the numpy
    Recorder says so for keys whose strings repeat)."""
    pytest.importorskip("jax")
    import jax.numpy as jnp

    import weighttui.jax as wjax

    path = tmp_path / "jax.wtui"
    rec = wjax.recorder(path)
    params = {"layers": [jnp.zeros(3)], "layers/0": jnp.ones(3), "enc": {"w": jnp.ones(4)}}
    assert wjax.snapshot(rec, 0, params, stats="host")
    rec.close()
    err = capsys.readouterr().err
    assert err.count("a leaf named 'layers/0' skipped: an earlier leaf's path reads the same") == 1
    run = weighttui.open(path, cache=False)
    assert sorted(run.tensor_names) == ["enc/w", "layers/0"]
    assert run.series("layers/0", "mean")[1][0] == 0.0  # the first leaf with that name
