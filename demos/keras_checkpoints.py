"""Weights at epochs 5, 10 and 15 of a 20-epoch fit, loaded back from the log.

    python demos/keras_checkpoints.py checkpoints.wtui

The recipe people write by hand (a callback that saves model.get_weights()
at chosen epochs) as one WeightCallback argument. Epochs are Keras' own,
0-based: epoch 5 is the sixth pass over the data.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import weighttui
from weighttui.keras import WeightCallback


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default="keras_checkpoints.wtui")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args(argv)
    chosen = [e for e in (5, 10, 15) if e < args.epochs]

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] ** 2).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="regressor")
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, validation_split=0.2,
              callbacks=[WeightCallback(args.path, full_epochs=chosen)])  # statistics every epoch

    run = weighttui.open(args.path)
    for epoch in chosen:
        weights = run.weights(epoch=epoch)  # {variable path: numpy array}
        kernel = weights["regressor/hidden/kernel"]
        print(f"epoch {epoch:2d}: {len(weights)} tensors, hidden kernel {kernel.shape} "
              f"mean {kernel.mean():+.4f} norm {np.linalg.norm(kernel):.4f}")
    # put epoch 10's weights back into a model of the same shape
    if 10 in chosen:
        model.set_weights([run.weights(epoch=10)[v.path] for v in model.weights])
        print(f"epoch 10 weights restored: val loss {model.evaluate(x[-100:], y[-100:], verbose=0):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
