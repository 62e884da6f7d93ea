"""The README quick-start loop (scalars every step, a snapshot every 10, full_epochs),
recorded by this checkout and, side by side in the same run, by another
weighttui tree (`--other DIR`, e.g. an older commit from `git archive`).

    python benchmarks/bench_writer.py --other /tmp/old [--steps 96 960 9600]

Each case runs in a fresh process; prints snapshots asked for / kept, whether
the complete values asked for are there, drops, and the time per training step
(median of --repeat runs). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r'''
import json, sys, time, numpy as np, weighttui
path, steps = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
w1 = rng.normal(size=(16, 8)).astype(np.float32); b1 = np.zeros(8, np.float32)
g1 = rng.normal(size=w1.shape).astype(np.float32) * 0.01  # a small model and a fast step
per_epoch = max(1, steps // 12)
t0 = time.perf_counter()
with weighttui.Recorder(path, every=10, full_epochs=[5, 10]) as rec:
    for step in range(steps):
        w1 = w1 - g1; b1 = b1 - 0.001
        loss = float(np.mean(w1 ** 2))
        rec.snapshot(step, {"w1": w1, "b1": b1}, epoch=step // per_epoch, grads={"w1": g1},
                     scalars={"loss": loss})
    t1 = time.perf_counter()
run = weighttui.open(path)
print(json.dumps({"asked": len(range(0, steps, 10)), "kept": run.snapshot_count, "dropped": rec.dropped,
                  "full": len(run.full_steps), "per_step_us": (t1 - t0) / steps * 1e6}))
'''


def one(tree: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=tree)
        out = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "run.wtui"), str(steps)],
                             capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="another weighttui tree to compare with")
    ap.add_argument("--steps", type=int, nargs="+", default=[96, 960, 9600])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"load: {os.getloadavg()}")
    print(f"{'steps':>6} {'tree':>6} {'asked':>6} {'kept':>6} {'dropped':>8} {'full':>5} {'us/step':>9}")
    for steps in args.steps:
        res = {}
        for name, tree in (("other", args.other), ("this", here)):
            runs = [one(tree, steps) for _ in range(args.repeat)]  # interleaving would be fairer; cheap enough
            r = runs[-1]
            r["per_step_us"] = statistics.median(x["per_step_us"] for x in runs)
            res[name] = r
            print(f"{steps:>6} {name:>6} {r['asked']:>6} {r['kept']:>6} {r['dropped']:>8} {r['full']:>5} "
                  f"{r['per_step_us']:>9.1f}")
        print(f"{'':>6} ratio this/other us/step: {res['this']['per_step_us'] / res['other']['per_step_us']:.2f}")


if __name__ == "__main__":
    main()
