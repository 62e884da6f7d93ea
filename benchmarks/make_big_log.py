"""Write a large synthetic run log fast, for the scale benchmarks.

    python benchmarks/make_big_log.py /tmp/big.wtui --size-mb 1024 --tensors 200

Frames are encoded directly with `weighttui.log.format.encode_frame` (no
Recorder, no statistics computed): a run frame, one tensors frame, then
snapshots (weights stats + histogram, delta stats, samples), a scalars frame
each snapshot, an event now and then, and full values every `--full-every`
snapshots for a few tensors, until the file reaches the size asked for. The
statistics drift smoothly so that plots look like a run; they are not the
statistics of real tensors. Do not commit the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS


def make(path, *, size_mb: float, tensors: int, bins: int, sample: int, full_every: int,
         seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    names = [f"blocks.{i // 4}.{('attn.q', 'attn.k', 'mlp.fc', 'mlp.proj')[i % 4]}.weight"
             for i in range(tensors)]
    shapes = [(256, 256)] * tensors
    decls = [{"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": list(s), "dtype": "float32",
              "trainable": True,
              "sample_index": encode_array(np.sort(rng.choice(65536, sample, replace=False)).astype("<i8"))}
             for i, (n, s) in enumerate(zip(names, shapes, strict=True))]
    ids = encode_array(np.arange(tensors, dtype="<u4"))
    base_std = rng.uniform(0.02, 0.2, tensors)
    shape_of_hist = np.exp(-0.5 * np.linspace(-3, 3, bins) ** 2)
    target = int(size_mb * 1024 * 1024)
    written = snapshots = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def put(b: bytes):
            nonlocal written
            os.write(fd, b)
            written += len(b)

        put(HEADER + encode_frame(FrameType.RUN, {
            "run_id": f"big{seed:08x}", "created": time.time(), "host": "bench", "pid": 0,
            "argv": ["make_big_log.py"], "framework": "synthetic", "writer": "make_big_log",
            "bins": bins, "meta": {"tensors": tensors}}))
        put(encode_frame(FrameType.TENSORS, {"tensors": decls}))
        step = 0
        while written < target:
            drift = 1.0 + 0.3 * np.tanh(step / 5000.0)
            std = base_std * drift
            stats = np.empty((tensors, len(WEIGHT_STATS)))
            stats[:, 0] = rng.normal(0, 1e-3, tensors)  # mean
            stats[:, 1] = std
            stats[:, 2], stats[:, 3] = -4 * std, 4 * std
            stats[:, 4] = 0.8 * std
            stats[:, 5] = std * 256
            stats[:, 6:] = 0.0
            counts = (shape_of_hist[None, :] * 65536 / shape_of_hist.sum()
                      * rng.uniform(0.9, 1.1, (tensors, 1))).astype("<u4")
            delta = np.empty((tensors, len(DELTA_STATS)))
            delta[:, 0] = std * 1e-2
            delta[:, 1] = 1e-3 * rng.uniform(0.5, 2, tensors)
            delta[:, 2] = std * 1e-3
            delta[:, 3] = std * 1e-4
            delta[:, 4] = 1.0
            delta[:, 5] = 1.0
            now = time.time()
            put(encode_frame(FrameType.SNAPSHOT, {
                "step": step, "epoch": step // 1000, "batch": step % 1000, "time": now, "ids": ids,
                "weights": {"names": list(WEIGHT_STATS), "stats": encode_array(stats),
                            "hist": {"lo": encode_array(stats[:, 2].copy()),
                                     "hi": encode_array(stats[:, 3].copy()),
                                     "counts": encode_array(counts)}},
                "delta": {"names": list(DELTA_STATS), "stats": encode_array(delta), "hist": None},
                "grad": None,
                "sample": encode_array(rng.normal(0, 0.1, tensors * sample).astype("<f4")),
            }))
            put(encode_frame(FrameType.SCALARS, {"step": step, "epoch": step // 1000, "time": now,
                                                  "values": {"loss": 2.0 / (1 + step / 500), "lr": 1e-3}}))
            if step % 5000 == 4999:
                put(encode_frame(FrameType.EVENT, {"step": step, "time": now, "level": "info",
                                                   "kind": "checkpoint", "message": f"step {step}",
                                                   "tensor": None}))
            if full_every and step % full_every == full_every - 1:
                for tid in range(min(4, tensors)):
                    put(encode_frame(FrameType.VALUES, {
                        "step": step, "epoch": step // 1000, "id": tid, "offset": 0,
                        "value": encode_array(rng.normal(0, base_std[tid], 65536).astype("<f4"))}))
            snapshots += 1
            step += 1
        put(encode_frame(FrameType.END, {"time": time.time(), "status": "finished",
                                         "snapshots": snapshots, "dropped": 0}))
    finally:
        os.close(fd)
    return {"path": str(path), "bytes": written, "snapshots": snapshots, "tensors": tensors,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--size-mb", type=float, default=1024)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--sample", type=int, default=8)
    ap.add_argument("--full-every", type=int, default=2000,
                    help="full values of 4 tensors every N snapshots (0: never)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (also the run id): a sweep's runs differ")
    args = ap.parse_args(argv)
    out = make(args.path, size_mb=args.size_mb, tensors=args.tensors, bins=args.bins,
               sample=args.sample, full_every=args.full_every, seed=args.seed)
    print(f"wrote {out['bytes'] / 2**20:.0f} MiB, {out['snapshots']} snapshots of {out['tensors']} tensors "
          f"to {out['path']} in {out['seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
