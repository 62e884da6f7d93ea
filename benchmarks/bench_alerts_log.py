"""CPU cost of the alert rules on a big log: at the end, at replay positions, in `info`, while following.

    python benchmarks/bench_alerts_log.py LOG [--before CHECKOUT] [--follow 100] [--rounds 1]

Each measurement runs in a fresh process per checkout (PYTHONPATH=CHECKOUT; this checkout and
`--before`, alternated), on LOG as the viewer reads it (`max_rows=2048`) and as `info` reads it
(`max_rows=4096`), through its index (built by the first open if there is none). CPU is
time.process_time inside the child around the call measured (what the viewer's UI thread
spends), wall beside it:

- `end, first`: diagnose at the latest snapshot, the first call on the run (reads the history);
  `end, again`: the same call once more (nothing new);
- `replay move`: diagnose as of a replay position (`RunData.upto_snapshot`, what the app does once
  a second while the position moves): 20 positions stepping back through the run, then 20 moves
  of one snapshot forward; median and max per move;
- `info`: open(max_rows=4096) + diagnose, the first call;
- `viewer's budget`: the viewer's first call as the app makes it (`diagnose_within(budget_s=0.15)`,
  repeated until complete): how many calls, and the most CPU one took;
- `follow, first` / `follow, per update`: a RunData fed by LogTail (cache=False: nothing written)
  with all but the last `--follow` snapshots, then one snapshot per poll with diagnose after each
  (what the app does once a second while following a live run): the first call, then median and
  max per update.

Numbers move with the machine's load: run it on a quiet machine, or read the CPU columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r'''
import json, os, sys, time
import numpy as np
import weighttui
from weighttui.analysis.diagnose import diagnose
from weighttui.data.run import RunData
from weighttui.log.tail import LogTail

log, what, follow = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}

def timed(f):
    c, w = time.process_time(), time.perf_counter()
    r = f()
    return r, (time.process_time() - c) * 1e3, (time.perf_counter() - w) * 1e3

if what == "viewer":
    data = weighttui.open(log, max_rows=2048)
    count = data.snapshot_count
    a, out["end_first"], out["end_first_wall"] = timed(lambda: diagnose(data))
    out["alerts_end"] = len(a)
    _a, out["end_again"], out["end_again_wall"] = timed(lambda: diagnose(data))
    moves = []
    pos = count - 1
    for k in range(20):
        pos = max(0, pos - 97 - 13 * k)
        moves.append(timed(lambda: diagnose(data.upto_snapshot(pos)))[1])
    for k in range(20):
        pos += 1
        moves.append(timed(lambda: diagnose(data.upto_snapshot(pos)))[1])
    out["replay_moves"] = moves
    try:  # the viewer's way since the rules read every snapshot: the first read spread over calls
        from weighttui.analysis.diagnose import diagnose_within
    except ImportError:
        diagnose_within = None
    if diagnose_within is not None:
        fresh = weighttui.open(log, max_rows=2048)
        calls = []
        while True:
            (_a, complete), cpu, _w = timed(lambda: diagnose_within(fresh, budget_s=0.15))
            calls.append(cpu)
            if complete:
                break
        out["budget_calls"] = [len(calls)]
        out["budget_max"] = max(calls)
elif what == "info":
    def go():
        data = weighttui.open(log, max_rows=4096)
        return diagnose(data)
    _a, out["info"], out["info_wall"] = timed(go)
else:
    size = os.path.getsize(log)
    per = size // max(1, weighttui.open(log).snapshot_count)
    data = RunData(log, max_rows=2048, cache=False)
    target = size - per * follow
    with LogTail(log, max_bytes_per_poll=64 << 20) as tail:
        while tail.offset < target:
            tail.max_bytes_per_poll = max(1, min(64 << 20, target - tail.offset - tail.pending))
            p = tail.poll()
            data.ingest(p)
            if not p.frames:
                break
        tail.max_bytes_per_poll = per
        _a, out["follow_first"], out["follow_first_wall"] = timed(lambda: diagnose(data))
        per_update = []
        while True:
            p = tail.poll()
            if not p.frames:
                break
            data.ingest(p)
            per_update.append(timed(lambda: diagnose(data))[1])
        out["follow_updates"] = per_update
print("RESULT " + json.dumps(out))
'''


def child(checkout: str, log: str, what: str, follow: int) -> dict:
    env = dict(os.environ, PYTHONPATH=checkout)
    got = subprocess.run([sys.executable, "-c", CHILD, log, what, str(follow)], env=env, cwd="/",
                         capture_output=True, text=True, check=False)
    for line in got.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{checkout} {what} failed:\n{got.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--before", help="another checkout (its extensions built) to run beside this one")
    ap.add_argument("--follow", type=int, default=100, help="snapshots followed one poll at a time")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = [("before", os.path.abspath(args.before))] if args.before else []
    sides.append(("now", here))
    t0 = time.perf_counter()
    print(f"load at start: {os.getloadavg()}")
    res: dict[str, dict] = {name: {} for name, _ in sides}
    for _round in range(args.rounds):
        for what in ("viewer", "info", "follow"):
            for name, path in sides:
                got = child(path, args.log, what, args.follow)
                for k, v in got.items():
                    res[name].setdefault(k, []).append(v)

    def fmt(vals) -> str:
        if isinstance(vals[0], list):
            flat = [x for v in vals for x in v]
            return f"median {statistics.median(flat):.1f}, max {max(flat):.1f}" if flat else "-"
        return " / ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals)

    rows = [("end, first call (CPU ms)", "end_first"), ("end, first call (wall ms)", "end_first_wall"),
            ("end, again (CPU ms)", "end_again"), ("alerts at the end", "alerts_end"),
            ("replay move (CPU ms)", "replay_moves"), ("info: open + diagnose (CPU ms)", "info"),
            ("follow, first call (CPU ms)", "follow_first"), ("follow, per update (CPU ms)", "follow_updates"),
            ("viewer's budget 0.15 s: calls", "budget_calls"), ("... most CPU ms in one call", "budget_max")]
    print(f"{'what':34s}" + "".join(f"{name:>28s}" for name, _ in sides))
    for label, key in rows:
        print(f"{label:34s}" + "".join(f"{fmt(res[name][key]) if key in res[name] else '-':>28s}"
                                       for name, _ in sides))
    print(f"load at end: {os.getloadavg()}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
