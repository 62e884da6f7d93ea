"""Viewer benchmark: first screen, append-to-screen latency, scrolling 2,000 tensors, idle CPU, big-log memory.

    python benchmarks/bench_viewer.py                 # the headless measurements (a minute or two)
    python benchmarks/bench_viewer.py --tmux          # plus first screen in a real terminal (tmux)
    python benchmarks/bench_viewer.py --big-mb 1024   # plus a 1 GB log (make_big_log.py, under $TMPDIR):
                                                      # first screen, fully loaded, peak RSS
    python benchmarks/bench_viewer.py --only scroll --tensors 2000   # one part
    python benchmarks/bench_viewer.py --only replay   # ← → at full resolution on a thinned run (~30 s)
    python benchmarks/bench_viewer.py --only bigreplay --big-log LOG   # `replay` on a big log as a user
                                                      # walks it: first screen, keys, RSS from outside

Logs are written frame by frame with synthetic statistics (the viewer's cost
does not depend on the values). Prints one line per measurement; nothing here
asserts a time. Targets (docs/architecture.md): first screen < 0.5 s, append-to-screen
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

from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

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
            {"id": i, "name": n, "layer": n.rsplit(".", 2)[0], "shape": [256, 256], "dtype": "float32",
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


def _first_data_at(app):
    """When the first screen with snapshots was drawn (older versions: now, if there is one)."""
    if hasattr(app, "first_data_at"):
        return app.first_data_at
    return time.monotonic() if app.refreshes and app.data.n else None


async def _first_screen(path, expect_n, size=(120, 40), max_rows=None):
    """(app, seconds to the first screen with data, seconds to fully loaded), from app construction.

    Fully loaded: `expect_n` snapshots read, or (None) the end record read and nothing left to ingest.
    """
    from weighttui.tui.app import WeightApp

    t0 = time.monotonic()
    options = {} if max_rows is None else {"max_rows": max_rows}  # default: what `weighttui watch` uses
    app = WeightApp(path, mode="watch", alerts=True, **options)
    async with app.run_test(size=size) as pilot:
        first = None
        while True:
            if first is None and _first_data_at(app) is not None:
                first = _first_data_at(app) - t0
            if expect_n is not None:
                done = app.data.snapshot_count >= expect_n
            else:
                done = app.data.end is not None and app.loading is None and not app.follower.backlog
            if done and app.refreshes and first is not None:
                break
            await pilot.pause(0.005)
        loaded = time.monotonic() - t0
        return app, first, loaded


def bench_first_screen(tmp, tensors, snapshots, label):
    path = os.path.join(tmp, f"first-{tensors}.wtui")
    write_log(path, tensors, snapshots)
    size = os.path.getsize(path)
    _app, first, loaded = asyncio.run(_first_screen(path, snapshots))
    print(f"first screen, {label} ({tensors} tensors x {snapshots} snapshots, {size / 1e6:.1f} MB): "
          f"{first * 1000:.0f} ms to first screen with data, {loaded * 1000:.0f} ms fully loaded "
          "(headless run_test, from app construction)")


async def _latency(path, rounds, expect_n):
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.header import RunHeader

    rng = np.random.default_rng(1)
    app = WeightApp(path, mode="watch", alerts=True)
    lat = []
    with open(path, "rb") as fh:
        data = fh.read()
    async with app.run_test(size=(120, 40)) as pilot:
        while app.data.snapshot_count < expect_n or app.follower.backlog:  # all read: steps go on from the last
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
    lat = asyncio.run(_latency(path, rounds, 20))
    ms = sorted(x * 1000 for x in lat)
    print(f"append-to-screen latency, 50 tensors, {rounds} appends: median {statistics.median(ms):.0f} ms, "
          f"p90 {ms[int(0.9 * (len(ms) - 1))]:.0f} ms, max {ms[-1]:.0f} ms "
          "(write() to the header showing the new step, headless)")




async def _live(path, writer, index_save_s):
    """Follow a live log in the real app (headless) while `writer` writes it; per step that reached the
    header, the time from the snapshot's time stamp (taken by the writer when it submitted the
    snapshot, so the writer's own queue and encoding count too) to the header showing it. Also the
    UI thread's longest pauses: taking the index's save (written on a thread of its own) and computing
    the alerts (on the UI thread)."""
    import weighttui.tui.app as appmod
    from weighttui.data.run import RunData
    from weighttui.tui.widgets.header import RunHeader

    appmod.INDEX_SAVE_S = index_save_s  # extend the log's index on disk this often while following
    from weighttui.data.store.builder import RunState

    spent: dict[str, list[float]] = {"ingest": [], "seal": [], "save_index": [], "index_save": [],
                                     "index_write": [], "alerts": [], "draw": [], "stall": []}
    cpu: dict[str, list[float]] = {name: [] for name in spent}  # the UI thread's CPU time in each

    def timed(name, fn):
        def wrapper(*a, **kw):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name].append(time.perf_counter() - t)
                cpu[name].append(time.thread_time() - c)
        return wrapper

    # When each byte reached the file: a thread polls its size every 2 ms (the writer appends a frame
    # with one write()), so a step's append-to-screen time is from its frame's last byte in the file.
    import threading

    grown: list[tuple[float, int]] = []
    watching = threading.Event()

    def watch_size():
        while not watching.is_set():
            try:
                size = os.path.getsize(path)
            except OSError:
                size = 0
            if not grown or size != grown[-1][1]:
                grown.append((time.time(), size))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch_size, daemon=True)
    watcher.start()
    fd = os.open(path, os.O_RDONLY)

    def appended_at(data, step):
        lo, hi = data.rows_for_steps(step, step + 1)
        _steps, offsets = data.snapshot_rows(lo, hi)
        if not len(offsets):
            return None
        head = os.pread(fd, 8, int(offsets[0]))
        end = int(offsets[0]) + 20 + int.from_bytes(head[4:8], "little")  # docs/FORMAT.md: the frame's LEN
        return next((t for t, size in grown if size >= end), None)

    app = appmod.WeightApp(path, mode="watch", alerts=True)
    save_index, seal = RunData.save_index, RunState.seal
    RunData.save_index = timed("save_index", save_index)  # type: ignore[method-assign]
    RunState.seal = timed("seal", seal)  # type: ignore[method-assign]
    # the index saved while following: index_save is its part on the UI thread, index_write the
    # rest on the saver's thread (not the UI thread's time)
    from weighttui.data.run import IndexSave

    index_save, index_write = RunData.index_save, IndexSave.write
    RunData.index_save = timed("index_save", index_save)  # type: ignore[method-assign]
    IndexSave.write = timed("index_write", index_write)  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            while not (app.data.n and app.screen.query(RunHeader)):
                await pilot.pause(0.005)
            app._update_alerts = timed("alerts", app._update_alerts)
            app._ingest = timed("ingest", app._ingest)
            app.pump._redraw = timed("draw", app.pump._redraw)
            lat, lat_append, shown = [], [], None
            c0, t0 = time.process_time(), time.perf_counter()
            last, last_cpu = time.perf_counter(), time.thread_time()
            while writer.poll() is None or (app.data.end is None and time.perf_counter() - t0 < 60):
                now, now_cpu = time.perf_counter(), time.thread_time()
                spent["stall"].append(now - last - 0.005)  # the UI thread's pause beyond the 5 ms asked for
                cpu["stall"].append(now_cpu - last_cpu)
                last, last_cpu = now, now_cpu
                data = app.data
                line = app.screen.query_one(RunHeader).content.plain.splitlines()[-1]
                if line.startswith("step "):
                    step = int(line.split()[1])
                    if step != shown and data.n:
                        shown = step
                        row = int(np.searchsorted(data.steps, step, side="right")) - 1
                        if row >= 0 and int(data.steps[row]) == step:
                            now_wall = time.time()
                            lat.append(now_wall - float(data.times[row]))
                            at = appended_at(data, step)
                            if at is not None:
                                lat_append.append(now_wall - at)
                await pilot.pause(0.005)
            share = (time.process_time() - c0) / (time.perf_counter() - t0)
            return lat, lat_append, share, app.data.snapshot_count, app.data.index_path, spent, cpu
    finally:
        watching.set()
        os.close(fd)
        RunData.save_index = save_index  # type: ignore[method-assign]
        RunState.seal = seal  # type: ignore[method-assign]
        RunData.index_save = index_save  # type: ignore[method-assign]
        IndexSave.write = index_write  # type: ignore[method-assign]


def bench_live(tmp, seconds=15.0, rate=20.0, tensors=500, index_save_s=10.0):
    """Append-to-screen while a run is live: `tensors` tensors at `rate` snapshots a second, the index
    extended as the log grows (segments sealed into it; the app writes it every `index_save_s`)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_scale import WRITER  # the live writer: precomputed blocks at a fixed rate

    path = os.path.join(tmp, "live.wtui")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(seconds), str(rate), str(tensors), "10000"],
                              stdout=subprocess.PIPE, text=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    lat, lat_append, share, seen, index, spent, cpu = asyncio.run(_live(path, writer, index_save_s))
    out = writer.stdout.read().split()
    ms = np.array(lat) * 1000
    ams = np.array(lat_append) * 1000
    index_mb = (sum(os.path.getsize(os.path.join(index, f)) for f in os.listdir(index)) / 2**20
                if index and os.path.isdir(index) else 0.0)
    print(f"live append-to-screen, {tensors} tensors at {rate:g} snapshots/s for {seconds:g} s "
          f"({os.path.getsize(path) / 2**20:.0f} MiB, {seen} snapshots read of {out[1] if len(out) > 1 else '?'} "
          f"written; index {index_mb:.0f} MiB, written every {index_save_s:g} s while following): "
          f"{len(ms)} steps reached the header; its frame's last byte in the file to the header: median "
          f"{np.median(ams):.0f} ms, p95 {np.percentile(ams, 95):.0f} ms, max {ams.max():.0f} ms (target < 250 ms); "
          f"the writer's time stamp (at submit) to the header: median {np.median(ms):.0f} ms, "
          f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms; viewer CPU "
          f"{share * 100:.0f}% of one core (headless, the header polled every 5 ms); on the UI thread "
          f"(index_write: on the saver's thread), wall (CPU of the longest): "
          + "; ".join(f"{name} x{len(v)} median {np.median(v) * 1000:.1f} max {max(v) * 1000:.0f} "
                      f"({cpu[name][int(np.argmax(v))] * 1000:.0f}) ms" for name, v in spent.items() if v), flush=True)


