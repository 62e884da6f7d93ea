"""The run store on a big log: first open, reopen, reads, memory, index size, live append.

    python benchmarks/make_big_log.py /tmp/big.wtui --size-mb 1024 --tensors 200 --bins 64
    python benchmarks/bench_store.py /tmp/big.wtui [--before /path/to/old/checkout] [--live-seconds 10]
    (quick: --skip parquet --skip live)

Every measurement runs in a fresh child process; its wall time is taken inside
(after imports) and its peak RSS from outside (os.wait4's rusage of the child).
Side by side, in one run:

- store: `weighttui.open(path)` building the index (none before), then reopening
  it, and `open(cache=False)` (no index, nothing written); each followed by one
  series() and one histograms() of a tensor over the whole run.
- before: the same calls against an older checkout (--before): the dense
  in-memory reader the store replaced, or an earlier store (first open,
  reopen, info --json twice), each on its own index (removed in between).
- info: `weighttui info --json` first (no index) and again.
- parquet: the same segments (tensor-sorted entries, one row group per
  segment) written as Parquet with pyarrow (zstd), then a series and a
  histogram read back with a filter on the tensor column: the second storage
  option, compared on size, write time, read latency and memory.
- live: a writer appends snapshots of N tensors at R/s while a reader calls
  RunData.refresh() every 50 ms (extending the index as it goes); lag = when the
  snapshot became readable - its time stamp, and the cost of one refresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from bench_scale import WRITER  # the live writer: precomputed blocks at a fixed rate
from childproc import compile_bytecode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OPEN = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import weighttui
    path, mode = sys.argv[1], sys.argv[2]
    t1 = time.perf_counter()
    d = weighttui.open(path) if mode in ("before", "cache") else weighttui.open(path, cache=False)
    t2 = time.perf_counter()
    name = d.tensor_names[len(d.tensor_names) // 2]
    steps, values = d.series(name, "norm")
    t3 = time.perf_counter()
    hs = d.histograms(name)
    t4 = time.perf_counter()
    d.stat_matrix("weights", "norm")
    t5 = time.perf_counter()
    import os, threading
    threads = {}  # CPU seconds (user + system) of each thread still alive: the reader is MainThread
    tick = os.sysconf("SC_CLK_TCK")
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            threads[t.name] = (int(f[11]) + int(f[12])) / tick
        except (OSError, AttributeError, TypeError):
            pass
    print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "series_s": t3 - t2, "hist_s": t4 - t3,
                      "matrix_s": t5 - t4, "total_s": t5 - t1, "snapshots": d.snapshot_count,
                      "tensors": len(d.tensor_names), "series_len": int(steps.size),
                      "hist_shape": list(hs[3].shape), "index": getattr(d, "index_path", None),
                      "threads": threads}))
''')

# no index (cache=False): what a reader holds and how long histogram and sample reads take
NOCACHE_READS = textwrap.dedent('''
    import json, sys, time
    import weighttui
    path, max_rows = sys.argv[1], (int(sys.argv[2]) if len(sys.argv) > 2 else None)
    t0, c0 = time.perf_counter(), time.process_time()
    d = weighttui.open(path, cache=False, max_rows=max_rows)
    out = {"open_s": time.perf_counter() - t0, "open_cpu_s": time.process_time() - c0}
    names = d.tensor_names
    mid = int(d.steps[d.n // 2])

    def timed(key, fn):
        t, c = time.perf_counter(), time.process_time()
        r = fn()
        out[key + "_ms"] = (time.perf_counter() - t) * 1e3
        out[key + "_cpu_ms"] = (time.process_time() - c) * 1e3
        return r

    timed("series", lambda: d.series(names[len(names) // 2], "norm"))
    h = timed("hist_all", lambda: d.histograms(names[len(names) // 2]))
    timed("hist_all_other", lambda: d.histograms(names[1], "delta"))
    timed("hist_range100", lambda: d.histograms(names[3], start=mid, stop=mid + 100))
    timed("hist_range100_again", lambda: d.histograms(names[3], start=mid, stop=mid + 100))
    timed("samples_all", lambda: d.samples(names[5]))
    timed("samples_range100", lambda: d.samples(names[7], start=mid, stop=mid + 100))
    timed("matrix", lambda: d.stat_matrix("weights", "norm"))
    timed("series_other", lambda: d.series(names[len(names) // 2 + 1], "ratio", "delta"))
    timed("series_range100", lambda: d.series(names[9], "norm", start=mid, stop=mid + 100))
    out.update(snapshots=d.snapshot_count, tensors=len(names), hist_rows=int(h[3].shape[0]))
    try:  # statistics held in memory (a checkout from before fromlog.STATS_BYTES has none)
        from weighttui.data.store import fromlog
        out["stats_held_mb"] = fromlog.resident_bytes() / 2**20
    except (ImportError, AttributeError):
        pass
    print(json.dumps(out))
''')

PARQUET_WRITE = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import pyarrow as pa, pyarrow.parquet as pq
    import weighttui
    path, out = sys.argv[1], sys.argv[2]
    d = weighttui.open(path)
    run = d._run
    t0 = time.perf_counter()
    for kind in ("weights", "delta"):
        writer = None
        for seg in run.segment_list(kind):
            cols = {"row": pa.array(seg.part("rows")), "col": pa.array(seg.part("cols"))}
            for s, stat in enumerate(d.columns(kind)):
                cols[stat] = pa.array(seg.part("stats", s=s))
            if seg.counts is not None:
                cols["lo"], cols["hi"] = pa.array(seg.part("lo")), pa.array(seg.part("hi"))
                c = seg.part("counts")
                cols["counts"] = pa.FixedSizeListArray.from_arrays(pa.array(c.reshape(-1)), c.shape[1])
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(os.path.join(out, kind + ".parquet"), table.schema, compression="zstd")
            writer.write_table(table)
        if writer is not None:
            writer.close()
    print(json.dumps({"write_s": time.perf_counter() - t0}))
''')

PARQUET_READ = textwrap.dedent('''
    import json, os, sys, time
    t0 = time.perf_counter()
    import pyarrow.parquet as pq
    out, col = sys.argv[1], int(sys.argv[2])
    t1 = time.perf_counter()
    f = pq.ParquetFile(os.path.join(out, "weights.parquet"))
    t2 = time.perf_counter()
    s = pq.read_table(os.path.join(out, "weights.parquet"), columns=["row", "norm"], filters=[("col", "=", col)])
    t3 = time.perf_counter()
    h = pq.read_table(os.path.join(out, "weights.parquet"), columns=["row", "lo", "hi", "counts"],
                      filters=[("col", "=", col)])
    counts = h.column("counts").combine_chunks().flatten().to_numpy()
    t4 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "series_s": t3 - t2, "hist_s": t4 - t3,
                      "series_len": s.num_rows, "row_groups": f.num_row_groups}))
''')


RECORDER_LOG = textwrap.dedent('''
    import sys
    import numpy as np
    import weighttui
    # a small transformer-like model recorded by the numpy Recorder: weights, delta and grad blocks
    rng = np.random.default_rng(0)
    shapes = {}
    for i in range(10):
        shapes[f"blocks.{i}.attn.weight"], shapes[f"blocks.{i}.attn.bias"] = (256, 256), (256,)
        shapes[f"blocks.{i}.mlp.weight"], shapes[f"blocks.{i}.norm.weight"] = (512, 256), (256,)
    w = {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in shapes.items()}
    rec = weighttui.Recorder(sys.argv[1], bins=64, sample=8, queue_size=100000)
    for step in range(int(sys.argv[2])):
        g = {k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in w.items()}
        for k in w:
            w[k] -= 1e-1 * g[k]
        rec.snapshot(step, w, grads=g, scalars={"loss": 1.0 / (1 + step)})
    rec.close()
''')


def recorder_index_sizes(snapshots: int, before: str | None, tmp: str) -> dict:
    """The index of a log the numpy Recorder wrote (40 tensors of mixed sizes), for each checkout."""
    path = os.path.join(tmp, "recorder.wtui")
    measured([sys.executable, "-c", RECORDER_LOG, path, str(snapshots)], env_for(REPO, tmp))
    out = {"log_mib": os.path.getsize(path) / 2**20}
    for name, checkout in (("before", before), ("after", REPO)):
        if checkout is None:
            continue
        shutil.rmtree(index_dir(path), ignore_errors=True)
        measured([sys.executable, "-c", OPEN, path, "cache"], env_for(checkout, tmp))
        out[name] = {"index_mib": du(index_dir(path)) / 2**20, "parts": index_parts(index_dir(path))}
    return out


def measured(args, env=None) -> dict:
    """Run a child; its JSON line, its wall time and its peak RSS measured from outside."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        # cwd: not the repository, so PYTHONPATH (the checkout measured) decides what is imported
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=tempfile.gettempdir())
        # wait4: this child's own rusage, so its peak RSS is measured by the parent
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read().decode(), err.read().decode()
    if proc.returncode:
        raise SystemExit(f"{args[:5]} failed:\n{etext[-2000:]}")
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("{")]
    doc = json.loads(lines[-1]) if lines and args[1] == "-c" else {}
    doc["wall_s"] = wall
    doc["cpu_s"] = usage.ru_utime + usage.ru_stime  # every thread of the child, from outside
    doc["peak_rss_mb"] = usage.ru_maxrss / 1024
    return doc


