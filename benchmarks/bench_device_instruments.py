"""Cost of the instruments on the device paths (docs/instruments.md, "Paths"): one snapshot with
instruments off, the default set and all of them, side by side in one run.

- jax: weighttui.jax.snapshot(stats="device") (jnp; forced on this CPU) with gradients and Adam state;
- tf: the Keras TF-ops path's statistics (keras_tf_stats.TFStats) and its instruments (TFInstruments),
  as WeightCallback(stats="device") runs them.

Tensors: the ResNet-50 parameter shapes (25.6M values; --quick: its first 60 tensors, 1.4M). Every
tensor moves between snapshots (untimed). Configurations are interleaved over rounds; each number
is the median over rounds of the wall and CPU (process) time of one snapshot. Prints `uptime`.

    python benchmarks/bench_device_instruments.py --quick [--paths jax,tf]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes import resnet50_shapes

CONFIGS = (("off", False), ("default", "default"), ("all", True), ("all, block 1", {"block": 1}))


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_jax(shapes, rounds, tmp):
    import jax
    import jax.numpy as jnp

    import weighttui.jax as wj

    rng = np.random.default_rng(0)
    params = {f"t{i}": jnp.asarray(rng.standard_normal(s).astype(np.float32) * 0.05) for i, s in enumerate(shapes)}
    grads = {k: v * 0.01 for k, v in params.items()}
    m = {k: v * 0.1 for k, v in grads.items()}
    v2 = {k: v * v for k, v in grads.items()}
    from weighttui.integrations.jax import _engines
    from weighttui.integrations.jax_stats import DeviceStats
    from weighttui.record.device_instruments import ArrayInstruments

    configs = CONFIGS + (("default, eager", "default"), ("all, eager", True))
    recs = {name: wj.recorder(os.path.join(tmp, f"jax-{i}.wtui"), instruments=opt, delta=True)
            for i, (name, opt) in enumerate(configs)}
    for name, rec in recs.items():  # the instruments' kernels op by op, as before they were jitted
        if name.endswith("eager"):
            _engines[rec] = (DeviceStats(rec.bins), ArrayInstruments.like(rec.instruments, jnp))
    times: dict[str, list] = {name: [] for name, _ in configs}
    step = 0
    for r in range(rounds + 1):  # round 0: warm-up (jit, the spectral warm-up), not counted
        for name, _opt in configs:
            step += 1
            params = {k: p + 1e-3 * g for k, p, g in zip(params, params.values(), grads.values(), strict=True)}
            jax.block_until_ready(params)
            optim = {k: {"m": m[k], "v": v2[k], "lr": 1e-3, "step": step, "beta2": 0.999, "eps": 1e-8}
                     for k in params}
            t = _timed(lambda name=name, step=step, p=params, o=optim: wj.snapshot(
                recs[name], step, p, grads=grads, stats="device", optim=o))
            if r:
                times[name].append(t)
    for rec in recs.values():
        rec.close()
    return times


def bench_tf(shapes, rounds, tmp):
    import tensorflow as tf

    from weighttui.integrations.keras_tf_stats import TFInstruments, TFStats
    from weighttui.record.recorder import Recorder

    rng = np.random.default_rng(0)
    values = [tf.constant(rng.standard_normal(s).astype(np.float32) * 0.05) for s in shapes]
    grads = {f"t{i}": (np.asarray(v) * 0.01) for i, v in enumerate(values)}
    times: dict[str, list] = {name: [] for name, _ in CONFIGS}
    state = {}
    for i, (name, opt) in enumerate(CONFIGS):
        rec = Recorder(os.path.join(tmp, f"tf-{i}.wtui"), instruments=opt)
        infos = [rec.declare(f"t{k}", tuple(s), "float32") for k, s in enumerate(shapes)]
        state[name] = (rec, infos, TFStats(rec.bins, [x.sample_index for x in infos], delta=True), TFInstruments(rec),
                       {"prev": None})
    step = 0
    for r in range(rounds + 1):
        for name, _opt in CONFIGS:
            step += 1
            values = [v + 1e-3 for v in values]
            rec, infos, stats, ins, keep = state[name]
            optim = {f"t{k}": {"m": v * 0.1, "v": v * v, "lr": 1e-3, "step": step, "beta2": 0.999, "eps": 1e-7}
                     for k, v in enumerate(values)}

            def snap(rec=rec, infos=infos, stats=stats, ins=ins, keep=keep, vals=values, optim=optim, step=step):
                prevs = keep["prev"] or vals
                pend = ins.start(infos, vals, dict(enumerate(keep["prev"] or [])), grads, optim) if ins else None
                weights, delta, _sample = stats(vals, prevs, [keep["prev"] is not None] * len(vals))
                if pend is not None:
                    ins.finish(step, pend, infos, vals, grads, optim, weights, delta, None)
                keep["prev"] = vals

            t = _timed(snap)
            if r:
                times[name].append(t)
    for rec, *_ in state.values():
        rec.close()
    return times


def report(path: str, times: dict) -> None:
    base = statistics.median(w for w, _c in times["off"])
    for name, ts in times.items():
        wall = statistics.median(w for w, _c in ts) * 1e3
        cpu = statistics.median(c for _w, c in ts) * 1e3
        print(f"{path:4s} {name:14s} wall {wall:9.1f} ms  cpu {cpu:9.1f} ms  x off {wall / 1e3 / base:5.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first 60 ResNet-50 tensors (1.4M values), 3 rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--paths", default="jax,tf")
    args = ap.parse_args(argv)
    shapes = resnet50_shapes()[:60] if args.quick else resnet50_shapes()
    rounds = args.rounds or (3 if args.quick else 5)
    print(f"{len(shapes)} tensors, {sum(int(np.prod(s)) for s in shapes) / 1e6:.1f}M values, {rounds} rounds")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths.split(","):
            report(path, {"jax": bench_jax, "tf": bench_tf}[path](shapes, rounds, tmp))
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
