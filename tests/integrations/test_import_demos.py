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