def env_for(pythonpath: str, cache_home: str) -> dict:
    compile_bytecode(pythonpath)  # (once per checkout)
    return dict(os.environ, PYTHONPATH=pythonpath, XDG_CACHE_HOME=cache_home)


def du(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def index_parts(directory: str) -> dict:
    """MiB of the index per kind/array (from its manifest), to see what the index spends its space on."""
    try:
        with open(os.path.join(directory, "manifest.json")) as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return {}
    out: dict = {}

    def walk(key, ref):
        if isinstance(ref, list) and ref and isinstance(ref[0], str):  # [file, offset, dtype, shape, crcs]
            n = 1
            for d in ref[3]:
                n *= d
            out[key] = out.get(key, 0) + n * int(ref[2][2:]) / 2**20
        elif isinstance(ref, list):
            for r in ref:
                walk(key, r)
        elif isinstance(ref, dict):
            for r in ref.values():
                walk(key, r)

    for run in m.get("runs", []):
        for g in run.get("groups", []):
            for kind, arrays in g["kinds"].items():
                for name, ref in arrays.items():
                    walk(f"{kind}.{name}", ref)
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def index_dir(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.wtuidx")


def live(seconds: float, rate: float, tensors: int, tmpdir: str) -> dict:
    sys.path.insert(0, REPO)
    import numpy as np

    import weighttui
    from weighttui.data.run import RunData
    from weighttui.data.store import index as store_index

    # Statistics come precomputed, as from a device backend (torch on the GPU): this measures the
    # log traffic and the reader, not numpy statistics (as benchmarks/bench_scale.py does).
    path = os.path.join(tmpdir, "live.wtui")
    store_index.MIN_LOG_BYTES = 0  # index the live log from its first bytes
    # bench_scale's live writer, with room in its queue for every snapshot
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(seconds), str(rate), str(tensors), "10000"],
                            stdout=subprocess.PIPE, text=True, env=env_for(REPO, tmpdir))
    while not os.path.exists(path):
        time.sleep(0.01)
    data = RunData(path)
    lags, costs, seen = [], [], 0
    while True:
        done = proc.poll() is not None
        t0 = time.perf_counter()
        try:
            data.refresh()
        except weighttui.LogFormatError:
            pass
        costs.append(time.perf_counter() - t0)
        now = time.time()
        if data.snapshot_count > seen:
            times = data._run.times.view
            lags.extend((now - times[seen:]).tolist())
            seen = data.snapshot_count
        if done:
            break
        time.sleep(0.05)
    out = proc.stdout.read().split()
    lags_a, costs_a = np.array(lags), np.array(costs)
    return {"snapshots": seen, "written": int(out[1]) if len(out) > 1 else None,
            "lag_p50_ms": float(np.percentile(lags_a, 50) * 1e3), "lag_p95_ms": float(np.percentile(lags_a, 95) * 1e3),
            "lag_max_ms": float(lags_a.max() * 1e3), "refresh_p50_ms": float(np.percentile(costs_a, 50) * 1e3),
            "refresh_max_ms": float(costs_a.max() * 1e3), "index_mb": du(index_dir(path)) / 2**20}


