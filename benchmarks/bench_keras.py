"""Keras: what recording costs, measured side by side in one process.

Part 1, one snapshot of a model with a few million parameters (stats +
64-bin histograms + exact deltas + samples): host copies (get_weights or
variable reads) + numpy statistics, against the same statistics with TF ops
where the variables live (stats="device", keras_tf_stats.py), against what
TensorBoard's histograms cost, with a read pass (tf.reduce_sum over every
variable) as the unit.
Part 2, a small real `fit`: no callback, WeightCallback every epoch, every
batch, and keras.callbacks.TensorBoard(histogram_freq=1), interleaved
rounds, median seconds per fit.

    KERAS_BACKEND=tensorflow python benchmarks/bench_keras.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from weighttui.integrations.keras import WeightCallback, _host_array
from weighttui.record.recorder import Recorder
from weighttui.record.stats import delta_stats, histogram, weights_block

BINS = 64


def big_model(width: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(10),
    ], name="mlp")
    return model


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up (tracing, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_snapshot(arrays, prev):
    """What Recorder.snapshot computes for the numpy path (stats, hist, exact delta)."""
    block = weights_block(arrays, BINS)
    for a, p in zip(arrays, prev, strict=True):
        delta_stats(a, p)
        histogram(a.astype(np.float64) - p, BINS)
    return block


def part1(width: int, repeat: int) -> None:
    model = big_model(width)
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    variables = list(model.weights)
    prev_np = [np.array(_host_array(v), copy=True) for v in variables]
    tmp = tempfile.mkdtemp()

    def read_pass():
        for v in variables:
            tf.reduce_sum(v.value).numpy()

    def get_weights_only():
        model.get_weights()

    def get_weights_numpy():
        numpy_snapshot(model.get_weights(), prev_np)

    def callback(stats):
        # the real thing: a callback recording into a log, as fit would call it
        rec = Recorder(os.path.join(tmp, f"{stats}.wtui"), queue_size=4096)
        cb = WeightCallback(rec, initial=False, stats=stats)
        cb.set_model(model)
        step = [0]

        def run():
            step[0] += 1
            cb.record(step[0])
        return rec, run

    writer = tf.summary.create_file_writer(os.path.join(tmp, "tb"))
    tb_step = [0]

    def tensorboard_histograms():
        # what keras.callbacks.TensorBoard(histogram_freq=1) does at each epoch end
        tb_step[0] += 1
        with writer.as_default():
            for v in variables:
                tf.summary.histogram(v.path.replace("/", "_"), v.value, step=tb_step[0])
        writer.flush()

    base = timeit(read_pass, repeat)
    rows = [("read pass (tf.reduce_sum each variable)", base),
            ("model.get_weights() alone", timeit(get_weights_only, repeat)),
            ("get_weights() + numpy stats/hist/delta", timeit(get_weights_numpy, repeat))]
    for stats in ("numpy", "device"):
        rec, run = callback(stats)
        rows.append((f"WeightCallback record, stats={stats!r}", timeit(run, repeat)))
        rec.close()
    rows.append(("TensorBoard: tf.summary.histogram each var", timeit(tensorboard_histograms, repeat)))
    print(f"\n## one snapshot, {params / 1e6:.2f}M parameters in {len(variables)} tensors, "
          f"median of {repeat}, keras {keras.__version__} ({keras.backend.backend()}), CPU")
    print("(WeightCallback: stats + 64-bin histograms + exact deltas with their histograms + 16 samples "
          "per tensor, queued for the writer thread)")
    print(f"{'method':46s} {'ms':>9s} {'x read pass':>12s}")
    for name, t in rows:
        print(f"{name:46s} {t * 1e3:9.1f} {t / base:12.1f}")


def part2(rounds: int, epochs: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 64)).astype("float32")
    y = (np.sin(x[:, :8]).sum(axis=1, keepdims=True)).astype("float32")
    tmp = tempfile.mkdtemp()

    def fit(kind: str) -> float:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(256, activation="relu"), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        callbacks = {
            "none": [],
            "weighttui every epoch": lambda: [WeightCallback(os.path.join(tmp, "e.wtui"))],
            "weighttui every batch": lambda: [WeightCallback(os.path.join(tmp, "b.wtui"), every_batches=1)],
            "weighttui every 10 batches": lambda: [WeightCallback(os.path.join(tmp, "t.wtui"), every_batches=10)],
            "TensorBoard(histogram_freq=1)": lambda: [keras.callbacks.TensorBoard(
                os.path.join(tmp, f"tb{time.monotonic_ns()}"), histogram_freq=1)],
        }[kind]
        cbs = callbacks() if callable(callbacks) else callbacks
        model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)  # trace outside the clock
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=cbs)
        return time.perf_counter() - t0

    kinds = ["none", "weighttui every epoch", "weighttui every 10 batches", "weighttui every batch",
             "TensorBoard(histogram_freq=1)"]
    times = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]  # interleave against drift
        for k in order:
            times[k].append(fit(k))
    base = statistics.median(times["none"])
    params = 64 * 256 + 256 + 256 * 256 + 256 + 257
    print(f"\n## fit: MLP 64-256-256-1 ({params / 1e3:.0f}k parameters), 4096 samples, batch 64 "
          f"(64 batches/epoch), {epochs} epochs, median of {rounds} interleaved rounds")
    print(f"{'callbacks':32s} {'s/fit':>8s} {'slowdown':>9s}")
    for k in kinds:
        t = statistics.median(times[k])
        print(f"{k:32s} {t:8.2f} {100 * (t / base - 1):+8.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller and fewer runs (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        part1(width=512, repeat=3)
        part2(rounds=1, epochs=2)
    else:
        part1(width=1536, repeat=7)
        part2(rounds=5, epochs=5)


if __name__ == "__main__":
    main()
