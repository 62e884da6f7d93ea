"""The torch demo: complete weights at epochs 5, 10, 15 come back bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import weighttui  # noqa: E402

pytestmark = pytest.mark.torch
DEMO = Path(__file__).resolve().parents[2] / "demos" / "torch_mnist_like.py"


def _demo():
    spec = importlib.util.spec_from_file_location("torch_mnist_like", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_weights_at_chosen_epochs_equal_clones_bit_for_bit(tmp_path):
    path = tmp_path / "run.sock"
    kept = _demo().train(path, epochs=15, steps_per_epoch=2, batch=16)
    run = weighttui.open(path)
    assert run.status == "finished"
    assert sorted(kept) == [5, 10, 15]
    for epoch, clones in kept.items():
        got = run.weights(epoch=epoch)
        assert set(got) >= set(clones)
        for name, t in clones.items():
            assert got[name].dtype == t.numpy().dtype
            assert got[name].shape == tuple(t.shape)
            assert got[name].tobytes() == t.numpy().tobytes()  # bit for bit
    assert len(run.full_steps) == 3  # exactly once per chosen epoch, not at every step of it
    with pytest.raises(KeyError):
        run.weights(epoch=7)
    # the loss and accuracy went into the log as scalars; the model learned something
    _, acc = run.scalars("train_acc")
    assert len(acc) == 15 and acc[-1] > acc[0]
    assert "bn.running_mean" in run.tensor_names  # buffers=True
