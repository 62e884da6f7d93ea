"""Core costs, side by side in one run: log size, encode/decode speed, numpy statistics.

    python benchmarks/bench_core.py [--params 25_000_000] [--tensors 200]

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


def model_arrays(params: int, tensors: int, rng) -> list[np.ndarray]:
    """`tensors` float32 arrays totalling about `params` elements, a mix of matrices and vectors."""
    big = tensors // 2
    per = params // big
    side = int(np.sqrt(per))
    out = []
    for i in range(tensors):
        out.append(rng.normal(scale=0.05, size=(side, side) if i % 2 == 0 else (side,)).astype(np.float32))
    return out


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


def numpy_statistics(params: int, tensors: int) -> None:
    rng = np.random.default_rng(2)
    arrays = model_arrays(params, tensors, rng)
    prev = [a + rng.normal(scale=1e-4, size=a.shape).astype(np.float32) for a in arrays]
    total = sum(a.size for a in arrays)

    def one_pass():
        for a in arrays:
            a.sum()

    def stats_only():
        for a in arrays:
            weight_stats(a)

    def stats_hist():
        for a in arrays:
            weight_stats(a)
            histogram(a, 64)

    def full_snapshot():
        for a, p in zip(arrays, prev, strict=True):
            weight_stats(a)
            histogram(a, 64)
            delta_row(a, p, 64)  # what the Recorder computes: delta statistics + histogram

    base = best_of(one_pass, 3)
    rows = [("np.sum over every tensor (one read pass)", base)]
    rows.append(("weights stats", best_of(stats_only, 3)))
    rows.append(("weights stats + 64-bin histogram", best_of(stats_hist, 3)))
    rows.append(("+ exact delta stats and histogram (a full snapshot)", best_of(full_snapshot, 3)))
    try:
        from tensorboard.plugins.histogram.summary import histogram_pb

        def tb_hist():
            for i, a in enumerate(arrays):
                histogram_pb(f"t{i}", a, buckets=64)

        rows.append(("TensorBoard histogram_pb (numpy), same tensors", best_of(tb_hist, 3)))
    except ImportError:
        pass
    print(f"\n## numpy statistics, {total / 1e6:.1f}M float32 parameters in {tensors} tensors (best of 3)")
    print(f"{'what':<50} {'seconds':>9} {'x np.sum':>9}")
    for name, t in rows:
        print(f"{name:<50} {t:9.3f} {t / base:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=25_000_000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--snapshots", type=int, default=500)
    args = ap.parse_args()
    print(f"# weighttui core benchmark: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    bytes_per_tensor(args.tensors, 64)
    encode_decode(args.tensors, args.snapshots)
    numpy_statistics(args.params, args.tensors)


if __name__ == "__main__":
    main()