def bench_2000(tmp, tensors=2000, n=200, pages=40, lines=60):
    """Scrolling a big table: key-to-idle time and CPU per page down / line down, and one data refresh.

    `pilot.press` returns once the app is idle again (the key handled and the
    screen repainted by the headless driver); CPU is this process's time, so
    it is much less sensitive to other jobs on the machine than the wall time.
    """
    from weighttui.tui.app import WeightApp
    from weighttui.tui.widgets.layer_table import LayerTable

    path = os.path.join(tmp, f"t{tensors}.wtui")
    write_log(path, tensors, n)

    async def timed(pilot, key, count):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(count):
            await pilot.press(key)
        await pilot.pause()
        return (time.perf_counter() - w0) / count, (time.process_time() - c0) / count

    async def run():
        t0 = time.perf_counter()
        app = WeightApp(path, mode="watch", alerts=True)
        async with app.run_test(size=(160, 48)) as pilot:
            while not (app.refreshes and app.data.snapshot_count >= n):
                await pilot.pause(0.005)
            loaded = time.perf_counter() - t0
            while app._alerts_dirty and app._diagnose is not None:  # alerts once, outside the timings
                await pilot.pause(0.1)
            await pilot.pause(0.3)
            table = app.screen.query_one(LayerTable)
            cells0 = table.cells_updated
            floor = await timed(pilot, "x", 20)  # a key bound to nothing: what Pilot itself costs
            page = await timed(pilot, "pagedown", pages)
            cells = table.cells_updated - cells0
            line = await timed(pilot, "down", lines)
            back = await timed(pilot, "pageup", pages)
            sort = await timed(pilot, "s", 5)  # name, update ratio, norm change, alerts, model
            await pilot.press("slash")
            typed = await timed(pilot, "1", 3)  # the filter re-arranges the rows on every key
            await pilot.press("escape")
            # One refresh of the visible rows at another snapshot, as after each new one (paint not included).
            t2 = time.perf_counter()
            for i in range(20):
                app.position = app.data.n - 2 - i % 2  # new values in every visible row each time
            refresh = (time.perf_counter() - t2) / 20
            return loaded, floor, page, line, back, sort, typed, cells, refresh, table.row_count

    loaded, floor, page, line, back, sort, typed, cells, refresh, rows = asyncio.run(run())
    print(f"{tensors:,} tensors x {n} snapshots ({os.path.getsize(path) / 1e6:.0f} MB), 160x48: loaded+first "
          f"screen {loaded * 1000:.0f} ms; {rows} table rows; a key bound to nothing {floor[0] * 1000:.1f} ms "
          f"wall / {floor[1] * 1000:.1f} ms CPU; page down {page[0] * 1000:.1f} ms wall / "
          f"{page[1] * 1000:.1f} ms CPU per page ({cells} cells recomputed over {pages} pages); "
          f"page up {back[0] * 1000:.1f} / {back[1] * 1000:.1f} ms; line down {line[0] * 1000:.1f} / "
          f"{line[1] * 1000:.1f} ms; sort (s) {sort[0] * 1000:.0f} / {sort[1] * 1000:.0f} ms; a key typed in the "
          f"filter {typed[0] * 1000:.0f} / {typed[1] * 1000:.0f} ms; one timeline move (data refresh of header, "
          f"scalars and the visible rows, paint not included) "
          f"{refresh * 1000:.1f} ms")


