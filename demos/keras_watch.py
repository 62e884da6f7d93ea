"""Are the trainable weights changing? Mean/std per step, largest update, final histograms.

    python demos/keras_watch.py watch.wtui       # then: weighttui watch watch.wtui
    python demos/keras_watch.py watch.wtui --delay 0.02   # slow enough to watch live

An MLP on a synthetic classification task, recorded every 5 batches and at
each epoch end: the log holds each tensor's mean and std per step, the
largest absolute change since the previous snapshot (delta max_abs), the
update-to-weight ratio, and histograms, all shown by the TUI. One layer is
frozen halfway, so the "stuck" case is visible too.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import weighttui
from weighttui.keras import WeightCallback


class FreezeAt(keras.callbacks.Callback):
    """Stops updating one layer from an epoch on (its weights then stand still)."""

    def __init__(self, layer, epoch, delay):
        super().__init__()
        self.layer, self.epoch, self.delay = layer, epoch, delay

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            # put the values back after every batch: a freeze that needs no recompile
            layer = self.model.get_layer(self.layer)
            self.frozen = [v.numpy() for v in layer.weights]

    def on_train_batch_end(self, batch, logs=None):
        if hasattr(self, "frozen"):
            for v, value in zip(self.model.get_layer(self.layer).weights, self.frozen, strict=True):
                v.assign(value)
        if self.delay:
            time.sleep(self.delay)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default="keras_watch.wtui")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per batch")
    args = ap.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 20)).astype("float32")
    y = ((x[:, :5] ** 2).sum(axis=1) > 5).astype("int32")
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(64, activation="relu", name="dense_in"),
        keras.layers.Dense(64, activation="relu", name="dense_mid"),
        keras.layers.Dense(2, name="logits"),
    ], name="mlp")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, validation_split=0.1, callbacks=[
        FreezeAt("dense_mid", args.epochs // 2, args.delay),
        WeightCallback(args.path, every_batches=5, full_epochs=[args.epochs - 1]),
    ])

    run = weighttui.open(args.path)
    print(f"{run.n} snapshots, {len(run.tensors)} tensors in {args.path}\n")
    print(f"{'tensor':26s} {'mean':>9s} {'std':>8s} {'max |change|':>13s} {'ratio':>9s}   changing?")
    for name in run.tensor_names:
        _, mean = run.series(name, "mean")
        _, std = run.series(name, "std")
        _, change = run.series(name, "max_abs", kind="delta")
        _, ratio = run.series(name, "ratio", kind="delta")
        moving = "yes" if change[-1] > 0 else "NO (stuck)"
        print(f"{name:26s} {mean[-1]:+9.4f} {std[-1]:8.4f} {change[-1]:13.2e} {ratio[-1]:9.2e}   {moving}")
    name = "mlp/dense_in/kernel"
    _, lo, hi, counts = run.histograms(name)
    print(f"\nfinal histogram of {name} over [{lo[-1]:.3f}, {hi[-1]:.3f}]:")
    peak = counts[-1].max()
    for i in range(0, counts.shape[1], 4):
        c = counts[-1, i:i + 4].sum()
        print(f"  {lo[-1] + (hi[-1] - lo[-1]) * i / counts.shape[1]:+.3f} {'#' * int(60 * c / max(1, 4 * peak))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
