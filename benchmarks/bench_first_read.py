"""The first read of a big log, whole processes, several checkouts alternated: CPU, wall and peak RSS
from outside (os.wait4), the log's index removed before every run.

    python benchmarks/bench_first_read.py LOG CHECKOUT[,CHECKOUT...] [--rounds 4] [--mode info|open] [--threads]

mode info: `python -m weighttui.cli info --json LOG` (the first `info`); mode open:
`weighttui.open(LOG)`, one series() and one histograms() (the first open, counting the interpreter's
start). --then-open (mode info): after each first `info`, the open above twice more on the index
it left (since session 5 that index holds statistics only: the first open indexes the histograms
it reads, docs/store.md "Fifth round"), each timed as its own row. Each CHECKOUT is put first
on PYTHONPATH (build its extensions first; its bytecode is compiled here); the cwd is outside them.
Prints min and median per checkout and the load average: on a loaded machine compare the CPU
columns (docs/store.md, "Fourth round").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from childproc import compile_bytecode

OPEN = ("import sys, weighttui; d = weighttui.open(sys.argv[1]); n = d.tensor_names[len(d.tensor_names) // 2]; "
        "d.series(n, 'norm'); d.histograms(n)")
# --threads: the child says each of its threads' CPU time at its end (/proc schedstat, user + system), the
# main (decoding) thread first: under load the whole process's CPU varies, the decoding thread's less
THREADS = ("import os\nts = sorted(int(t) for t in os.listdir('/proc/self/task'))\n"
           "sys.stderr.write('THREADS ' + ' '.join(open(f'/proc/self/task/{t}/schedstat').read().split()[0] "
           "for t in ts) + chr(10))\n")
INFO_THREADS = ("import sys, runpy; sys.argv = ['weighttui', 'info', '--json', sys.argv[1]]\n"
                "try:\n    runpy.run_module('weighttui.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                + THREADS)


def index_dir(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.wtuidx")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("checkouts", help="comma-separated checkouts (PYTHONPATH), measured alternately")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mode", choices=("info", "open"), default="info")
    ap.add_argument("--then-open", action="store_true", help="after each first info: open + reads, twice")
    ap.add_argument("--threads", action="store_true",
                    help="also the CPU of the main (decoding) thread and of the others (not for --then-open's rows)")
    args = ap.parse_args(argv)
    log = os.path.abspath(args.log)
    checkouts = [os.path.abspath(c) for c in args.checkouts.split(",")]
    for c in checkouts:
        compile_bytecode(c)
    cache = tempfile.mkdtemp(prefix="bench_first_read-")
    load0 = os.getloadavg()[0]
    res: dict[str, list] = {}
    try:
        for _ in range(args.rounds):
            for c in checkouts:
                shutil.rmtree(index_dir(log), ignore_errors=True)
                env = dict(os.environ, PYTHONPATH=c, XDG_CACHE_HOME=cache)
                cmd = [sys.executable, "-m", "weighttui.cli", "info", "--json", log] if args.mode == "info" \
                    else [sys.executable, "-c", OPEN, log]
                if args.threads:
                    cmd = [sys.executable, "-c", INFO_THREADS if args.mode == "info" else OPEN + "\n" + THREADS, log]
                reopen = [sys.executable, "-c", OPEN, log]
                then = [("then open", reopen), ("open again", reopen)] if args.then_open and args.mode == "info" \
                    else []
                for label, argv_ in [("", cmd), *then]:
                    t0 = time.perf_counter()
                    proc = subprocess.Popen(argv_, stdout=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir(),
                                            stderr=subprocess.PIPE if argv_ is cmd and args.threads else None)
                    err = proc.stderr.read().decode() if proc.stderr is not None else ""
                    _pid, status, ru = os.wait4(proc.pid, 0)
                    if os.waitstatus_to_exitcode(status) not in (0, 1):
                        raise SystemExit(f"{c}: {argv_[2:4]} failed")
                    got = [ln.split()[1:] for ln in err.splitlines() if ln.startswith("THREADS ")]
                    threads = [int(x) / 1e9 for x in got[-1]] if got else []
                    res.setdefault(f"{c} {label}".rstrip(), []).append(
                        (time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024,
                         threads[0] if threads else None, sum(threads[1:]) if threads else None))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(index_dir(log), ignore_errors=True)
    print(f"first {args.mode}, {args.rounds} rounds; load average {load0:.2f} -> {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs)")
    for c, runs in res.items():
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        line = (f"{c:50s} wall min {min(wall):.2f} med {statistics.median(wall):.2f} s | CPU min {min(cpu):.2f} "
                f"med {statistics.median(cpu):.2f} s | peak RSS {max(r[2] for r in runs):.0f} MB")
        if all(r[3] is not None for r in runs):
            main_t, rest = [r[3] for r in runs], [r[4] for r in runs]
            line += (f" | main thread min {min(main_t):.2f} med {statistics.median(main_t):.2f} s, others min "
                     f"{min(rest):.2f} med {statistics.median(rest):.2f} s")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
