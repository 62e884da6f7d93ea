"""Time weighttui.analysis.diagnose.diagnose and weighttui.analysis.changes.change_table on a big run.

    python benchmarks/bench_diagnose.py [--tensors 500] [--rows 4096]

The run is synthetic but goes through the real reader: snapshot frames are
built with the format's encoders and ingested into a RunData (statistics
blocks for weights, delta and grad; no histograms, which these functions do
not read). A few tensors carry planted faults so the rules have work to do.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

try:
    from weighttui.analysis.changes import change_table
except ImportError:  # while changes.py is being written
    change_table = None
from weighttui.analysis.diagnose import diagnose
from weighttui.data.run import RunData
from weighttui.log.format import FrameType, encode_array
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS


def frame(ftype, payload, offset=[0]):  # noqa: B006 - a running offset
    offset[0] += 1
    return SimpleNamespace(type=ftype, payload=payload, offset=offset[0])


def block(names, stats):
    return {"names": list(names), "stats": encode_array(np.ascontiguousarray(stats)), "hist": None}


def build(t: int, rows: int, seed: int = 0, max_rows: int | None = None):
    """(RunData holding `rows` snapshots, add(): ingest one more snapshot)."""
    rng = np.random.default_rng(seed)
    data = RunData(None, max_rows=max_rows)
    frames = [frame(FrameType.RUN, {"run_id": "bench", "created": 1.0, "bins": 64}),
              frame(FrameType.TENSORS, {"tensors": [
                  {"id": i, "name": f"layers.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}",
                   "layer": f"layers.{i // 2}", "shape": [256, 256] if i % 2 == 0 else [256],
                   "dtype": "float32", "trainable": True, "sample_index": None} for i in range(t)]})]
    data.ingest(SimpleNamespace(frames=frames, corruptions=[], reset=False, size=0, offset=0))
    ids = encode_array(np.arange(t, dtype=np.uint32))
    norm = 10 + rng.random(t)
    count = [0]

    def add():
        r = count[0]
        count[0] += 1
        w = np.zeros((t, len(WEIGHT_STATS)))
        norm[:] *= 1 + 1e-4 * rng.standard_normal(t)
        w[:, WEIGHT_STATS.index("norm")] = norm
        w[:, WEIGHT_STATS.index("std")] = norm / 256
        if r > rows // 2:
            w[7, WEIGHT_STATS.index("nan")] = 3  # planted: NaN halfway
        d = np.zeros((t, len(DELTA_STATS)))
        d[:, DELTA_STATS.index("ratio")] = 1e-2 * np.exp(0.3 * rng.standard_normal(t))
        d[:, DELTA_STATS.index("changed_frac")] = 1.0
        d[3, :] = 0.0  # planted: a stagnant tensor
        g = np.zeros((t, len(WEIGHT_STATS)))
        g[:, WEIGHT_STATS.index("norm")] = np.exp(rng.standard_normal(t))
        payload = {"step": r * 10, "epoch": None, "batch": None, "time": 1.0 + r, "ids": ids,
                   "weights": block(WEIGHT_STATS, w), "delta": block(DELTA_STATS, d),
                   "grad": block(WEIGHT_STATS, g), "sample": None}
        data.ingest(SimpleNamespace(frames=[frame(FrameType.SNAPSHOT, payload)], corruptions=[],
                                    reset=False, size=0, offset=0))

    for _ in range(rows):
        add()
    return data, add


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=500)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data, add = build(args.tensors, args.rows, max_rows=args.rows)
    print(f"built a run of {args.tensors} tensors x {data.n} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    alerts = diagnose(data)
    cold = time.perf_counter() - t0
    print(f"diagnose: {len(alerts)} alerts ({', '.join(sorted({a.rule for a in alerts}))})")
    print(f"diagnose, first call (reads every row):      {cold * 1e3:8.1f} ms")
    print(f"diagnose, again, nothing new:                {best_of(lambda: diagnose(data), args.repeat) * 1e3:8.1f} ms"
          f" (best of {args.repeat})")

    def one_more():
        add()
        diagnose(data)

    # the live case: one snapshot arrives, the app diagnoses (ingest time included, ~1 ms)
    print(f"ingest 1 snapshot + diagnose:                {best_of(one_more, args.repeat) * 1e3:8.1f} ms")
    spent = 0.0
    for _ in range(20):
        add()
        t0 = time.process_time()
        diagnose(data)
        spent += time.process_time() - t0
    print(f"diagnose after 1 new snapshot, mean of 20:   {spent / 20 * 1e3:8.1f} ms CPU")
    mid = data.n // 2
    print(f"diagnose at the timeline position row {mid}:  "
          f"{best_of(lambda: diagnose(data, upto_row=mid), args.repeat) * 1e3:8.1f} ms")
    fresh, _add = build(args.tensors, args.rows, max_rows=args.rows)
    t0 = time.perf_counter()
    diagnose(fresh, upto_row=mid)
    print(f"first call at row {mid} on a fresh run:       {(time.perf_counter() - t0) * 1e3:8.1f} ms")
    if change_table is not None:
        print(f"change_table, latest row:                    "
              f"{best_of(lambda: change_table(data), args.repeat) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