def bench_replay(tmp, tensors=500, snapshots=6000, presses=40):
    """Replay at full resolution: → on a run whose row view is thinned (6,000 snapshots, at most
    2,048 rows: every 4th snapshot is a row), 500 tensors, 160x48, the real app headless. Per key:
    the app's part (the step, reading the snapshot's values from the store, the overview's
    redraw), called directly; CPU (thread time) and wall, onto a row and between rows."""
    path = os.path.join(tmp, "replay.wtui")
    write_log(path, tensors, snapshots)
    from weighttui.tui.app import WeightApp

    async def run():
        app = WeightApp(path, mode="replay", alerts=False)
        async with app.run_test(size=(160, 48)) as pilot:
            while app.data.row_count < snapshots or app.data.end is None:
                await pilot.pause(0.05)
            await pilot.pause(0.2)
            app.action_first()
            on, off = [], []
            for _ in range(presses):
                t, c = time.perf_counter(), time.thread_time()
                app.action_step(1)
                (off if app.view().snapshot is not None else on).append(
                    (time.perf_counter() - t, time.thread_time() - c))
                await pilot.pause(0)
            return app.data.n, on, off

    n, on, off = asyncio.run(run())

    def ms(v, i):
        return f"median {statistics.median(x[i] for x in v) * 1000:.1f} max {max(x[i] for x in v) * 1000:.1f} ms"

    print(f"replay at full resolution, {tensors} tensors, {snapshots} snapshots ({n} rows): → onto a row "
          f"x{len(on)}: CPU {ms(on, 1)}, wall {ms(on, 0)}; → between rows (values read from the store) "
          f"x{len(off)}: CPU {ms(off, 1)}, wall {ms(off, 0)}")


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


