"""Keras: what recording costs, measured side by side in one process.

Part 1, one snapshot of a model with a few million parameters (stats +
64-bin histograms + exact deltas + samples), three ways:
  numpy      the WeightCallback path: variable -> host numpy -> weighttui.stats
  get_weights  model.get_weights() copies, then the same numpy statistics
  tf-ops f32/f64  the same statistics as one tf.function on the device,
             one transfer of the results (what a GPU would want)
  against a read pass (tf.reduce_sum over every variable) as the unit.
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

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from weighttui.integrations.keras import WeightCallback, _host_array  # noqa: E402
from weighttui.recorder import Recorder, sample_index_for  # noqa: E402
from weighttui.stats import delta_stats, histogram, weights_block  # noqa: E402

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
    for i, (a, p) in enumerate(zip(arrays, prev)):
        delta_stats(a, p)
        histogram(a.astype(np.float64) - p, BINS)
    return block


def _range(lo, hi):
    # the op rejects lo == hi (a constant tensor); the cost is what is measured here
    return tf.stack([lo, tf.where(hi > lo, hi, lo + 1)])


def make_tf_ops(dtype):
    """All statistics in one tf.function; returns (stats [T,9], hist [T,B], delta [T,4])."""

    @tf.function(jit_compile=False)
    def ops(variables, prevs):
        rows, hists, deltas = [], [], []
        for v, p in zip(variables, prevs):
            x = tf.reshape(tf.cast(v, dtype), [-1])
            n = tf.cast(tf.size(x), dtype)
            mean = tf.reduce_sum(x) / n
            c = x - mean
            lo, hi = tf.reduce_min(x), tf.reduce_max(x)
            absx = tf.abs(x)
            rows.append(tf.stack([
                mean, tf.sqrt(tf.reduce_sum(c * c) / n), lo, hi, tf.reduce_sum(absx) / n,
                tf.sqrt(tf.reduce_sum(x * x)),
                tf.cast(tf.math.count_nonzero(tf.equal(x, 0)), dtype) / n,
                tf.cast(tf.math.count_nonzero(tf.math.is_nan(x)), dtype),
                tf.cast(tf.math.count_nonzero(tf.math.is_inf(x)), dtype),
            ]))
            hists.append(tf.histogram_fixed_width(x, _range(lo, hi), nbins=BINS))
            d = x - tf.reshape(tf.cast(p, dtype), [-1])
            dlo, dhi = tf.reduce_min(d), tf.reduce_max(d)
            hists.append(tf.histogram_fixed_width(d, _range(dlo, dhi), nbins=BINS))
            deltas.append(tf.stack([
                tf.sqrt(tf.reduce_sum(d * d)), tf.reduce_max(tf.abs(d)), tf.reduce_sum(tf.abs(d)) / n,
                tf.cast(tf.math.count_nonzero(d), dtype) / n,
            ]))
        return tf.stack(rows), tf.stack(hists), tf.stack(deltas)

    return ops


def part1(width: int, repeat: int) -> None:
    model = big_model(width)
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    variables = list(model.weights)
    prev_np = [np.array(_host_array(v), copy=True) for v in variables]
    prev_tf = [tf.identity(v.value) for v in variables]
    samples = [sample_index_for(v.path, int(np.prod(v.shape)), 16) for v in variables]

    def read_pass():
        for v in variables:
            tf.reduce_sum(v.value).numpy()

    def numpy_path():
        arrays = [_host_array(v) for v in variables]
        numpy_snapshot(arrays, prev_np)
        for a, s in zip(arrays, samples):
            a.reshape(-1)[s]
        [np.array(a, copy=True) for a in arrays]  # the exact-delta memory for next time

    def get_weights_path():
        arrays = model.get_weights()
        numpy_snapshot(arrays, prev_np)

    ops32, ops64 = make_tf_ops(tf.float32), make_tf_ops(tf.float64)

    def tf_ops(ops):
        def run():
            stats, hist, delta = ops([v.value for v in variables], prev_tf)
            np.asarray(stats), np.asarray(hist), np.asarray(delta)  # the one transfer
            [tf.identity(v.value) for v in variables]  # the exact-delta memory for next time
        return run

    tmp = tempfile.mkdtemp()
    rec = Recorder(os.path.join(tmp, "bench.wtui"), queue_size=1024)
    cb = WeightCallback(rec, initial=False)
    cb.set_model(model)
    step = [0]

    def callback_record():
        step[0] += 1
        cb.record(step[0])

    base = timeit(read_pass, repeat)
    rows = [("read pass (tf.reduce_sum each variable)", base)]
    rows.append(("numpy path (stats+hist+delta+samples)", timeit(numpy_path, repeat)))
    rows.append(("get_weights() + numpy stats", timeit(get_weights_path, repeat)))
    rows.append(("tf ops on device, float32", timeit(tf_ops(ops32), repeat)))
    rows.append(("tf ops on device, float64", timeit(tf_ops(ops64), repeat)))
    rows.append(("WeightCallback.record (real, incl. queueing)", timeit(callback_record, repeat)))
    rec.close()
    print(f"\n## one snapshot, {params / 1e6:.2f}M parameters in {len(variables)} tensors, "
          f"median of {repeat}, keras {keras.__version__} ({keras.backend.backend()}), CPU")
    print(f"{'method':48s} {'ms':>9s} {'x read pass':>12s}")
    for name, t in rows:
        print(f"{name:48s} {t * 1e3:9.1f} {t / base:12.1f}")


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
