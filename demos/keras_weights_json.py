"""The seed recipe: a Keras callback dumping `get_weights()` to `weights_epoch_N.json` after every epoch.

    python demos/keras_weights_json.py OUT_DIR [--epochs 3]
    weighttui import OUT_DIR --out run.wtui
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np


class DumpWeights(keras.callbacks.Callback):
    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir

    def on_epoch_end(self, epoch, logs=None):
        weights = {layer.name: [w.tolist() for w in layer.get_weights()] for layer in self.model.layers}
        with open(os.path.join(self.out_dir, f"weights_epoch_{epoch}.json"), "w") as f:
            json.dump(weights, f)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=args.epochs, batch_size=16, verbose=0, callbacks=[DumpWeights(args.out_dir)])


if __name__ == "__main__":
    main()
