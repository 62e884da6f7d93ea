"""One neuron learns tanh(x1 + x2): watch its two weights converge to 1.0.

    python demos/keras_neuron.py neuron.wtui      # then: weighttui watch neuron.wtui
    python demos/keras_neuron.py neuron.wtui --delay 0.05   # slow enough to watch live

A Dense(1, activation="tanh") layer on 2 inputs, plain SGD with learning rate
0.5, recorded on every batch. The kernel has 2 elements, so every snapshot
carries both values (samples): the log shows them go from their random start
to 1.0, and the bias to 0.
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


class Slow(keras.callbacks.Callback):
    """Sleeps after each batch so that a person can watch the run live."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.delay)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default="keras_neuron.wtui")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per batch")
    args = ap.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(512, 2)).astype("float32")
    y = np.tanh(x.sum(axis=1, keepdims=True)).astype("float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="tanh", name="neuron")],
                             name="one_neuron")
    model.compile(keras.optimizers.SGD(learning_rate=0.5), "mse")
    callbacks = [WeightCallback(args.path, every_batches=1, meta={"demo": "one neuron, tanh(x1 + x2)"})]
    if args.delay:
        callbacks.append(Slow(args.delay))
    model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, callbacks=callbacks)

    run = weighttui.open(args.path)
    steps, kernel = run.samples("one_neuron/neuron/kernel")
    _, bias = run.samples("one_neuron/neuron/bias")
    print(f"{run.n} snapshots in {args.path}")
    print(f"{'step':>6s} {'w1':>9s} {'w2':>9s} {'b':>9s}")
    for i in sorted(set(np.linspace(0, len(steps) - 1, 8).astype(int).tolist())):
        print(f"{steps[i]:6d} {kernel[i, 0]:9.4f} {kernel[i, 1]:9.4f} {bias[i, 0]:9.4f}")
    print(f"watch it: weighttui replay {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
