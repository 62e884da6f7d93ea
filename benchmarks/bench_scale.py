"""Scale benchmark: a 1 GB log opened, summarised and followed live.

    python benchmarks/make_big_log.py /tmp/big.wtui       # once, ~10 s
    python benchmarks/bench_scale.py /tmp/big.wtui [--live-seconds 10]

Each measurement runs in a fresh child process so that its wall time and
peak RSS (resource.getrusage) are its own:

- open:  `weighttui.open(path, max_rows=4096)` (headers indexed, only the
         snapshots thinning keeps are decoded)
- open (before): the same log through LogTail + RunData.ingest, every frame
         decoded in one poll (how `open` read a log before weighttui/scan.py)
- info:  `weighttui info PATH` as a command
- info (max_rows): the info summary built from `open(path, max_rows=4096)`
- live:  a writer process submits 20 snapshots/s of 500 tensors (weights,
         grad and delta blocks with 64-bin histograms, precomputed as a device
         backend would hand them over) while a
         viewer (LogTail + RunData, max_rows 4096, polling every 50 ms)
         follows; lag = time a snapshot is ingested - its time stamp.

Prints a table with before/after ratios. Targets (docs/DESIGN): first screen
of a 1 GB log < 2 s and < 500 MB; info < 2 s; the viewer keeps up at 20/s x 500.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent('''
    import json, resource, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import weighttui
    from weighttui.log.tail import LogTail
    from weighttui.data.run import RunData
    path, what = sys.argv[1], sys.argv[2]
    t1 = time.perf_counter()
    if what == "open":
        d = weighttui.open(path, max_rows=4096)
    elif what == "open_before":
        d = RunData(path, max_rows=4096)
        with LogTail(path) as tail:
            d.ingest(tail.poll())
    elif what == "info_max_rows":
        from weighttui.cli.info import info_dict
        d = weighttui.open(path, max_rows=4096)
        json.dumps(info_dict(d), default=str)
    # what a first screen needs: every tensor's latest stats and one histogram
    d.stat_matrix("weights", "norm")[-1]
    d.histograms(d.tensor_names[0])
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "work_s": t2 - t1, "rows": d.n, "snapshots": d.snapshot_count,
                      "tensors": len(d.tensor_names),
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''')


def child(path, what):
    out = subprocess.run([sys.executable, "-c", CHILD, path, what], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def info_command(path):
    import resource

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "weighttui.cli", "info", path], capture_output=True,
                         text=True, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(out.stderr)
    return {"wall_s": wall, "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


WRITER = textwrap.dedent('''
    import sys, time
    import numpy as np
    import weighttui
    path, seconds, rate, tensors = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    queue_size = int(sys.argv[5]) if len(sys.argv) > 5 else 32  # bench_store: room for every snapshot
    from weighttui.record.stats import DELTA_STATS, Block, empty_block, weights_block
    rng = np.random.default_rng(0)
    # Statistics come precomputed, as from a device backend (torch on the GPU):
    # this measures the log traffic and the viewer, not numpy statistics.
    arrays = [rng.normal(size=(32, 32)).astype(np.float32) for _ in range(tensors)]
    rec = weighttui.Recorder(path, bins=64, sample=16, delta=True, queue_size=queue_size)
    infos = [rec.declare(f"layers.{i}.weight", (32, 32), "float32") for i in range(tensors)]
    base = weights_block(arrays, 64)
    delta = empty_block(DELTA_STATS, tensors, 64)
    sample = np.concatenate([a.reshape(-1)[i.sample_index] for a, i in zip(arrays, infos)])
    start = time.monotonic()
    step = 0
    late = 0
    while time.monotonic() - start < seconds:
        due = start + step / rate
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            late += 1
        w = Block(base.names, base.stats + 1e-3 * step, base.hist)
        rec.submit(step, infos, w, delta=delta, grad=w, sample=sample + 1e-3 * step)
        step += 1
    rec.close()
    print(step, rec.written, rec.dropped, late)
''')


def live(seconds: float, rate: float, tensors: int, tmpdir: str):
    import numpy as np

    from weighttui.data.run import RunData
    from weighttui.log.tail import LogTail

    path = os.path.join(tmpdir, "live.wtui")
    if os.path.exists(path):
        os.unlink(path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(seconds), str(rate), str(tensors)],
                              stdout=subprocess.PIPE, text=True)
    data, tail = RunData(path, max_rows=4096), LogTail(path, max_bytes_per_poll=4 * 1024 * 1024)
    lags, seen = [], 0
    cpu0 = time.process_time()
    t0 = time.monotonic()
    while True:
        done = writer.poll() is not None
        data.ingest(tail.poll())
        now = time.time()
        if data.snapshot_count > seen:
            times = data.times
            new = min(data.snapshot_count - seen, times.size)
            lags.extend((now - times[-new:]).tolist())
            seen = data.snapshot_count
        if done and data.end is not None:
            break
        time.sleep(0.05)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    steps, written, dropped, late = map(int, writer.stdout.read().split())
    lags = np.array(lags)
    size = os.path.getsize(path)
    os.unlink(path)
    return {"snapshots": written, "dropped": dropped, "writer_late": late, "seen": seen,
            "lag_median_ms": float(np.median(lags) * 1000), "lag_p95_ms": float(np.percentile(lags, 95) * 1000),
            "lag_max_ms": float(lags.max() * 1000), "viewer_cpu_frac": cpu / wall,
            "mb_per_s": size / 2**20 / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="scale benchmark (see module docstring)")
    ap.add_argument("path", help="a big log from benchmarks/make_big_log.py")
    ap.add_argument("--live-seconds", type=float, default=10)
    ap.add_argument("--skip-before", action="store_true", help="skip the slow 'before' path")
    args = ap.parse_args(argv)
    size_mb = os.path.getsize(args.path) / 2**20

    after = child(args.path, "open")
    before = None if args.skip_before else child(args.path, "open_before")
    info_rows = child(args.path, "info_max_rows")
    info = info_command(args.path)
    lv = live(args.live_seconds, 20, 500, os.path.dirname(os.path.abspath(args.path)))

    print(f"\nlog: {args.path}: {size_mb:.0f} MiB, {after['snapshots']} snapshots of {after['tensors']} tensors; "
          f"{after['rows']} rows kept with max_rows=4096\n")
    print(f"{'measurement':44s} {'seconds':>9s} {'peak RSS MB':>12s} {'MB/s':>8s} {'snapshots/s':>12s}")

    def row(name, secs, rss):
        print(f"{name:44s} {secs:9.2f} {rss:12.0f} {size_mb / secs:8.0f} {after['snapshots'] / secs:12.0f}")

    if before:
        row("open, before (LogTail + ingest, all decoded)", before["work_s"], before["maxrss_mb"])
    row("open(path, max_rows=4096) (scan)", after["work_s"], after["maxrss_mb"])
    if before:
        print(f"{'  ratio before/after':44s} {before['work_s'] / after['work_s']:9.1f}x "
              f"{before['maxrss_mb'] / after['maxrss_mb']:11.1f}x")
    print(f"{'  (python + imports, not included above)':44s} {after['import_s']:9.2f}")
    row("weighttui info PATH (command, whole process)", info["wall_s"], info["maxrss_mb"])
    row("info summary from open(max_rows=4096)", info_rows["work_s"], info_rows["maxrss_mb"])
    print(f"\nlive: writer 20 snapshots/s x 500 tensors for {args.live_seconds:.0f} s: "
          f"{lv['snapshots']} written, {lv['dropped']} dropped, writer late {lv['writer_late']} times; "
          f"viewer saw {lv['seen']}; lag median {lv['lag_median_ms']:.0f} ms, p95 {lv['lag_p95_ms']:.0f} ms, "
          f"max {lv['lag_max_ms']:.0f} ms; viewer CPU {lv['viewer_cpu_frac'] * 100:.0f}% of one core; "
          f"log grew {lv['mb_per_s']:.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