BIG = """
import time
t0 = time.monotonic()  # the interpreter has started; imports from here on count
import asyncio, sys

async def main(path):
    from weighttui.tui.app import WeightApp
    imported = time.monotonic() - t0
    app = WeightApp(path, mode="watch", alerts=True)
    first = first_step = first_cpu = None
    async with app.run_test(size=(120, 40)) as pilot:
        while True:
            if first is None and app.first_data_at is not None:
                first, first_step = app.first_data_at - t0, int(app.data.steps[app.row])
                first_cpu = time.process_time()
            if first is not None and app.data.end is not None and app.loading is None and not app.follower.backlog:
                break
            await pilot.pause(0.005)
        loaded = time.monotonic() - t0
        # VmHWM, not ru_maxrss: that one carries over the parent's peak at fork (the live part's)
        with open("/proc/self/status") as fh:
            hwm = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        print("RESULT", imported, first, first_cpu, first_step, int(app.data.steps[-1]), loaded,
              hwm / 1024, app.data.n, app.data.snapshot_count,
              app.data.max_rows, time.process_time(), flush=True)

asyncio.run(main(sys.argv[1]))
"""


# The same, with nowhere to write an index (read-only media: the one check the store makes before
# writing says no, as in tests/unit/test_store.py): the viewer holds what it read itself.
BIG_READONLY = "import weighttui.data.store.index as _index\n_index.writable = lambda d: False\n" + BIG


