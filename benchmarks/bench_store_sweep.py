"""Many runs read the way the multi-run viewer reads them, through the store.

    for i in $(seq 0 49); do python benchmarks/make_big_log.py sweep/run$i.wtui --size-mb 100 --bins 64 --seed $i; done
    /usr/bin/time -f "%e s, peak RSS %M KB" python benchmarks/bench_store_sweep.py sweep save    # builds indexes
    /usr/bin/time -f "%e s, peak RSS %M KB" python benchmarks/bench_store_sweep.py sweep nosave  # from them
    python benchmarks/bench_store_sweep.py sweep --app                # the Textual app, both cases

Data side ("save" / "nosave"): per run a RunData with max_rows 1024 (the multi-run viewer's),
its index loaded if there is one, a LogTail from where the index ends, every poll ingested
(sealed segments spill to the index directory), the index saved ("save"), then what the first
screen asks: the latest weights norms, update ratios and the loss. Peak RSS is taken from
outside (/usr/bin/time).

`--app`: the real multi-run app (`MultiRunApp`, what `weighttui watch DIR` runs), headless
(`App.run_test`, 160x48), in a child process per case: first without indexes (every
`.NAME.wtuidx` under the directory removed: the app reads and indexes every log), then again
with the indexes that first run left. The parent polls the child's VmHWM/VmRSS in /proc (peak
RSS from outside; `wait4`'s ru_maxrss would carry the parent's high-water mark over the exec)
and reads its CPU time from wait4. The child reports, from its own start (interpreter start,
imports included): every run's row on the list, every row showing its run's latest step, every
run read to its end, every run's alerts computed, and the comparison screen (`tab`) drawn with
the weights norm of the first common tensor. `--cases` picks "cold", "warm" or both.

`--live` (a live sweep, about a minute): DIR is made afresh (every `run*.wtui` in it removed) with
`--runs` logs (default 50) of `--tensors` tensors and `--history` snapshots each, no end record;
the real multi-run app (`weighttui watch DIR`) is started headless in a child process and, once
every run is read and its alerts computed, one writer process appends a snapshot (weights,
histograms, delta and grad blocks, scalars; one `write()` a snapshot) to every log at `--rate`
snapshots a second per run (staggered across the runs) for `--seconds`. Measured: append-to-screen
per written snapshot (from the writer's time after its `write()` to the run list's "last step" of
that run showing that step or a later one; the list is polled every 10 ms for every run), the
viewer's CPU while the sweep is written (its own process time over the window, from inside, the
polling included) and in all (wait4), its peak RSS (VmHWM polled from outside), and the writer's
CPU.

    python benchmarks/bench_store_sweep.py /tmp/livesweep --live                 # 50 runs, 2/s each, 20 s
    python benchmarks/bench_store_sweep.py /tmp/livesweep --live --runs 10 --seconds 8   # quick
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from childproc import wait_measured

APP_SIZE = (160, 48)


def data_side(directory: str, mode: str) -> int:
    from weighttui.data.run import RunData
    from weighttui.log.tail import LogTail

    paths = sorted(glob.glob(directory + "/*.wtui"))
    t0 = time.perf_counter()
    runs = []
    for p in paths:
        d = RunData(p, max_rows=1024)
        start = d.load_index()
        with LogTail(p, max_bytes_per_poll=4 << 20, start=start) as tail:
            while True:
                poll = tail.poll()
                d.ingest(poll)
                if poll.offset + tail.pending >= poll.size:
                    break
        if mode == "save":
            d.save_index()
        d.stat_matrix("weights", "norm")[-1]
        d.stat_matrix("delta", "ratio")[-1]
        d.scalars("loss")
        runs.append(d)
    print(json.dumps({"runs": len(runs), "seconds": time.perf_counter() - t0,
                      "snapshots": sum(r.snapshot_count for r in runs)}))
    return 0


# ------------------------------------------------------------------ --app


def _app_child(directory: str, spawned: float, timeout: float, alerts: bool = True) -> int:
    """In the child: drive the app headless and print the times (seconds since `spawned`)."""
    import asyncio

    from weighttui.tui.multi_app import MultiRunApp, share_malloc_arena

    share_malloc_arena()  # as run_multi_app (what `weighttui watch DIR` calls) does
    n_logs = len([p for p in glob.glob(directory + "/*") if os.path.isfile(p)])
    out: dict = {"runs": n_logs}

    def since() -> float:
        return round(time.time() - spawned, 3)

    rss_mb = _rss_mb

    async def until(pilot, cond, what: str) -> None:
        await _until(pilot, cond, what, timeout)

    async def drive() -> None:
        from weighttui.tui.screens.runs_compare import CompareScreen
        from weighttui.tui.screens.runs_list import RunTable

        app = MultiRunApp(directory=directory, mode="watch", **({} if alerts else {"alerts": False}))
        async with app.run_test(size=APP_SIZE) as pilot:
            out["mounted_s"] = since()
            table = app.screen.query_one(RunTable)
            await until(pilot, lambda: table.row_count >= n_logs, "every run on the list")
            out["rows_listed_s"] = since()

            def shown() -> bool:  # each run's latest step is on the list (its index, or its latest snapshots)
                return all(table.get_cell(s.path, "last_step").plain not in ("", "–") for s in app.slots)

            await until(pilot, shown, "every row showing its latest step")
            out["rows_filled_s"] = since()
            out["cpu_at_rows_filled_s"] = round(time.process_time(), 2)  # this process's CPU so far (all threads)
            out["rss_at_rows_filled_mb"] = round(rss_mb())
            await until(pilot, lambda: all(_read(s) for s in app.slots), "every run read")
            out["all_read_s"] = since()
            out["cpu_at_all_read_s"] = round(time.process_time(), 2)
            out["rss_all_read_mb"] = round(rss_mb())
            if alerts and hasattr(app.slots[0], "alerts"):  # (the app before alerts in the run list had none)
                await until(pilot, lambda: all(s.alerts is not None for s in app.slots), "every run's alerts")
                out["alerts_s"] = since()
                out["rss_alerts_mb"] = round(rss_mb())
            await pilot.pause(0.5)
            t = time.perf_counter()
            await pilot.press("tab")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.aligned is not None,
                        "the comparison")
            out["compare_s"] = round(time.perf_counter() - t, 3)
            out["rss_compare_mb"] = round(rss_mb())
            out["snapshots"] = sum(s.data.snapshot_count for s in app.slots)
            await pilot.press("q")

    asyncio.run(drive())
    print("RESULT " + json.dumps(out), flush=True)
    return 0


async def _until(pilot, cond, what: str, timeout: float) -> None:
    """Let the app run until `cond()` holds; the child exits with a message after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _read(slot) -> bool:
    """This run's log has been read to its end (its follower caught up once)."""
    if not hasattr(slot, "caught_up"):  # the app before it loaded runs in turn (a --before checkout)
        return not slot.loading and slot.data.snapshot_count > 0 and slot.follower is not None \
            and slot.follower.backlog == 0
    return slot.caught_up and slot.building is None


