"""Record every layer, only trainable weights, or only chosen layers.

    python demos/keras_layers.py DIR      # writes DIR/{all,trainable,chosen}.wtui

A small convolutional net with BatchNormalization: `trainable_only=False`
adds BatchNorm's moving mean and variance (marked non-trainable in the log);
`layers=[...]` takes layer names or glob patterns.
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
    ap.add_argument("dir", nargs="?", default="keras_layers")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12, 12, 1)).astype("float32")
    y = (x[:, 3:9, 3:9, 0].mean(axis=(1, 2)) > 0).astype("int32")  # is the centre brighter?
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, name="conv1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, name="conv2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, name="classifier"),
    ], name="cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    logs = {name: os.path.join(args.dir, f"{name}.wtui") for name in ("all", "trainable", "chosen")}
    model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, callbacks=[
        WeightCallback(logs["all"], trainable_only=False),  # every weight of every layer
        WeightCallback(logs["trainable"]),  # the default: trainable weights only
        WeightCallback(logs["chosen"], layers=["conv*", "classifier"]),  # by name or glob
    ])
    for path in logs.values():
        run = weighttui.open(path)
        print(f"{path}: {len(run.tensors)} tensors")
        for t in run.tensors:
            print(f"    {t.name:32s} layer {t.layer:11s} {str(t.shape):15s}"
                  f"{'' if t.trainable else ' (non-trainable)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
