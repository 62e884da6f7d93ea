"""Core costs, side by side in one run: log size, encode/decode speed, numpy statistics.

    python benchmarks/bench_core.py [--tensors 200] [--repeat 7]

Prints one table per question, with ratios; results are copied into docs/core.md.
Nothing here is asserted: tests never check wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
from shapes import resnet50_shapes

from weighttui import Recorder
from weighttui.data.run import RunData
from weighttui.log.format import FrameType, encode_frame
from weighttui.log.tail import LogTail
from weighttui.record.encode import encode_snapshot
from weighttui.record.stats import DELTA_STATS, delta_row, histogram, weight_stats, weights_block


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bytes_per_tensor(tensors: int, bins: int) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=1000).astype(np.float32) for _ in range(tensors)]
    block = weights_block(arrays, bins)
    payload = {"step": 10, "epoch": 1, "batch": None, "time": time.time(),
               "ids": np.arange(tensors, dtype="<u4"), "weights": block, "delta": None, "grad": None,
               "sample": None}
    frame = encode_frame(FrameType.SNAPSHOT, encode_snapshot(payload))
    ours = len(frame) / tensors
    print(f"\n## Log size: one statistics block (9 stats + {bins}-bin histogram), {tensors} tensors per snapshot")
    print(f"weighttui: {ours:.0f} bytes per tensor per snapshot (frame of {len(frame)} bytes)")
    try:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.compat.proto.event_pb2 import Event

        x = arrays[0].astype(np.float64)
        counts, edges = np.histogram(x, bins=bins)
        hist = summary_pb2.HistogramProto(min=x.min(), max=x.max(), num=x.size, sum=x.sum(),
                                          sum_squares=float(x @ x), bucket_limit=edges[1:].tolist(),
                                          bucket=counts.astype(float).tolist())
        summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="layers.0.weight", histo=hist)])
        event = Event(wall_time=time.time(), step=10, summary=summ).SerializeToString()
        tb = len(event) + 16  # TFRecord framing: length, length crc, data crc
        print(f"TensorBoard: {tb} bytes for the {bins}-bin histogram alone (event + TFRecord framing)")
        print(f"ratio TensorBoard / weighttui: {tb / ours:.2f}x")
    except ImportError:
        print("TensorBoard: not installed, comparison skipped")


def encode_decode(tensors: int, snapshots: int) -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=4096).astype(np.float32) for _ in range(tensors)]
    block = weights_block(arrays)
    dblock = weights_block(arrays)  # stand-ins with the same shape as real blocks
    dblock.stats = dblock.stats[:, : len(DELTA_STATS)].copy()
    dblock.names = DELTA_STATS
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.wtui")
        rec = Recorder(path, queue_size=snapshots + 10)
        infos = [rec.declare(f"layer{i}.weight", a.shape, "float32") for i, a in enumerate(arrays)]
        sample = np.zeros(sum(i.sample_len for i in infos), dtype=np.float32)
        t0 = time.perf_counter()
        for s in range(snapshots):
            rec.submit(s, infos, block, delta=dblock, grad=block, sample=sample)
        rec.close()
        write = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        data = RunData(path)
        with LogTail(path) as tail:
            data.ingest(tail.poll())
        read = time.perf_counter() - t0
    assert data.snapshot_count == snapshots
    print(f"\n## Encode and read: {snapshots} snapshots x {tensors} tensors (weights + delta + grad blocks, samples)")
    print(f"log size {size / 1e6:.1f} MB, {size / snapshots / tensors:.0f} bytes per tensor per snapshot")
    print(f"write (queue, encode, write on the writer thread): {snapshots / write:,.0f} snapshots/s")
    print(f"read (frames, validation, columnar RunData):       {snapshots / read:,.0f} snapshots/s, "
          f"{size / read / 1e6:.0f} MB/s")


def cpu_best(fn, repeat=5, setup=None):
    """Least CPU seconds of this process over `repeat` calls of fn() (setup() untimed before each).

    CPU time, not wall time: the machines these numbers come from share their
    cores with other work, which stretches wall time but not the CPU time of a
    single-threaded computation (everything timed here runs on one thread).
    """
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def numpy_statistics(repeat: int, other: str | None = None) -> None:
    """The numpy Recorder's statistics on ResNet-50 shapes: the fused kernel against the
    numpy reference it replaces, TensorBoard's histograms, and the perf-cliff inputs."""
    from weighttui.record import kernel
    from weighttui.record.numpy_path import NumpyStats
    from weighttui.record.registry import Registry

    rng = np.random.default_rng(2)
    shapes = resnet50_shapes()
    arrays = [(0.05 * rng.standard_normal(int(np.prod(s)), dtype=np.float32)).reshape(s) for s in shapes]
    total = sum(a.size for a in arrays)
    registry = Registry(16)
    infos = [registry.declare(f"t{i}", a.shape, "float32") for i, a in enumerate(arrays)]

    def update(kind):
        g = np.random.default_rng(3)
        if kind == "normal update":
            return [(a - 1e-3 * g.standard_normal(a.shape, dtype=np.float32)).astype(np.float32) for a in arrays]
        if kind == "constant shift (weight decay, bias step)":
            return [(a + np.float32(1e-3)).astype(np.float32) for a in arrays]
        if kind == "deltas of +-lr (sign optimizers: Lion)":
            return [(a + np.float32(1e-4) * np.sign(g.standard_normal(a.shape)).astype(np.float32)) for a in arrays]
        if kind == "all-zero deltas (frozen tensors)":
            return [a.copy() for a in arrays]
        raise KeyError(kind)

    def snapshot_time(stats: NumpyStats, xs, prevs) -> float:
        def setup():
            for info, p in zip(infos, prevs, strict=True):
                stats._prev[info.id] = p.copy()  # the delta is against prevs at every call
        return cpu_best(lambda: stats.blocks(infos, xs), repeat, setup)

    def reference(xs, prevs):
        for a, p in zip(xs, prevs, strict=True):  # what the numpy Recorder computed before the kernel
            weight_stats(a)
            histogram(a, 64)
            delta_row(a, p, 64)

    base = cpu_best(lambda: [a.sum() for a in arrays], repeat)
    prevs = update("normal update")
    fused = NumpyStats(64, "exact")
    rows = [("np.sum over every tensor (one read pass)", base),
            ("numpy reference (stats.py): stats + hist + exact delta + delta hist",
             cpu_best(lambda: reference(arrays, prevs), max(1, repeat // 2)))]
    if kernel.available():
        rows.append(("fused kernel (NumpyStats.blocks): the same", snapshot_time(fused, arrays, prevs)))
        if other:  # another build of the kernel, side by side (before/after a kernel change)
            from bench_kernel import load

            this_build, kernel._fastats = kernel._fastats, load(other, "_wt_core_other")
            try:
                rows.append((f"  the same with the kernel build {os.path.basename(other)}",
                             snapshot_time(NumpyStats(64, "exact"), arrays, prevs)))
            finally:
                kernel._fastats = this_build
    else:
        rows.append((f"fused kernel: not built ({kernel.UNAVAILABLE})", float("nan")))
    try:
        from tensorboard.plugins.histogram.summary import histogram_pb

        rows.append(("TensorBoard histogram_pb (numpy, 30 buckets), values only",
                     cpu_best(lambda: [histogram_pb(f"t{i}", a) for i, a in enumerate(arrays)], repeat)))
    except ImportError:
        pass
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)  # one thread, as everything here
        tf.config.threading.set_inter_op_parallelism_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            writer = tf.summary.create_file_writer(tmp)
            tensors = [tf.constant(a) for a in arrays]
            tb_step = [0]

            def tb_hist():
                tb_step[0] += 1
                with writer.as_default():
                    for i, t in enumerate(tensors):
                        tf.summary.histogram(f"t{i}", t, step=tb_step[0])
                writer.flush()

            rows.append(("TensorBoard tf.summary.histogram (TF ops, 1 thread), values only",
                         cpu_best(tb_hist, repeat)))
    except ImportError:
        pass
    print(f"\n## numpy Recorder statistics: one full snapshot, ResNet-50 shapes ({len(arrays)} tensors, "
          f"{total / 1e6:.1f}M float32), CPU seconds, best of {repeat}")
    print(f"{'what':<72} {'ms':>8} {'x np.sum':>9}")
    for name, t in rows:
        print(f"{name:<72} {t * 1e3:8.1f} {t / base:9.1f}")
    if not kernel.available():
        return
    print("\n## the same snapshot for updates real optimizers make (fused kernel, 64 bins, exact deltas)")
    print(f"{'update':<44} {'ms':>8} {'x normal':>9} {'x np.sum':>9}")
    normal = None
    cases = ["normal update", "constant shift (weight decay, bias step)", "deltas of +-lr (sign optimizers: Lion)",
             "all-zero deltas (frozen tensors)"]
    timings = [(c, snapshot_time(fused, arrays, update(c))) for c in cases]
    few = [np.round(a * 20).astype(np.float32) / 20 for a in arrays]
    g = np.random.default_rng(4)
    few_prev = [(a - 1e-3 * g.standard_normal(a.shape, dtype=np.float32)).astype(np.float32) for a in few]
    timings.append(("tensors of a few distinct values", snapshot_time(fused, few, few_prev)))
    for c, t in timings:
        normal = normal or t
        print(f"{c:<44} {t * 1e3:8.1f} {t / normal:9.2f} {t / base:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--snapshots", type=int, default=500)
    ap.add_argument("--other", help="another build of weighttui._fastats (.so): its numpy Recorder row too")
    ap.add_argument("--stats-only", action="store_true", help="only the numpy Recorder statistics part")
    args = ap.parse_args()
    print(f"# weighttui core benchmark: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    if not args.stats_only:
        bytes_per_tensor(args.tensors, 64)
        encode_decode(args.tensors, args.snapshots)
    numpy_statistics(args.repeat, args.other)
    print(f"\nload (uptime): {os.getloadavg()} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