def bench_big(tmp, megabytes, existing=None, readonly=False):
    """A big finished log (benchmarks/make_big_log.py), `watch` headless in a fresh process: without an
    index (the latest snapshots first, the log indexed behind them), then again with the index it left.
    readonly: once, with nowhere to write an index."""
    import shutil

    path = existing
    if path is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import make_big_log

        path = os.path.join(tmp, "big.wtui")
        out = make_big_log.make(path, size_mb=megabytes, tensors=200, bins=32, sample=8, full_every=2000)
        print(f"(wrote {out['bytes'] / 2**20:.0f} MiB, {out['tensors']} tensors x {out['snapshots']} snapshots "
              f"in {out['seconds']:.0f} s)")
    size = os.path.getsize(path)
    index = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.wtuidx")
    shutil.rmtree(index, ignore_errors=True)  # (an index in the cache directory is not removed)
    code = BIG_READONLY if readonly else BIG
    for label in (("nowhere to write an index",) if readonly else ("no index", "with the index it left")):
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=1800)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
        if out.returncode or not line:
            print(out.stderr[-3000:])
            return
        imported, first, first_cpu, first_step, last_step, loaded, rss, rows, snaps, max_rows, cpu = map(
            float, line[-1].split()[1:])
        print(f"big log {size / 2**20:.0f} MiB ({snaps:.0f} snapshots, {rows:.0f} rows kept with max_rows "
              f"{max_rows:.0f}), `watch` headless in a fresh process, {label}: first screen {first * 1000:.0f} ms "
              f"after the interpreter started ({first_cpu * 1000:.0f} ms of CPU since the process started; imports "
              f"{imported * 1000:.0f} ms) showing step {first_step:.0f} "
              f"(latest {last_step:.0f}); whole history {loaded:.1f} s; CPU {cpu:.1f} s; peak RSS {rss:.0f} MB",
              flush=True)


# `replay` on a big log as a user walks it, in a fresh process (headless, 160x48): the first screen,
# the whole history, then keys; per key the wall and CPU time from the press to the screen drawn
# (Pilot's press waits for the app to process it and paint).
BIG_REPLAY = """
import time
t0 = time.monotonic()
import asyncio, sys

JOURNEY = (["right"] * 5 + ["shift+right"] * 3 + ["left"] * 3 + ["shift+left", "end", "left", "left"]
           + ["s", "s", "s", "s", "s", "c", "a", "left", "left", "left", "b", "shift+left", "b", "escape"]
           + ["enter", "left", "i", "i", "i", "left", "left", "o", "0", "d", "g", "w", "escape"])

async def main(path):
    from weighttui.tui.app import WeightApp
    app = WeightApp(path, mode="replay", alerts=True)
    first = first_cpu = None
    async with app.run_test(size=(160, 48)) as pilot:
        while True:
            if first is None and app.first_data_at is not None:
                first, first_cpu = app.first_data_at - t0, time.process_time()
            if first is not None and app.data.end is not None and app.loading is None and not app.follower.backlog:
                break
            await pilot.pause(0.005)
        loaded, loaded_cpu = time.monotonic() - t0, time.process_time()
        await pilot.pause(1.1)  # the alerts at the first snapshot
        keys = []
        for key in JOURNEY:
            t, c = time.perf_counter(), time.process_time()
            await pilot.press(key)
            keys.append((key, time.perf_counter() - t, time.process_time() - c))
        with open("/proc/self/status") as fh:
            hwm = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        print("RESULT", first, first_cpu, loaded, loaded_cpu, hwm / 1024, app.data.n, app.data.snapshot_count,
              flush=True)
        for key, wall, cpu in keys:
            print("KEY", key, wall, cpu, flush=True)

asyncio.run(main(sys.argv[1]))
"""


