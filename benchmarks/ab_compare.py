"""Two checkouts side by side: the core and the torch snapshot, alternating fresh processes.

    git worktree add --detach /tmp/base 884bdb1 && (cd /tmp/base && python setup.py -q build_ext --inplace)
    python benchmarks/ab_compare.py --base /tmp/base [--new .] [--rounds 5]

Each round runs, in each checkout in turn: the numpy `Recorder` writing a log and
`weighttui.open` reading it, a numpy `Recorder.snapshot` of 5M values (the training
thread's cost), and `weighttui.torch.watch` snapshots
of ResNet-50 parameter shapes (benchmarks/bench_torch.py), with and without gradients,
with the instruments off where the checkout has them (they did not exist before;
bench_instruments.py measures them). Prints best (and median) per metric and the
ratio new / base, with the load average seen. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

# The public API only (weighttui.Recorder, weighttui.open), so that any two checkouts compare.
CORE = r"""
import os, tempfile, time
import numpy as np
import weighttui
rng = np.random.default_rng(1)
small = {f"t{i}.weight": rng.normal(size=4096).astype(np.float32) for i in range(100)}
d = tempfile.mkdtemp()
t0 = time.perf_counter()
with weighttui.Recorder(os.path.join(d, "a.wtui"), delta=True, queue_size=1000) as rec:
    for s in range(200):
        rec.snapshot(s, small, grads=small)
write = 200 / (time.perf_counter() - t0)  # until closed: every frame written
t0 = time.perf_counter()
run = weighttui.open(os.path.join(d, "a.wtui"))
read = run.snapshot_count / (time.perf_counter() - t0)
big = {f"t{i}.weight": rng.normal(scale=0.05, size=50_000).astype(np.float32) for i in range(100)}
rec = weighttui.Recorder(os.path.join(d, "b.wtui"), delta=True, queue_size=1000)
ts = []
for s in range(6):
    for a in big.values():
        a += 1e-4
    t0 = time.perf_counter()
    rec.snapshot(s, big)
    ts.append(time.perf_counter() - t0)
rec.close()
print(write, read, min(ts[1:]) * 1000)
"""
CORE_METRICS = {  # name: larger is better
    "Recorder write, 100 x 4096 values + grads, snapshots/s": True,
    "weighttui.open, same log, snapshots/s": True,
    "Recorder.snapshot (numpy), 100 x 50,000 values + exact delta, ms": False,
}
SNAPSHOT = r"""
import inspect, pathlib, sys, tempfile, time
sys.path.insert(0, "benchmarks")
import torch
import weighttui.torch as wt
from bench_torch import ParamSet, resnet50_shapes
model = ParamSet(resnet50_shapes())
params = list(model.parameters())
for p in params:
    p.grad = torch.randn_like(p) * 1e-3
extra = {"instruments": False} if "instruments" in inspect.signature(wt.watch).parameters else {}
out = []
for grads in (False, True):
    h = wt.watch(model, pathlib.Path(tempfile.mkdtemp()) / "b.wtui", delta="exact", initial=False,
                 queue_size=1000, **extra)
    h.grads = grads
    ts = []
    for _ in range(14):
        with torch.no_grad():
            for p in params[:3]:  # an update, so deltas are not all zero
                p.add_(1e-4)
        t0 = time.perf_counter()
        h.step()
        ts.append(time.perf_counter() - t0)
    h.close()
    out.append(sorted(ts[4:])[len(ts[4:]) // 2] * 1000)  # median after the first snapshots
print(*out)
"""


def run(cwd: str, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": cwd}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{cwd}: the benchmark failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other checkout (its C extension built in place)")
    ap.add_argument("--new", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch snapshot")
    args = ap.parse_args()
    sides = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.new)}
    samples: dict[tuple[str, str], list[float]] = {}
    loads = []
    for _ in range(args.rounds):
        for side, cwd in sides.items():
            loads.append(os.getloadavg()[0])
            for name, value in zip(CORE_METRICS, map(float, run(cwd, CORE).split()), strict=True):
                samples.setdefault((side, name), []).append(value)
            if not args.no_torch:
                snap, grads = map(float, run(cwd, SNAPSHOT).split())
                samples.setdefault((side, "torch snapshot, ms"), []).append(snap)
                samples.setdefault((side, "torch snapshot + gradients, ms"), []).append(grads)
    print(f"{args.rounds} alternating rounds; base {sides['base']}, new {sides['new']}; "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print("| metric | base best (median) | new best (median) | new / base, best |")
    print("|---|---:|---:|---:|")
    names = [*CORE_METRICS, "torch snapshot, ms", "torch snapshot + gradients, ms"]
    for name in names:
        b, n = samples.get(("base", name)), samples.get(("new", name))
        if not b or not n:
            continue
        larger = CORE_METRICS.get(name, False)
        pick = max if larger else min
        print(f"| {name} | {pick(b):,.3f} ({statistics.median(b):,.3f}) | {pick(n):,.3f} "
              f"({statistics.median(n):,.3f}) | {pick(n) / pick(b):.2f} |")


if __name__ == "__main__":
    main()
