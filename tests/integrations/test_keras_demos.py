"""The Keras demos (demos/keras_*.py) run and write the logs they promise."""

from __future__ import annotations

import importlib.util
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
import weighttui  # noqa: E402

pytestmark = pytest.mark.tf

DEMOS = pathlib.Path(__file__).resolve().parents[2] / "demos"


def demo(name):
    spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMOS / f"keras_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_neuron_demo_converges_to_one(tmp_path, capsys):
    path = tmp_path / "neuron.wtui"
    assert demo("neuron").main([str(path), "--epochs", "8"]) == 0
    run = weighttui.open(path)
    _, kernel = run.samples("one_neuron/neuron/kernel")
    assert np.all(np.abs(kernel[0] - 1) > 0.2) and np.all(np.abs(kernel[-1] - 1) < 0.01)
    assert "w1" in capsys.readouterr().out


def test_checkpoints_demo_stores_epochs_5_10_15(tmp_path, capsys):
    path = tmp_path / "ck.wtui"
    assert demo("checkpoints").main([str(path), "--epochs", "12"]) == 0
    run = weighttui.open(path)
    epochs = sorted({run.values_epoch(s) for s in run.full_steps})
    assert epochs == [5, 10]
    assert "epoch 10 weights restored" in capsys.readouterr().out


def test_layers_demo_writes_three_selections(tmp_path):
    assert demo("layers").main([str(tmp_path), "--epochs", "1"]) == 0
    counts = {n: len(weighttui.open(tmp_path / f"{n}.wtui").tensors) for n in ("all", "trainable", "chosen")}
    assert counts == {"all": 10, "trainable": 8, "chosen": 6}


def test_watch_demo_shows_the_frozen_layer_as_stuck(tmp_path, capsys):
    path = tmp_path / "watch.wtui"
    assert demo("watch").main([str(path), "--epochs", "4"]) == 0
    run = weighttui.open(path)
    _, frozen = run.series("mlp/dense_mid/kernel", "max_abs", kind="delta")
    _, moving = run.series("mlp/dense_in/kernel", "max_abs", kind="delta")
    assert frozen[-1] == 0 and moving[-1] > 0
    assert "NO (stuck)" in capsys.readouterr().out