def bench_big_replay(tmp, megabytes, existing=None):
    """`weighttui replay` on a big log as a user walks it (BIG_REPLAY), without an index and then with
    the index it left; peak RSS measured from outside (childproc: VmHWM polled, CPU from wait4)."""
    import shutil

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from childproc import wait_measured

    path = existing
    if path is None:
        import make_big_log

        path = os.path.join(tmp, "big.wtui")
        make_big_log.make(path, size_mb=megabytes, tensors=200, bins=64, sample=8, full_every=2000)
    size = os.path.getsize(path)
    index = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.wtuidx")
    shutil.rmtree(index, ignore_errors=True)  # (an index in the cache directory is not removed)
    for label in ("no index", "with the index it left"):
        load = os.getloadavg()[0]
        proc = subprocess.Popen([sys.executable, "-c", BIG_REPLAY, path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        code, cpu, peak = wait_measured(proc)
        out, err = proc.communicate()
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
        if code or not line:
            print(err[-3000:])
            return
        first, first_cpu, loaded, loaded_cpu, hwm, rows, snaps = map(float, line[-1].split()[1:])
        keys = [(k, float(w), float(c)) for _tag, k, w, c in (ln.split() for ln in out.splitlines()
                                                                if ln.startswith("KEY"))]
        worst = sorted(keys, key=lambda x: -x[1])[:5]
        print(f"replay, big log {size / 2**20:.0f} MiB ({snaps:.0f} snapshots, {rows:.0f} rows), {label} (load "
              f"{load:.1f}): first screen {first * 1000:.0f} ms after the interpreter started "
              f"({first_cpu * 1000:.0f} ms CPU); whole history {loaded:.1f} s ({loaded_cpu:.1f} s CPU); "
              f"{len(keys)} keys: wall median {statistics.median(k[1] for k in keys) * 1000:.0f} ms, CPU median "
              f"{statistics.median(k[2] for k in keys) * 1000:.0f} ms; slowest "
              + ", ".join(f"{k} {w * 1000:.0f}/{c * 1000:.0f} ms" for k, w, c in worst)
              + f" (wall/CPU); peak RSS from outside {peak / 2**20:.0f} MB (VmHWM inside {hwm:.0f} MB); "
              f"process CPU {cpu:.1f} s", flush=True)


COLD = """
import sys, time
t0 = time.perf_counter()
import asyncio
from weighttui.tui.app import WeightApp
imported = time.perf_counter() - t0

async def main(path):
    app = WeightApp(path, mode="watch", alerts=True)
    async with app.run_test(size=(120, 40)) as pilot:
        while getattr(app, "first_data_at", None) is None and not (app.refreshes and app.data.n):
            await pilot.pause(0.002)
        print("READY", imported, time.perf_counter() - t0, flush=True)

asyncio.run(main(sys.argv[1]))
"""


def bench_cold(tmp, runs=5):
    """Process start to the first screen with data, headless: Python start-up and imports included.

    "First screen" is the first refresh of the widgets with snapshots; the
    paint follows within a frame (the tmux part measures what a terminal shows).
    """
    path = os.path.join(tmp, "cold.wtui")
    write_log(path, 50, 500)
    total, imports, inside = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", COLD, path], stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("READY"):
                total.append(time.perf_counter() - t0)
                _, imp, ins = line.split()
                imports.append(float(imp))
                inside.append(float(ins))
                break
        proc.wait(timeout=60)
    med = statistics.median
    print(f"first screen from process start, headless, 50 tensors x 500 snapshots, {runs} runs: median "
          f"{med(total) * 1000:.0f} ms (min {min(total) * 1000:.0f}, max {max(total) * 1000:.0f}); of which "
          f"importing weighttui.tui.app {med(imports) * 1000:.0f} ms, interpreter start "
          f"{(med(total) - med(inside)) * 1000:.0f} ms")


BARE_APP = """
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("bare textual app ready")
Bare().run()
"""


def bench_tmux(tmp, runs=7, caches=("env", "cached")):
    """`weighttui watch` in tmux against the floor, a bare Textual app that paints one line (runs
    interleaved, same terminal): process start to the first paint (the header), to the table with a
    step, and to the latest step; and the bare app importing numpy first.

    caches: "env" runs as this environment is (PYTHONDONTWRITEBYTECODE=1 here, and weighttui's tree
    has no __pycache__, so its modules are compiled at every start); "cached" runs with bytecode
    cached (PYTHONPYCACHEPREFIX in a temporary directory, warmed by one run of each program first),
    as an installed package is.
    """
    import re

    path = os.path.join(tmp, "tmux.wtui")
    write_log(path, 50, 500)
    bare = os.path.join(tmp, "bare_app.py")
    with open(bare, "w") as fh:
        fh.write(BARE_APP)
    bare_np = os.path.join(tmp, "bare_numpy_app.py")
    with open(bare_np, "w") as fh:
        fh.write("import numpy\n" + BARE_APP)  # the reader needs numpy: what that alone adds to the floor
    sock = f"wt-bench-{os.getpid()}"
    title = f"weighttui · {os.path.basename(path)}"

    def until(command, env, marks):
        """Seconds from starting `command` in a fresh tmux until each of `marks` (screen -> bool) held."""
        t0 = time.perf_counter()
        subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-x", "120", "-y", "40", *env, command],
                       check=True)
        seen = [None] * len(marks)
        while True:
            screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p"], capture_output=True,
                                    text=True).stdout
            now = time.perf_counter() - t0
            for i, mark in enumerate(marks):
                if seen[i] is None and mark(screen):
                    seen[i] = now
            if all(t is not None for t in seen):
                break
            if now > 60:
                raise RuntimeError(f"{command} did not paint within 60 s:\n" + screen)
            time.sleep(0.01)  # each capture is a tmux process: polling harder loads the machine
        subprocess.run(["tmux", "-L", sock, "kill-server"])
        time.sleep(0.3)
        return seen

    med = statistics.median
    ms = lambda xs: " / ".join(f"{t * 1000:.0f}" for t in xs)
    watch = f"{sys.executable} -m weighttui.cli watch {path}"
    for cache in caches:
        # tmux's new-session -e sets the command's environment (the server keeps the one it started with)
        if cache == "env":
            env: list[str] = []
        else:
            prefix = os.path.join(tmp, "pycache")
            env = ["-e", "PYTHONDONTWRITEBYTECODE=", "-e", f"PYTHONPYCACHEPREFIX={prefix}"]
            for command in (bare, bare_np):  # warm the cache
                until(f"{sys.executable} {command}", env, [lambda s: "bare textual app ready" in s])
            until(watch, env, [lambda s: "step 499" in s])
        floor, floor_np, paint, table, latest = [], [], [], [], []
        for _ in range(runs):
            floor += until(f"{sys.executable} {bare}", env, [lambda s: "bare textual app ready" in s])
            floor_np += until(f"{sys.executable} {bare_np}", env, [lambda s: "bare textual app ready" in s])
            a, b, c = until(watch, env, [lambda s: title in s,
                                         lambda s: bool(re.search(r"step\s+\d+", s)) and "q_proj" in s,
                                         lambda s: "step 499" in s and "q_proj" in s])
            paint.append(a)
            table.append(b)
            latest.append(c)
        bytecode = os.environ.get("PYTHONDONTWRITEBYTECODE") and "PYTHONDONTWRITEBYTECODE=1, " or ""
        what = (f"as this environment is ({bytecode}weighttui compiled at each start unless its tree has "
                f"__pycache__)" if cache == "env" else "bytecode cached (PYTHONPYCACHEPREFIX, warmed)")
        print(f"tmux, {what}, {runs} runs interleaved, process start (imports included): a bare Textual app "
              f"painting one line (the floor) median {med(floor) * 1000:.0f} ms ({ms(floor)}); "
              f"`weighttui watch` on a 50-tensor x 500-snapshot log (12 MB): first paint (the header) median "
              f"{med(paint) * 1000:.0f} ms ({ms(paint)}), ratio {med(paint) / med(floor):.2f}x the floor "
              f"(target <= 1.3x); the table with a step median {med(table) * 1000:.0f} ms ({ms(table)}, "
              f"{med(table) / med(floor):.2f}x); latest step median {med(latest) * 1000:.0f} ms; the bare app "
              f"importing numpy first: median {med(floor_np) * 1000:.0f} ms "
              f"({med(floor_np) / med(floor):.2f}x the floor)", flush=True)