def nocache_only(path: str, before: str | None, env: dict, cache_home: str, py: str, load) -> None:
    """Reads without an index, each in a fresh process (before and after alternating when --before)."""
    rows = {}
    checkouts = [("before", env_for(before, cache_home))] if before else []
    checkouts.append(("after", env))
    for label, e in checkouts:
        rows[f"{label}: open(cache=False) reads"] = measured([py, "-c", NOCACHE_READS, path], e)
        # the viewer's row view (max_rows 2048): what its screens read without start/stop
        rows[f"{label}: open(cache=False, max_rows=2048)"] = measured([py, "-c", NOCACHE_READS, path, "2048"], e)
        rows[f"{label}: info --json --no-cache"] = measured([py, "-m", "weighttui.cli", "info", "--json",
                                                             "--no-cache", path], e)
    end = os.getloadavg()
    print(f"log: {path}, {os.path.getsize(path) / 2**30:.2f} GiB; load average {load[0]:.2f} -> {end[0]:.2f}")
    print(f"{'what':40s} {'wall s':>7s} {'cpu s':>6s} {'peak RSS MB':>11s}")
    for name, r in rows.items():
        print(f"{name:40s} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['peak_rss_mb']:11.0f}")
        reads = {k[:-3]: (v, r.get(k[:-3] + "_cpu_ms")) for k, v in r.items()
                 if k.endswith("_ms") and not k.endswith("_cpu_ms")}
        if reads:
            held = f", statistics held {r['stats_held_mb']:.0f} MB" if "stats_held_mb" in r else ""
            print(f"    open {r['open_s']:.2f} s ({r['open_cpu_s']:.2f} CPU){held}; ms wall/CPU: "
                  + ", ".join(f"{k} {w:.0f}/{c:.0f}" for k, (w, c) in reads.items()))
    print(json.dumps({"rows": rows, "load": [load, end]}, default=str))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--before", help="an older checkout (PYTHONPATH) whose reader is measured side by side")
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--live-rate", type=float, default=20.0)
    ap.add_argument("--live-tensors", type=int, default=500)
    ap.add_argument("--skip", action="append", default=[], help="parts to skip: before, nocache, parquet, info, live")
    ap.add_argument("--live-only", action="store_true", help="only the live append measurement")
    ap.add_argument("--nocache-only", action="store_true",
                    help="only the reads without an index (open(cache=False): open, series, histogram and sample "
                         "latency; info --json --no-cache), with --before side by side")
    ap.add_argument("--recorder-index", type=int, metavar="SNAPSHOTS",
                    help="only: the index size of a log the numpy Recorder writes (40 mixed tensors, this many "
                         "snapshots; 1500 is about 106 MiB), with --before side by side")
    args = ap.parse_args(argv)
    path = os.path.abspath(args.path)
    py = sys.executable
    tmp = tempfile.mkdtemp(prefix="bench_store-")
    cache_home = os.path.join(tmp, "xdg")
    env = env_for(REPO, cache_home)
    load = os.getloadavg()
    rows = {}
    if args.recorder_index:
        try:
            print(json.dumps(recorder_index_sizes(args.recorder_index, args.before, tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if args.nocache_only:
        try:
            nocache_only(path, args.before, env, cache_home, py, load)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if args.live_only:
        try:
            print(json.dumps({"load": os.getloadavg(), "live": live(args.live_seconds, args.live_rate,
                                                                    args.live_tensors, tmp)}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    try:
        shutil.rmtree(index_dir(path), ignore_errors=True)
        if args.before and "before" not in args.skip:
            benv = env_for(args.before, cache_home)
            rows["before: open + series + hist"] = measured([py, "-c", OPEN, path, "before"], benv)
            rows["before: reopen"] = measured([py, "-c", OPEN, path, "before"], benv)
            if "info" not in args.skip:
                shutil.rmtree(index_dir(path), ignore_errors=True)
                rows["before: info --json (no index)"] = measured([py, "-m", "weighttui.cli", "info", "--json", path],
                                                                  benv)
                rows["before: info --json (again)"] = measured([py, "-m", "weighttui.cli", "info", "--json", path],
                                                               benv)
            shutil.rmtree(index_dir(path), ignore_errors=True)
        if "nocache" not in args.skip:  # (holds the whole store in memory: skip it on a 10 GiB log)
            rows["store: cache=False"] = measured([py, "-c", OPEN, path, "nocache"], env)
        rows["store: first open (builds index)"] = measured([py, "-c", OPEN, path, "cache"], env)
        index_bytes = du(index_dir(path))
        parts = index_parts(index_dir(path))
        rows["store: reopen"] = measured([py, "-c", OPEN, path, "cache"], env)
        rows["store: reopen again"] = measured([py, "-c", OPEN, path, "cache"], env)
        if "info" not in args.skip:
            shutil.rmtree(index_dir(path), ignore_errors=True)
            rows["info --json (no index)"] = measured([py, "-m", "weighttui.cli", "info", "--json", path], env)
            rows["info --json (again)"] = measured([py, "-m", "weighttui.cli", "info", "--json", path], env)
            if "nocache" not in args.skip:
                rows["info --json --no-cache"] = measured([py, "-m", "weighttui.cli", "info", "--json",
                                                           "--no-cache", path], env)
        parquet = {}
        if "parquet" not in args.skip:
            out = os.path.join(tmp, "parquet")
            os.makedirs(out)
            w = measured([py, "-c", PARQUET_WRITE, path, out], env)
            parquet = {"write_s": w["write_s"], "size_mb": du(out) / 2**20}
            rows["parquet: open + series + hist"] = measured([py, "-c", PARQUET_READ, out, "100"], env)
        live_row = None
        if "live" not in args.skip and args.live_seconds > 0:
            live_row = live(args.live_seconds, args.live_rate, args.live_tensors, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = os.path.getsize(path)
    print(f"log: {path}, {size / 2**30:.2f} GiB; load average at start {load[0]:.2f}, at end "
          f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"{'what':36s} {'wall s':>7s} {'cpu s':>6s} {'open s':>7s} {'series ms':>9s} {'hist ms':>8s} "
          f"{'peak RSS MB':>11s}")
    for name, r in rows.items():
        opened = r.get("open_s")
        print(f"{name:36s} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {'' if opened is None else f'{opened:7.2f}':>7s} "
              f"{r.get('series_s', float('nan')) * 1e3:9.1f} {r.get('hist_s', float('nan')) * 1e3:8.1f} "
              f"{r['peak_rss_mb']:11.0f}")
    first = rows["store: first open (builds index)"]
    snaps, tensors = first.get("snapshots", 0), first.get("tensors", 0)
    for name in ("before: open + series + hist", "store: first open (builds index)"):
        if rows.get(name, {}).get("threads"):  # (how the reader and the index writer overlap)
            print(f"{name}, CPU s by thread: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in rows[name]["threads"].items()))
    print("index MiB by array: " + ", ".join(f"{k} {v}" for k, v in parts.items()))
    print(f"index on disk: {index_bytes / 2**20:.0f} MiB ({index_bytes / size:.2f} x the log); "
          f"ingest {snaps * tensors / first['open_s'] / 1e6:.2f} M tensor-snapshots/s on first open "
          + (f"({snaps * tensors / rows['store: cache=False']['open_s'] / 1e6:.2f} M/s without writing an index)"
             if "store: cache=False" in rows else ""))
    if "before: open + series + hist" in rows:
        b, br = rows["before: open + series + hist"], rows["before: reopen"]
        again = rows["store: reopen again"]
        print(f"before/after: first open {b['wall_s']:.2f} / {first['wall_s']:.2f} s wall, "
              f"{b['cpu_s']:.2f} / {first['cpu_s']:.2f} s CPU, peak RSS {b['peak_rss_mb']:.0f} / "
              f"{first['peak_rss_mb']:.0f} MB; reopen {br['wall_s']:.2f} / {again['wall_s']:.2f} s wall, "
              f"{br['cpu_s']:.2f} / {again['cpu_s']:.2f} s CPU")
    if parquet:
        print(f"parquet (zstd): {parquet['size_mb']:.0f} MiB, written in {parquet['write_s']:.2f} s from the store")
    if live_row:
        print("live: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in live_row.items()))
    print(json.dumps({"rows": rows, "parquet": parquet, "live": live_row, "index_bytes": index_bytes,
                      "index_parts": parts, "log_bytes": size, "load": load}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
