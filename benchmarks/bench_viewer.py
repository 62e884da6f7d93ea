"""Viewer benchmark: first screen, append-to-screen latency, 2,000 tensors, idle CPU, big-log memory.

    python benchmarks/bench_tui.py            # the headless measurements (about a minute)
    python benchmarks/bench_tui.py --tmux     # plus first screen in a real terminal (tmux)
    python benchmarks/bench_tui.py --big-mb 1024   # plus a log of that size: first screen, peak RSS

Logs are written frame by frame with synthetic statistics (the viewer's cost
does not depend on the values). Prints one line per measurement; nothing here
asserts a time. Targets (DESIGN.md): first screen < 0.5 s, append-to-screen
< 250 ms, a 1 GB log's first screen < 2 s with memory < 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from weighttui.logformat import HEADER, FrameType, encode_array, encode_frame
from weighttui.stats import DELTA_STATS, WEIGHT_STATS

BINS = 64


def _block(rng, t, names, hist=True):
    stats = np.abs(rng.normal(size=(t, len(names)))) + 1e-3
    out = {"names": list(names), "stats": encode_array(stats), "hist": None}
    if hist:
        lo = -np.ones(t)
        out["hist"] = {"lo": encode_array(lo), "hi": encode_array(-lo),
                       "counts": encode_array(rng.integers(0, 1000, size=(t, BINS)).astype("<u4"))}
    return out


def write_log(path, tensors: int, snapshots: int, *, end=True, target_bytes: int | None = None) -> int:
    """A log of `tensors` tensors (grouped 4 per layer) and `snapshots` snapshots (or until target_bytes)."""
    rng = np.random.default_rng(0)
    names = [f"model.layers.{i // 4}.{('q', 'k', 'v', 'o')[i % 4]}_proj.weight" for i in range(tensors)]
    with open(path, "wb") as fh:
        fh.write(HEADER + encode_frame(FrameType.RUN, {
            "run_id": "b" * 32, "created": time.time(), "host": "bench", "pid": 0, "argv": [],
            "framework": "numpy", "writer": "bench", "bins": BINS, "meta": {}}))
        fh.write(encode_frame(FrameType.TENSORS, {"tensors": [
            {"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": [256, 256], "dtype": "float32",
             "trainable": True, "sample_index": None} for i, n in enumerate(names)]}))
        # A few distinct payloads, re-used with new steps: encoding is not what is measured.
        blocks = [(_block(rng, tensors, WEIGHT_STATS), _block(rng, tensors, DELTA_STATS, hist=False),
                   _block(rng, tensors, WEIGHT_STATS, hist=False)) for _ in range(4)]
        ids = encode_array(np.arange(tensors, dtype="<u4"))
        step = 0
        while True:
            w, d, g = blocks[step % 4]
            fh.write(encode_frame(FrameType.SNAPSHOT, {
                "step": step, "epoch": step // 100, "batch": None, "time": time.time(), "ids": ids,
                "weights": w, "delta": d, "grad": g, "sample": None}))
            fh.write(encode_frame(FrameType.SCALARS, {"step": step, "epoch": step // 100, "time": time.time(),
                                                      "values": {"loss": 1.0 / (1 + step)}}))
            step += 1
            if target_bytes is not None:
                if fh.tell() >= target_bytes:
                    break
            elif step >= snapshots:
                break
        if end:
            fh.write(encode_frame(FrameType.END, {"time": time.time(), "status": "finished",
                                                  "snapshots": step, "dropped": 0}))
    return step


async def _first_screen(path, expect_n, size=(120, 40), max_rows=4096):
    from weighttui.tui.app import WeightApp

    t0 = time.perf_counter()
    app = WeightApp(path, mode="watch", alerts=True, max_rows=max_rows)
    async with app.run_test(size=size) as pilot:
        first = None
        while True:
            if first is None and app.refreshes and app.data.n:
                first = time.perf_counter() - t0
            if app.data.snapshot_count >= expect_n and app.refreshes:
                break
            await pilot.pause(0.005)
        loaded = time.perf_counter() - t0
        return app, first, loaded


def bench_first_screen(tmp, tensors, snapshots, label):
    path = os.path.join(tmp, f"first-{tensors}.wtui")
    write_log(path, tensors, snapshots)
    size = os.path.getsize(path)
    _app, first, loaded = asyncio.run(_first_screen(path, snapshots))
    print(f"first screen, {label} ({tensors} tensors x {snapshots} snapshots, {size / 1e6:.1f} MB): "
          f"{first * 1000:.0f} ms to first screen with data, {loaded * 1000:.0f} ms fully loaded "
          "(headless run_test, from app construction)")


async def _latency(path, rounds):
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.header import RunHeader

    rng = np.random.default_rng(1)
    app = WeightApp(path, mode="watch", alerts=True)
    lat = []
    with open(path, "rb") as fh:
        data = fh.read()
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.data.n:
            await pilot.pause(0.01)
        tensors = len(app.data.tensors)
        ids = encode_array(np.arange(tensors, dtype="<u4"))
        step = int(app.data.steps[-1])
        for _ in range(rounds):
            await pilot.pause(float(rng.uniform(0.05, 0.4)))  # land anywhere in the poll/refresh cycles
            step += 1
            frame = encode_frame(FrameType.SNAPSHOT, {
                "step": step, "epoch": None, "batch": None, "time": time.time(), "ids": ids,
                "weights": _block(rng, tensors, WEIGHT_STATS), "delta": None, "grad": None, "sample": None})
            header = app.screen.query_one(RunHeader)
            t0 = time.perf_counter()
            with open(path, "ab") as fh:
                fh.write(frame)
            want = f"step {step} "
            while want not in header.content.plain + " ":
                await pilot.pause(0.002)
            lat.append(time.perf_counter() - t0)
    del data
    return lat


def bench_latency(tmp, rounds=30):
    path = os.path.join(tmp, "latency.wtui")
    write_log(path, 50, 20, end=False)
    lat = asyncio.run(_latency(path, rounds))
    ms = sorted(x * 1000 for x in lat)
    print(f"append-to-screen latency, 50 tensors, {rounds} appends: median {statistics.median(ms):.0f} ms, "
          f"p90 {ms[int(0.9 * (len(ms) - 1))]:.0f} ms, max {ms[-1]:.0f} ms "
          "(write() to the header showing the new step, headless)")




def bench_2000(tmp):
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.layer_table import LayerTable

    path = os.path.join(tmp, "t2000.wtui")
    n = 200
    write_log(path, 2000, n)

    async def run():
        t0 = time.perf_counter()
        app = WeightApp(path, mode="watch", alerts=True)
        async with app.run_test(size=(160, 48)) as pilot:
            while not (app.refreshes and app.data.snapshot_count >= n):
                await pilot.pause(0.005)
            loaded = time.perf_counter() - t0
            table = app.screen.query_one(LayerTable)
            cells0 = table.cells_updated
            t1 = time.perf_counter()
            pages = 40
            for _ in range(pages):
                await pilot.press("pagedown")
            scroll = (time.perf_counter() - t1) / pages
            cells = table.cells_updated - cells0
            # One refresh of visible rows, as after each new snapshot.
            t2 = time.perf_counter()
            for _ in range(20):
                app._refresh_now(force=True)
            refresh = (time.perf_counter() - t2) / 20
            return loaded, scroll, cells, refresh, table.row_count

    loaded, scroll, cells, refresh, rows = asyncio.run(run())
    print(f"2,000 tensors x {n} snapshots ({os.path.getsize(path) / 1e6:.0f} MB): loaded+first screen "
          f"{loaded * 1000:.0f} ms; {rows} table rows; page down {scroll * 1000:.1f} ms per page "
          f"({cells} cells recomputed over 40 pages); one data refresh {refresh * 1000:.1f} ms")


def bench_idle_cpu(tmp, seconds=10.0):
    from weighttui.tui.app import WeightApp

    path = os.path.join(tmp, "idle.wtui")
    write_log(path, 50, 100, end=False)

    async def run():
        app = WeightApp(path, mode="watch", alerts=True)
        async with app.run_test(size=(120, 40)) as pilot:
            while not app.data.snapshot_count >= 100:
                await pilot.pause(0.01)
            await pilot.pause(3.0)  # past the fast-poll period after the last growth
            c0, t0 = time.process_time(), time.perf_counter()
            await pilot.pause(seconds)
            return (time.process_time() - c0) / (time.perf_counter() - t0)

    share = asyncio.run(run())
    print(f"CPU while following an idle log: {share * 100:.1f}% of one core over {seconds:.0f} s "
          "(process time, headless; includes the follower polling every 0.12 s)")


def bench_big(tmp, megabytes):
    path = os.path.join(tmp, "big.wtui")
    t0 = time.perf_counter()
    n = write_log(path, 300, 0, target_bytes=megabytes * 1024 * 1024)
    size = os.path.getsize(path)
    print(f"(wrote {size / 1e9:.2f} GB, 300 tensors x {n} snapshots in {time.perf_counter() - t0:.0f} s)")
    code = ("import asyncio, resource, sys, time; sys.path.insert(0, %r)\n"
            "import bench_tui as b\n"
            "app, first, loaded = asyncio.run(b._first_screen(%r, %d))\n"
            "print(first, loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
            % (os.path.dirname(os.path.abspath(__file__)), path, n))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode:
        print(out.stderr[-3000:])
        return
    first, loaded, rss = map(float, out.stdout.split()[-3:])
    print(f"big log {size / 1e9:.2f} GB (300 tensors x {n} snapshots, max_rows 4096): first screen "
          f"{first * 1000:.0f} ms, fully loaded {loaded:.1f} s, peak RSS {rss:.0f} MB")


def bench_tmux(tmp):
    path = os.path.join(tmp, "tmux.wtui")
    write_log(path, 50, 500)
    sock = f"wt-bench-{os.getpid()}"
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-x", "120", "-y", "40",
                        f"{sys.executable} -m weighttui.cli watch {path}"], check=True)
        while True:
            screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p"], capture_output=True,
                                    text=True).stdout
            if "step 499" in screen and "q_proj" in screen:
                break
            time.sleep(0.01)
        times.append(time.perf_counter() - t0)
        subprocess.run(["tmux", "-L", sock, "kill-server"])
        time.sleep(0.3)
    print(f"first screen in tmux, `weighttui watch` on a 50-tensor x 500-snapshot log: "
          f"{' / '.join(f'{t * 1000:.0f}' for t in times)} ms (process start, imports included)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tmux", action="store_true")
    ap.add_argument("--big-mb", type=int, default=0)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_first_screen(tmp, 50, 1000, "existing log")
        bench_latency(tmp)
        bench_2000(tmp)
        bench_idle_cpu(tmp)
        if args.tmux:
            bench_tmux(tmp)
        if args.big_mb:
            bench_big(tmp, args.big_mb)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