# Process start to the first frame (Textual's Ready event) with the terminal driver headless, so the
# CPU time the process spent is measured (less sensitive to other jobs than the wall time in tmux).
READY_BARE = """
import time
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("bare textual app ready")
    def on_ready(self):
        print("READY", time.process_time(), flush=True)
        self.exit()
Bare().run(headless=True)
"""

READY_WATCH = """
import sys, time
import textual.app
_run = textual.app.App.run
textual.app.App.run = lambda self, *a, **kw: _run(self, *a, **{**kw, "headless": True})
import weighttui.tui.app as appmod
def on_ready(self):
    print("READY", time.process_time(), ",".join(m for m in ("numpy", "weighttui.data.run") if m in sys.modules),
          flush=True)
    self.exit()
appmod.WeightApp.on_ready = on_ready
from weighttui.cli.main import main
main(["watch", sys.argv[1]])
"""


def bench_paint_cpu(tmp, runs=7):
    """CPU time from process start to the first frame: a bare Textual app that paints one line against
    `weighttui watch` (through cli.main.main), headless, interleaved, with the environment as it is."""
    path = os.path.join(tmp, "paint.wtui")
    write_log(path, 50, 500)
    bare, watch = [], []
    for _ in range(runs):
        for code, out, args in ((READY_BARE, bare, []), (READY_WATCH, watch, [path])):
            got = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
            line = [ln for ln in got.stdout.splitlines() if ln.startswith("READY")]
            if not line:
                print(got.stderr[-2000:])
                return
            out.append(float(line[-1].split()[1]))
            if len(line[-1].split()) > 2:
                raise RuntimeError(f"imported before the first frame: {line[-1].split()[2]}")
    med = statistics.median
    print(f"CPU time from process start to the first frame (headless driver, {runs} runs interleaved): bare "
          f"Textual app painting one line median {med(bare) * 1000:.0f} ms, `weighttui watch` median "
          f"{med(watch) * 1000:.0f} ms: {med(watch) / med(bare):.2f}x", flush=True)


