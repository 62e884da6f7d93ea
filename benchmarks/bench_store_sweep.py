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

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    async def until(pilot, cond, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            await pilot.pause(0.05)

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    ap.add_argument("mode", nargs="?", default="save", choices=("save", "nosave"),
                    help="data side: build and save indexes, or read from them")
    ap.add_argument("--app", action="store_true", help="measure the Textual multi-run app instead")
    ap.add_argument("--cases", default="cold,warm", help="--app: cold (no indexes), warm (indexes), or both")
    ap.add_argument("--timeout", type=float, default=900.0, help="--app: seconds per wait before giving up")
    ap.add_argument("--no-alerts", action="store_true", help="--app: without the run list's alerts")
    ap.add_argument("--app-child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.app_child is not None:
        return _app_child(args.directory, args.app_child, args.timeout, not args.no_alerts)
    if args.app:
        return app_side(args.directory, [c for c in args.cases.split(",") if c], args.timeout, not args.no_alerts)
    return data_side(args.directory, args.mode)


if __name__ == "__main__":
    sys.exit(main())
