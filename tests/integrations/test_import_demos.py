"""The seed recipes in demos/ (JSON and HDF5 per epoch), imported: weights equal the dumped ones bit-exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers.driver import import_source

DEMOS = os.path.join(os.path.dirname(__file__), "..", "..", "demos")


@pytest.mark.parametrize("script", ["keras_weights_json.py", "keras_weights_hdf5.py"])
def test_seed_recipe_round_trip(tmp_path, script):
    pytest.importorskip("keras")
    d = tmp_path / "dump"
    subprocess.run([sys.executable, os.path.join(DEMOS, script), str(d), "--epochs", "3"], check=True, timeout=300)
    out = str(tmp_path / "run.wtui")
    import_source(str(d), out)
    run = weighttui.open(out)
    assert list(run.steps) == [0, 1, 2]
    for epoch in range(3):
        got = run.weights(epoch=epoch)
        if script.endswith("json.py"):
            with open(d / f"weights_epoch_{epoch}.json") as f:
                dumped = {f"{layer}/{i}": np.array(w, dtype=np.float32)
                          for layer, ws in json.load(f).items() for i, w in enumerate(ws)}
        else:
            with h5py.File(d / f"weights_epoch_{epoch}.h5") as f:
                names = [f"{layer}/{i}" for layer in f for i in f[layer]]
                dumped = {n: f[n][()] for n in names}
        assert set(got) == set(dumped) and len(got) == 4
        for k, v in dumped.items():
            assert got[k].dtype == np.float32 and got[k].tobytes() == v.tobytes(), k


def test_json_recipe_with_layers_of_equal_shaped_or_no_weights(tmp_path):
    # a BatchNormalization's four vectors share a shape, a Dense without bias has one weight, a Dropout none:
    # each dumped weight is still one tensor, named layer/i as in the layer's get_weights()
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="dense"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dropout(0.1, name="drop"),
                              keras.layers.Dense(3, use_bias=False, name="proj")])
    model.compile("adam", "mse")
    x, y = np.random.default_rng(0).standard_normal((32, 6)), np.random.default_rng(1).standard_normal((32, 3))
    d = tmp_path / "dump"
    d.mkdir()
    for epoch in range(2):
        model.fit(x, y, epochs=1, verbose=0)
        weights = {layer.name: [w.tolist() for w in layer.get_weights()] for layer in model.layers}
        with open(d / f"weights_epoch_{epoch}.json", "w") as f:
            json.dump(weights, f)
    out = str(tmp_path / "run.wtui")
    import_source(str(d), out)
    got = weighttui.open(out).weights(epoch=1)
    want = {f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
    assert sorted(got) == sorted(want) and len(want) == 7  # dense 2, bn 4, proj 1, drop none
    for k, v in want.items():
        assert got[k].shape == v.shape and got[k].tobytes() == v.astype(np.float32).tobytes(), k