PARTS = ("first", "cold", "paintcpu", "latency", "live", "scroll", "idle", "tmux", "big", "replay", "bigreplay")
DEFAULT_PARTS = ("first", "cold", "paintcpu", "latency", "live", "scroll", "idle")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: %(default)s)")
    ap.add_argument("--tmux", action="store_true", help="add the tmux part")
    ap.add_argument("--big-mb", type=int, default=0, help="add the big-log part with a log of this size")
    ap.add_argument("--big-readonly", action="store_true",
                    help="big part: the viewer with nowhere to write an index (read-only media), instead")
    ap.add_argument("--big-log", help="use this existing big log instead of writing one")
    ap.add_argument("--tensors", type=int, default=2000, help="tensors for the scroll part")
    ap.add_argument("--live-seconds", type=float, default=15.0, help="how long the live part's writer runs")
    ap.add_argument("--index-save-s", type=float, default=10.0,
                    help="live part: the app writes the index this often while following (its default: 10)")
    args = ap.parse_args()
    parts = [p for p in args.only.split(",") if p]
    if args.tmux:
        parts.append("tmux")
    if (args.big_mb or args.big_log) and "bigreplay" not in parts:
        parts.append("big")
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        if "first" in parts:
            bench_first_screen(tmp, 50, 1000, "existing log")
        if "cold" in parts:
            bench_cold(tmp)
        if "paintcpu" in parts:
            bench_paint_cpu(tmp)
        if "latency" in parts:
            bench_latency(tmp)
        if "live" in parts:
            bench_live(tmp, seconds=args.live_seconds, index_save_s=args.index_save_s)
        if "scroll" in parts:
            bench_2000(tmp, tensors=args.tensors)
        if "idle" in parts:
            bench_idle_cpu(tmp)
        if "replay" in parts:
            bench_replay(tmp)
        if "tmux" in parts:
            bench_tmux(tmp)
        if "big" in parts:
            bench_big(tmp, args.big_mb or 1024, args.big_log, args.big_readonly)
        if "bigreplay" in parts:
            bench_big_replay(tmp, args.big_mb or 1024, args.big_log)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
