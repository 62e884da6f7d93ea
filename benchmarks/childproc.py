"""Measuring a child process from outside: CPU time (wait4) and peak RSS (VmHWM).

`ru_maxrss` from wait4 is no good for a child that execs Python: Linux carries the parent's
high-water mark over fork and exec, so a big parent hides a small child. `VmHWM` in
/proc/PID/status belongs to the child's own address space; it is polled while the child runs
(a child that says its own VmHWM at exit, as bench_import's wrapper does, closes the last gap).
"""

from __future__ import annotations

import compileall
import os
import subprocess
import time


def wait_measured(proc: subprocess.Popen, poll_s: float = 0.02) -> tuple[int, float, int]:
    """Wait for `proc` to exit; (exit code, CPU seconds user+system, peak RSS bytes seen)."""
    peak = 0
    status = f"/proc/{proc.pid}/status"
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(poll_s)
    proc.returncode = os.waitstatus_to_exitcode(code)
    return proc.returncode, usage.ru_utime + usage.ru_stime, peak


def compile_bytecode(checkout: str) -> None:
    """Write the bytecode of the checkout's package before its children are timed: a user's installed
    package has it, but where PYTHONDONTWRITEBYTECODE is set (some shells and CI images) every child
    would compile each module it imports again, ~0.1-0.15 s of a whole-process reading on a 2-core
    machine. compileall writes it whatever that variable says; Python reads it back either way."""
    if checkout not in _COMPILED:
        compileall.compile_dir(os.path.join(checkout, "weighttui"), quiet=1, workers=1)
        _COMPILED.add(checkout)


_COMPILED: set[str] = set()  # the checkouts compile_bytecode compiled in this process (once is enough)