def _remove_indexes(directory: str) -> int:
    gone = 0
    for idx in glob.glob(os.path.join(directory, ".*.wtuidx")):
        shutil.rmtree(idx, ignore_errors=True)
        gone += 1
    return gone


def _run_case(directory: str, timeout: float, alerts: bool) -> dict:
    """One app child; its report plus peak RSS (VmHWM, polled from here) and CPU time (wait4)."""
    spawned = time.time()
    cmd = [sys.executable, __file__, directory, "--app-child", str(spawned), "--timeout", str(timeout),
           *([] if alerts else ["--no-alerts"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, cpu, peak = wait_measured(proc, poll_s=0.05)
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        raise SystemExit(f"the app child failed (status {code}):\n{stderr[-3000:]}")
    result["wall_s"] = round(time.time() - spawned, 2)
    result["cpu_s"] = round(cpu, 2)
    result["peak_rss_mb"] = round(peak / 2**20)
    return result


def app_side(directory: str, cases: list[str], timeout: float, alerts: bool) -> int:
    load = os.getloadavg()
    print(f"# load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for case in cases:
        if case == "cold":
            print(f"# cold: removed {_remove_indexes(directory)} index directories")
        res = _run_case(directory, timeout, alerts)
        res["case"] = case
        print(json.dumps(res), flush=True)
    load = os.getloadavg()
    print(f"# load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


# ------------------------------------------------------------------ --live

LIVE_BINS = 32


class _SweepLog:
    """Frames of one synthetic run (a few payloads re-used with new steps: encoding is not what is
    measured); spec-conforming (docs/FORMAT.md), written straight with encode_frame."""

    def __init__(self, index: int, tensors: int):
        import numpy as np

        from weighttui.log.format import encode_array
        from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS

        rng = np.random.default_rng(index)
        self.index, self.tensors = index, tensors
        self.names = [f"layers.{i // 2}.{('weight', 'bias')[i % 2]}" for i in range(tensors)]
        self.ids = encode_array(np.arange(tensors, dtype="<u4"))

        def block(names, hist, scale=0.1):
            stats = np.abs(rng.normal(size=(tensors, len(names)))) * scale + 1e-6
            out = {"names": list(names), "stats": encode_array(stats), "hist": None}
            if hist:
                lo = -np.ones(tensors)
                out["hist"] = {"lo": encode_array(lo), "hi": encode_array(-lo), "counts": encode_array(
                    rng.integers(0, 1000, size=(tensors, LIVE_BINS)).astype("<u4"))}
            return out

        # update ratios from 3e-4 (the first runs) to 3e-2 (the last): a sweep's high learning rates
        # trip the ratio_high alert, the others stay inside the band
        upd = 10 ** (-3.5 + 2 * index / 50)
        self.blocks = [(block(WEIGHT_STATS, True), block(DELTA_STATS, False, upd), block(WEIGHT_STATS, True))
                       for _ in range(3)]

    def head(self, pid: int) -> bytes:
        import socket

        from weighttui.log.format import HEADER, FrameType, encode_frame

        lr = 10 ** (-4 + 3 * self.index / 50)
        return HEADER + encode_frame(FrameType.RUN, {
            "run_id": f"{self.index:032x}", "created": time.time(), "host": socket.gethostname(), "pid": pid,
            "argv": ["sweep.py", f"--lr={lr:.2g}"], "framework": "synthetic", "writer": "bench_store_sweep",
            "bins": LIVE_BINS, "meta": {"lr": lr}}) + encode_frame(FrameType.TENSORS, {"tensors": [
                {"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": [256, 256] if n.endswith("weight")
                 else [256], "dtype": "float32", "trainable": True, "sample_index": None}
                for i, n in enumerate(self.names)]})

    def snapshot(self, step: int) -> bytes:
        from weighttui.log.format import FrameType, encode_frame

        w, d, g = self.blocks[step % len(self.blocks)]
        now = time.time()
        return encode_frame(FrameType.SNAPSHOT, {
            "step": step, "epoch": step // 100, "batch": None, "time": now, "ids": self.ids,
            "weights": w, "delta": d, "grad": g, "sample": None}) + encode_frame(FrameType.SCALARS, {
                "step": step, "epoch": step // 100, "time": now, "values": {"loss": 2.0 / (1 + 0.01 * step)}})


def _sweep_paths(directory: str, runs: int) -> list[str]:
    return [os.path.join(directory, f"run{i:03d}.wtui") for i in range(runs)]


def _writer_child(directory: str, tensors: int, history: int, rate: float, seconds: float) -> int:
    """In the writer: append a snapshot to every log at `rate` a second per run, staggered; print
    (path, step, time after the write) of each."""
    paths = sorted(glob.glob(os.path.join(directory, "run*.wtui")))
    logs = [_SweepLog(i, tensors) for i in range(len(paths))]
    fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in paths]
    written: dict[str, list] = {p: [] for p in paths}
    start = time.monotonic()
    k = 0
    late = 0
    n = len(paths)
    try:
        while True:
            due = start + k / (rate * n)  # run k % n's next snapshot: the runs take turns
            if due - start >= seconds:
                break
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.05:
                late += 1
            i = k % n
            step = history + k // n
            os.write(fds[i], logs[i].snapshot(step))
            written[paths[i]].append((step, time.time()))
            k += 1
    finally:
        for fd in fds:
            os.close(fd)
    print("WRITTEN " + json.dumps({"written": written, "late": late,
                                   "cpu_s": round(time.process_time(), 2)}), flush=True)
    return 0


def _live_child(directory: str, window: float, timeout: float, alerts: bool) -> int:
    """In the app child: the multi-run app headless; once every run is read, say READY and then
    note for `window` seconds when each run's "last step" cell shows each new step."""
    import asyncio

    from weighttui.tui.multi_app import MultiRunApp, share_malloc_arena

    share_malloc_arena()
    n_logs = len(glob.glob(os.path.join(directory, "run*.wtui")))
    out: dict = {"runs": n_logs}
    on: list = []
    spent = _time_ui_parts(MultiRunApp, on)

    async def until(pilot, cond, what: str) -> None:
        await _until(pilot, cond, what, timeout)

    async def drive() -> None:
        from weighttui.tui.screens.runs_list import RunTable

        app = MultiRunApp(directory=directory, mode="watch", **({} if alerts else {"alerts": False}))
        async with app.run_test(size=APP_SIZE) as pilot:
            table = app.screen.query_one(RunTable)
            await until(pilot, lambda: table.row_count >= n_logs and all(_read(s) for s in app.slots),
                        "every run read")
            if alerts:
                await until(pilot, lambda: all(s.alerts is not None for s in app.slots), "every run's alerts")
            await pilot.pause(0.3)
            out["rss_ready_mb"] = round(_rss_mb())
            on.append(True)
            print("READY", flush=True)
            seen: dict[str, list] = {s.path: [] for s in app.slots}
            last: dict[str, int] = {}
            c0, t0 = time.process_time(), time.monotonic()
            threads0 = _thread_cpu()
            longest = 0.0
            prev = time.monotonic()
            while time.monotonic() - t0 < window:
                now_wall = time.time()
                for slot in app.slots:
                    text = table.get_cell(slot.path, "last_step").plain.strip()
                    if text.isdigit() and int(text) != last.get(slot.path):
                        last[slot.path] = int(text)
                        seen[slot.path].append((int(text), now_wall))
                await asyncio.sleep(0.01)  # (not pilot.pause: it forces a compositor update each time)
                now = time.monotonic()
                longest = max(longest, now - prev - 0.01)  # the UI thread's longest pause beyond the 10 ms asked for
                prev = now
            out["window_s"] = round(time.monotonic() - t0, 2)
            out["window_cpu_s"] = round(time.process_time() - c0, 2)
            threads1 = _thread_cpu()
            by: dict[str, float] = {}
            for tid, (name, cpu) in threads1.items():
                kind = "ui" if tid == os.getpid() else name
                by[kind] = by.get(kind, 0.0) + cpu - threads0.get(tid, (name, 0.0))[1]
            out["window_cpu_by_thread_s"] = {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
            out["longest_pause_ms"] = round(longest * 1000)
            out["rss_end_mb"] = round(_rss_mb())
            out["snapshots"] = sum(s.data.snapshot_count for s in app.slots)
            out["seen"] = seen
            out["ui_parts"] = {name: {"calls": len(v), "cpu_ms": round(sum(c for _w, c in v) * 1000),
                                      "max_wall_ms": round(max(w for w, _c in v) * 1000),
                                      "max_cpu_ms": round(max(c for _w, c in v) * 1000)}
                               for name, v in spent.items() if v}
            await pilot.press("q")

    asyncio.run(drive())
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def _time_ui_parts(app_class, on: list) -> dict[str, list]:
    """Wall and CPU (thread) time of the UI thread's parts while `on` is non-empty: ingest (per
    delivery), the redraws (the run list's cells set), the alerts, the 1 s tick, the followers'
    wake-ups (ingest and redraw inside them), the run list's DataTable rendering its lines."""
    spent: dict[str, list] = {"ingest": [], "draw": [], "alerts": [], "tick": [], "wake": [], "list_render": []}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                if on:
                    spent[name].append((time.perf_counter() - t, time.thread_time() - c))
        return wrapper

    app_class._ingest = timed("ingest", app_class._ingest)
    app_class._draw = timed("draw", app_class._draw)
    app_class._update_alerts = timed("alerts", app_class._update_alerts)
    app_class._tick = timed("tick", app_class._tick)
    app_class.on_follower_wake = timed("wake", app_class.on_follower_wake)
    from weighttui.tui.screens.runs_list import RunTable

    RunTable.render_lines = timed("list_render", RunTable.render_lines)  # the DataTable drawing its lines
    return spent


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each thread of this process, with its name: {tid: (name, s)}."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def live_side(directory: str, args) -> int:
    """A live sweep watched by the multi-run app (see the module docstring)."""
    import threading

    import numpy as np

    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "run*.wtui")):
        os.unlink(old)
    _remove_indexes(directory)
    t = time.perf_counter()
    for i, path in enumerate(_sweep_paths(directory, args.runs)):
        log = _SweepLog(i, args.tensors)
        with open(path, "wb") as fh:
            fh.write(log.head(os.getpid()))  # this process outlives the sweep: the runs stay "live"
            for step in range(args.history):
                fh.write(log.snapshot(step))
    size = sum(os.path.getsize(p) for p in _sweep_paths(directory, args.runs))
    load = os.getloadavg()
    print(f"# {args.runs} logs of {args.tensors} tensors x {args.history} snapshots ({size / 2**20:.0f} MiB) "
          f"written in {time.perf_counter() - t:.1f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)
    spawned = time.time()
    window = args.seconds + 3.0
    app = subprocess.Popen([sys.executable, __file__, directory, "--live-child", str(window), "--timeout",
                            str(args.timeout), *([] if not args.no_alerts else ["--no-alerts"])],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    measured: list = []
    waiter = threading.Thread(target=lambda: measured.append(wait_measured(app, poll_s=0.05)), daemon=True)
    waiter.start()
    writer = None
    result = None
    assert app.stdout is not None
    for line in app.stdout:
        if line.startswith("READY") and writer is None:
            print(f"# the app read every run in {time.time() - spawned:.1f} s; the writer starts", flush=True)
            writer = subprocess.Popen([sys.executable, __file__, directory, "--writer-child", "--tensors",
                                       str(args.tensors), "--history", str(args.history), "--rate", str(args.rate),
                                       "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    waiter.join()
    code, cpu, peak = measured[0]
    if result is None or writer is None:
        err = app.stderr.read() if app.stderr else ""
        raise SystemExit(f"the app child failed (status {code}):\n{err[-3000:]}")
    w_out, _ = writer.communicate()
    wres = next(json.loads(ln[8:]) for ln in w_out.splitlines() if ln.startswith("WRITTEN "))
    lat, missed = [], 0
    for path, writes in wres["written"].items():
        shown = result["seen"].get(path, [])
        steps = np.array([s for s, _t in shown], dtype=np.int64)
        times = np.array([t for _s, t in shown])
        # first time the cell showed this step or a later one
        best = np.minimum.accumulate(times[::-1])[::-1] if times.size else times
        for step, t_w in writes:
            i = int(np.searchsorted(steps, step, side="left")) if steps.size else 0
            if i >= steps.size:
                missed += 1
                continue
            lat.append(best[i] - t_w)
    ms = np.array(lat) * 1000
    n_written = sum(len(v) for v in wres["written"].values())
    load = os.getloadavg()
    print(json.dumps({
        "runs": args.runs, "tensors": args.tensors, "rate_per_run": args.rate, "seconds": args.seconds,
        "written": n_written, "writer_late": wres["late"], "writer_cpu_s": wres["cpu_s"],
        "shown": len(lat), "not_shown": missed,
        "append_to_screen_ms": {"median": round(float(np.median(ms))), "p95": round(float(np.percentile(ms, 95))),
                                "max": round(float(ms.max()))} if ms.size else None,
        "viewer_cpu_in_window_pct": round(100 * result["window_cpu_s"] / result["window_s"]),
        "viewer_longest_pause_ms": result["longest_pause_ms"],
        "viewer_cpu_total_s": round(cpu, 2), "viewer_peak_rss_mb": round(peak / 2**20),
        "viewer_rss_ready_mb": result["rss_ready_mb"], "viewer_rss_end_mb": result["rss_end_mb"],
        "snapshots_in_viewer": result["snapshots"], "viewer_cpu_by_thread_s": result["window_cpu_by_thread_s"],
        "ui_thread_parts": result.get("ui_parts")}), flush=True)
    print(f"# load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    ap.add_argument("mode", nargs="?", default="save", choices=("save", "nosave"),
                    help="data side: build and save indexes, or read from them")
    ap.add_argument("--app", action="store_true", help="measure the Textual multi-run app instead")
    ap.add_argument("--cases", default="cold,warm", help="--app: cold (no indexes), warm (indexes), or both")
    ap.add_argument("--timeout", type=float, default=900.0, help="--app: seconds per wait before giving up")
    ap.add_argument("--no-alerts", action="store_true", help="--app: without the run list's alerts")
    ap.add_argument("--live", action="store_true", help="a live sweep: every run written while the app watches")
    ap.add_argument("--runs", type=int, default=50, help="--live: runs in the sweep")
    ap.add_argument("--tensors", type=int, default=50, help="--live: tensors per run")
    ap.add_argument("--history", type=int, default=200,
                    help="--live: snapshots each log holds before the writer starts")
    ap.add_argument("--rate", type=float, default=2.0, help="--live: snapshots a second per run")
    ap.add_argument("--seconds", type=float, default=20.0, help="--live: how long the writer writes")
    ap.add_argument("--app-child", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--live-child", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--writer-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.app_child is not None:
        return _app_child(args.directory, args.app_child, args.timeout, not args.no_alerts)
    if args.live_child is not None:
        return _live_child(args.directory, args.live_child, args.timeout, not args.no_alerts)
    if args.writer_child:
        return _writer_child(args.directory, args.tensors, args.history, args.rate, args.seconds)
    if args.live:
        return live_side(args.directory, args)
    if args.app:
        return app_side(args.directory, [c for c in args.cases.split(",") if c], args.timeout, not args.no_alerts)
    return data_side(args.directory, args.mode)


if __name__ == "__main__":
    sys.exit(main())
