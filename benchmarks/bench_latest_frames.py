"""The latest snapshots of a big log: the header walk from the start against the search from the end.

    python benchmarks/bench_latest_frames.py LOG [--rounds 5]

`data/latest.latest_frames` walks the frame headers from the start of the file; when the walk passes
its deadline (a log well beyond 10 GiB, a slow disk) it finds the latest snapshots by searching
backwards from the end for the frame sync (`_tail_chain`). This times both on LOG (the search forced
by a walk that stops after its first frames), checks that they give the same frames, and prints CPU
and wall per call (the log's pages cached after the first round: the warm case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import weighttui.data.latest as latest


def timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, (time.process_time() - c) * 1e3, (time.perf_counter() - w) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"load at start: {os.getloadavg()}; {os.path.getsize(args.log) / 2**30:.2f} GiB")
    res: dict[str, list] = {"walk": [], "from the end": []}
    frames = {}
    for _ in range(args.rounds):
        latest.CHECK_EVERY = 1024
        frames["walk"], cpu, wall = timed(lambda: latest.latest_frames(args.log, deadline_s=60.0))
        res["walk"].append((cpu, wall))
        latest.CHECK_EVERY = 3  # the walk stops after the run, tensors and first snapshot frames
        frames["from the end"], cpu, wall = timed(lambda: latest.latest_frames(args.log, deadline_s=0.0))
        res["from the end"].append((cpu, wall))
    def kinds(got):
        return [(f.offset, f.type) for f in got or []]

    same = bool(frames["walk"]) and kinds(frames["walk"]) == kinds(frames["from the end"])
    for name, got in res.items():
        print(f"{name:14s} CPU median {statistics.median(c for c, _w in got):7.1f} ms, "
              f"wall median {statistics.median(w for _c, w in got):7.1f} ms")
    print(f"same frames: {same}; load at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
