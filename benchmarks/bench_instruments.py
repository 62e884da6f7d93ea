"""What each instrument (docs/instruments.md) adds to a torch snapshot, side by side in one run.

1. One snapshot of the ResNet-50 parameter shapes (161 tensors, 25.6M float32
   values, CPU, fused kernel, exact deltas, gradients, AdamW state): weighttui
   without instruments, each instrument alone, and all of them; the
   configurations run interleaved, round after round, and the median counts.
2. Training slowdown of bench_torch's MLP (AdamW) with a snapshot every 10
   steps: no recording, weighttui without instruments, with all of them.

Both are timed as CPU time of the process (time.process_time: what a snapshot costs,
steadier than wall time on a shared machine; it includes the recorder's writer thread)
and as wall time.

    python benchmarks/bench_instruments.py --threads 1   # full run (about 3 minutes on 2 cores)
    python benchmarks/bench_instruments.py --quick       # small sizes, to check it runs
    python benchmarks/bench_instruments.py --threads 1 --kernel-parts   # the kernel's time per instrument part
    python benchmarks/bench_instruments.py --threads 1 --no-training --only "all of 1-5" --rounds 5
        # development: the baseline and the configurations named (substrings), about 40 s
    python benchmarks/bench_instruments.py --threads 1 --no-training --only "all of 1-5" --other OLD.so
        # every row again with another build of weighttui._fastats, interleaved (a kernel change)
    python benchmarks/bench_instruments.py --threads 1 --only "all of 1-5" --compare /tmp/before
        # the snapshot table of another checkout (built) and of this one, a process each, alternating
        # round by round (--rounds, default 3): the Python around the kernel changed too
    python benchmarks/bench_instruments.py --threads 1 --knockout --rounds 5
        # all of 1-5 with one part of its cost removed at a time (the numbers it records are then
        # wrong): what each part costs in place, caches and all (about 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# --repo DIR: weighttui from another checkout (its build included); read before weighttui is imported
sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--repo") + 1] if "--repo" in sys.argv[:-1]
                            else Path(__file__).parents[1]).resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# weighttui before bench_torch, which puts this file's checkout first on the path (--repo)
import weighttui.torch as wt  # noqa: I001
from weighttui.record import instruments as inst

from bench_torch import ParamSet, machine, resnet50_shapes, time_training

OFF = {name: False for name in inst.ALL}
CONFIGS = {
    "no instruments, no gradients (today's default snapshot)": dict(grads=False, instruments=False),
    "no instruments (gradients)": dict(grads=True, instruments=False),
    "+ sigma (sigma_max, stable_rank, sigma_ratio)": dict(grads=True, instruments=["sigma"]),
    "+ sigma, 8 vectors for every matrix (block_max=inf: torch ops)":
        dict(grads=True, instruments={**OFF, "sigma": True, "block_max": 1 << 62}),
    "+ sigma, one vector for every matrix (block=1: in the kernel's passes)":
        dict(grads=True, instruments={**OFF, "sigma": True, "block": 1}),
    "+ dist_init": dict(grads=True, instruments=["dist_init"]),
    "+ cos (cos_prev, cos_grad)": dict(grads=True, instruments=["cos"]),
    "+ optim (AdamW state)": dict(grads=True, instruments=["optim"]),
    "+ nan_origin (healthy run)": dict(grads=True, instruments=["nan_origin"]),
    "+ units (per-unit norms of weights and gradients)": dict(grads=True, instruments=["units"]),
    'the default set (instruments="default": optim, nan_origin, units)': dict(grads=True, instruments="default"),
    "all of 1-5 (sigma, dist_init, cos, units, optim; nan_origin)": dict(grads=True,
                                                                     instruments={"alpha": False}),
    "all of 1-5, sigma_steps=0 (one power step per snapshot: sigma_max before its Lanczos steps)":
        dict(grads=True, instruments={"alpha": False, "sigma_steps": 0}),
    "all instruments": dict(grads=True, instruments=True),
    "all instruments, 8 vectors for every matrix (block_max=inf)": dict(grads=True,
                                                                        instruments={"block_max": 1 << 62}),
}


def load_build(path: str):
    """Another build of weighttui._fastats (an .so), under its own module name."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("_wt_other._fastats", path)
    spec = importlib.util.spec_from_file_location("_wt_other._fastats", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    loader.exec_module(mod)
    return mod


def with_other(configs: dict, other: str | None) -> dict:
    """configs, and each again as "... [other build]" run with the kernel build at `other`."""
    if not other:
        return configs
    mod = load_build(other)
    out = {}
    for name, cfg in configs.items():
        out[name] = cfg
        out[f"{name} [other build]"] = {**cfg, "fastats": mod}
    return out


def bench_snapshot(shapes, rounds, repeat, tmp, configs=CONFIGS):
    from weighttui.record import kernel

    torch.manual_seed(0)
    model = ParamSet(shapes)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # the state (exp_avg, exp_avg_sq) exists
    noise = [torch.randn_like(p) * 1e-4 for p in params]
    read_times = []
    times = {k: [] for k in configs}
    cpu = {k: [] for k in configs}
    first = {k: [] for k in configs}  # CPU time of the first two snapshots (one-time work)
    this_build = kernel._fastats
    for r in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeat):
            [p.sum() for p in params]
        read_times.append((time.perf_counter() - t0) / repeat)
        for name, cfg in configs.items():
            kernel._fastats = cfg.get("fastats", this_build)
            patch = cfg.get("patch", {})  # (object, attribute) -> replacement, for this configuration (--knockout)
            saved = {key: getattr(*key) for key in patch}
            for (obj, attr), value in patch.items():
                setattr(obj, attr, value)
            handle = wt.watch(model, tmp / f"snap{r}.wtui", delta="exact", initial=False, queue_size=1000,
                              grads=cfg["grads"], instruments=cfg["instruments"])
            handle.optimizer = opt  # its state, without hooking its step
            step = [0]

            def update():  # every tensor moves (untimed), as in training
                with torch.no_grad():
                    for p, d in zip(params, noise, strict=True):
                        p.add_(d)

            def snap(handle=handle, step=step):
                step[0] += 1
                g = handle._grad_stats() if handle.grads else None
                handle._snapshot(step[0], g)

            c0 = time.process_time()
            snap()  # first snapshot: copies, the spectral warm-up
            update()
            snap()  # the first update: its spectral warm-up
            handle.recorder.drain()
            first[name].append(time.process_time() - c0)
            for _ in range(repeat):
                update()
                t0, c0 = time.perf_counter(), time.process_time()
                snap()
                times[name].append(time.perf_counter() - t0)
                handle.recorder.drain()  # the writer thread's encoding of this snapshot: in the CPU time
                cpu[name].append(time.process_time() - c0)
            handle.close()
            for (obj, attr), value in saved.items():
                setattr(obj, attr, value)
    kernel._fastats = this_build
    return sum(p.numel() for p in params), len(params), statistics.median(read_times), \
        {k: statistics.median(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in cpu.items()}, \
        {k: statistics.median(v) for k, v in first.items()}


def knockout_configs() -> dict:
    """All of 1-5, and again with one part removed each (a patched method, for this measurement only:
    the numbers recorded are wrong). A part's removal also removes the host work that reads its results
    (no gathered coordinates: no cosines). A timer around each function says less: after the kernel
    streamed the snapshot through the caches, the Python that follows runs on cache misses."""
    import math

    from weighttui.integrations import torch_instruments as ti
    from weighttui.record import instruments as ref

    T = ti.TorchInstruments
    start, take = T.start, T.take_grads
    empty = {"states": (), "units": False}

    def start_without(*fields):  # the kernel's Extras of the weights without these parts
        def patched(self, *a, **k):
            pend = start(self, *a, **k)
            for ex in pend.extras.values():
                for f in fields:
                    setattr(ex, f, empty.get(f))
            return pend
        return patched

    def take_without(*fields):  # the gradients' call
        def patched(self, *a, **k):
            out = take(self, *a, **k)
            for ex in out or ():
                for f in fields if ex is not None else ():
                    setattr(ex, f, empty.get(f))
            return out
        return patched

    def no_torch_sigma(self, *a, **k):
        return None

    def no_cosines(self, key, xs, g=None):
        return math.nan, math.nan

    every = {"alpha": False}
    out = {name: CONFIGS[name] for name in CONFIGS if name.startswith("no instruments")}
    out["all of 1-5"] = dict(grads=True, instruments=every)
    for name, patch in (
            ("without the kernel reading x0", {(T, "start"): start_without("x0")}),
            ("without the kernel reading the optimizer state", {(T, "start"): start_without("states")}),
            ("without the kernel reading x0 and the optimizer state", {(T, "start"): start_without("x0", "states")}),
            ("without the kernel's units of the weights", {(T, "start"): start_without("units")}),
            ("without the kernel's gather of the weights (and so the cosines)", {(T, "start"): start_without("idx")}),
            ("without the gradients' extras (units, gather)", {(T, "take_grads"): take_without("units", "idx")}),
            ("without the torch ops' sigma (the small matrices)", {(T, "_sigma_torch"): no_torch_sigma}),
            ("without the host cosines", {(ref.UpdateCosines, "update"): no_cosines})):
        out[f"all of 1-5, {name}"] = dict(grads=True, instruments=every, patch=patch)
    return out


KERNEL_PARTS = ("none", "x0", "states", "units", "v", "vd", "idx", "all")


def bench_kernel_parts(shapes, reps):
    """CPU ms of the fused kernel alone on the weights (exact deltas) with each kernel.Extras part
    alone and all of them: where the instruments' kernel time goes (the Python around it excluded)."""
    import numpy as np

    from weighttui.integrations import torch_native
    from weighttui.record import kernel

    torch.manual_seed(0)
    xs = [torch.randn(s) for s in shapes]
    prevs0 = [x + 1e-4 * torch.randn_like(x) for x in xs]
    prevs = [p.clone() for p in prevs0]
    x0s = [torch_native.flat(x + 1e-3 * torch.randn_like(x)) for x in xs]
    ms = [torch_native.flat(torch.randn_like(x)) for x in xs]
    vs = [torch_native.flat(torch.rand_like(x)) for x in xs]
    mns = [inst.matrix_shape(tuple(x.shape)) for x in xs]
    idx = [np.arange(x.numel()) if x.numel() <= inst.DEFAULT_COS_SAMPLE
           else inst.sample_index(str(i), x.numel(), inst.DEFAULT_COS_SAMPLE) for i, x in enumerate(xs)]
    vec = [None if mn is None else np.random.default_rng(i).random(mn[1]) for i, mn in enumerate(mns)]

    def extras(part, i):
        mn, kw = mns[i], {}
        if part in ("x0", "all"):
            kw["x0"] = x0s[i]
        if part in ("states", "all"):
            kw["states"] = (ms[i], vs[i])
        if mn is not None:
            if part in ("units", "all"):
                kw.update(rows=mn[0], units=True)
            if part in ("v", "all"):
                kw.update(rows=mn[0], v=vec[i])
            if part in ("vd", "all"):
                kw.update(rows=mn[0], vd=vec[i])
        if part in ("idx", "all"):
            kw["idx"] = idx[i]
        return kernel.Extras(**kw)

    out: dict[str, list[float]] = {p: [] for p in KERNEL_PARTS}
    for _ in range(reps):  # interleaved
        for part in KERNEL_PARTS:
            ex = None if part == "none" else [extras(part, i) for i in range(len(xs))]
            for p, q in zip(prevs, prevs0, strict=True):  # a real update at every call (the copy makes it 0)
                p.copy_(q)
            c0 = time.process_time()
            torch_native.rows(xs, prevs, 64, copy=True, threads=1, extras=ex)
            out[part].append(time.process_time() - c0)
    return {p: statistics.median(v) for p, v in out.items()}


TRAINING = {"no recording": None,
            "every 10 steps, no instruments": {"every": 10, "instruments": False},
            "every 10 steps, the default instruments": {"every": 10, "instruments": "default"},
            "every 10 steps, all of 1-5 (no alpha)": {"every": 10, "instruments": {"alpha": False}},
            "every 10 steps, all instruments": {"every": 10, "instruments": True}}


# the clock starts at step 23: after the snapshots of steps 10 and 20, which carry the one-time
# work (initial copies; the spectral warm-up of the weights at the first, of the updates at the second)
WARM = 23


def bench_training(rounds, steps, width, depth, batch, tmp):
    """(CPU, wall) medians per step of each TRAINING configuration, in steady state (see WARM)."""
    cpu = time_training(TRAINING, rounds, steps, width, depth, batch, tmp, clock=time.process_time, warm=WARM)
    wall = time_training(TRAINING, rounds, steps, width, depth, batch, tmp, warm=WARM)
    return cpu, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-training", action="store_true", help="only the snapshot table")
    ap.add_argument("--only", default=None,
                    help="comma-separated substrings: only the snapshot configurations whose name has one "
                         "(the two without instruments are always run)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds of the snapshot table (3)")
    ap.add_argument("--kernel-parts", action="store_true",
                    help="only the fused kernel's time per instrument part (kernel.Extras), about 20 s")
    ap.add_argument("--knockout", action="store_true",
                    help="all of 1-5 with one part of its cost removed at a time (what each costs in place)")
    ap.add_argument("--other", help="another build of weighttui._fastats (.so): every row again with it")
    ap.add_argument("--repo", help="weighttui from this checkout instead of this file's (built in place)")
    ap.add_argument("--compare", metavar="DIR",
                    help="the snapshot table of the checkout DIR beside this one's: each round a process "
                         "per checkout, alternating (what the snapshot costs when the Python changed too)")
    ap.add_argument("--json", help="also write the snapshot table's CPU and wall seconds to this file")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args, argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = resnet50_shapes()
    rounds, repeat, steps, width = 3, 5, 40, 1024
    if args.quick:
        shapes = [(64, 3, 7, 7), (256, 64, 3, 3), (1000, 512), (1000,)]
        rounds, repeat, steps, width = 1, 2, 10, 128
    if args.rounds:
        rounds = args.rounds
    configs = CONFIGS
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        configs = {k: v for k, v in CONFIGS.items() if "no instruments" in k or any(w in k for w in wanted)}
    print(f"machine: {machine()}\nweighttui: {Path(wt.__file__).resolve().parents[1]}\n")
    if args.kernel_parts:
        parts = bench_kernel_parts(shapes, 5 if args.quick else 25)
        print("### The fused kernel alone on the weights (exact deltas), CPU ms, median\n")
        print("| Extras part | CPU ms | added |\n|---|---:|---:|")
        for part, sec in parts.items():
            print(f"| {part} | {sec * 1e3:.2f} | {(sec - parts['none']) * 1e3:+.2f} |")
        return
    if args.knockout:
        with tempfile.TemporaryDirectory() as d:
            _n, _t, _read, _times, cpu, _first = bench_snapshot(shapes, rounds, repeat, Path(d), knockout_configs())
        every = cpu["all of 1-5"]
        print(f"### All of 1-5 with one part removed, CPU ms per snapshot, median of {rounds} interleaved rounds\n")
        print("| configuration | CPU ms | saved against all of 1-5 |\n|---|---:|---:|")
        for name, sec in cpu.items():
            print(f"| {name} | {sec * 1e3:.1f} | {(every - sec) * 1e3:+.1f} |")
        print(f"\nload (uptime) at the end: {os.getloadavg()}")
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        configs = with_other(configs, args.other)
        n, t, read, times, cpu, first = bench_snapshot(shapes, rounds, repeat, tmp, configs)
        base = "no instruments, no gradients (today's default snapshot)"
        base_g = "no instruments (gradients)"
        print(f"### One snapshot, {t} tensors, {n / 1e6:.1f}M float32 values; read pass {read * 1e3:.1f} ms\n")
        print("| configuration | CPU ms | x no instruments (gradients) | instrument alone: CPU ms | wall ms "
              "| first two snapshots (one-time work): CPU ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in configs:
            ref = base_g + (" [other build]" if name.endswith("[other build]") else "")
            alone = "" if "no instruments" in name else f"{(cpu[name] - cpu[ref]) * 1e3:+.1f}"
            print(f"| {name} | {cpu[name] * 1e3:.1f} | {cpu[name] / cpu[ref]:.2f} | {alone} "
                  f"| {times[name] * 1e3:.1f} | {first[name] * 1e3:.0f} |")
        del base
        print(f"\nload (uptime) at the end: {os.getloadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps({"cpu": cpu, "wall": times, "first": first}))
        if args.no_training:
            return
        med_cpu, med_wall = bench_training(rounds, steps, width, 4, 256, tmp)
        print(f"\n### Training: MLP 256-{width}x4-10, AdamW, batch 256, {steps} steps from step {WARM} "
              "(after the first two snapshots), median of interleaved rounds\n")
        print("| configuration | CPU ms per step | slowdown (CPU) | wall ms per step | slowdown (wall) |")
        print("|---|---:|---:|---:|---:|")
        for name in TRAINING:
            c, w = med_cpu[name], med_wall[name]
            plain_c, plain_w = med_cpu["no recording"], med_wall["no recording"]
            slow_c = "" if name == "no recording" else f"{(c / plain_c - 1) * 100:+.1f}%"
            slow_w = "" if name == "no recording" else f"{(w / plain_w - 1) * 100:+.1f}%"
            print(f"| {name} | {c * 1e3:.2f} | {slow_c} | {w * 1e3:.2f} | {slow_w} |")


def _without(argv: list[str], option: str, takes_value: bool = True) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = takes_value
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def compare(args, argv: list[str]) -> None:
    """--compare DIR: each round, this script's snapshot table with weighttui from DIR, then from this
    checkout (a process each, --rounds 1); the medians over the rounds side by side."""
    import subprocess

    rounds = args.rounds or (1 if args.quick else 3)
    rest = _without(_without(_without(_without(argv, "--compare"), "--rounds"), "--json"), "--repo")
    here = str(Path(__file__).resolve().parents[1])
    got: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            for label, repo in (("before", args.compare), ("after", here)):
                out = Path(d) / f"{label}{r}.json"
                cmd = [sys.executable, __file__, *rest, "--no-training", "--rounds", "1", "--repo", repo,
                       "--json", str(out)]
                print(f"round {r + 1}/{rounds}: {label} ({repo}), load {os.getloadavg()[0]:.2f}", flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                got[label].append(json.loads(out.read_text()))
    base_g = "no instruments (gradients)"
    med = {label: {k: statistics.median(run["cpu"][k] for run in runs) for k in runs[0]["cpu"]}
           for label, runs in got.items()}
    print(f"\n### CPU ms per snapshot, before ({args.compare}) and after ({here}), median of {rounds} "
          "alternating rounds\n")
    wall = {label: {k: statistics.median(run["wall"][k] for run in runs) for k in runs[0]["wall"]}
            for label, runs in got.items()}
    print("| configuration | before | after | after - before | x no instruments (gradients): before -> after "
          "| wall ms: before / after | each round: before / after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in med["after"]:
        b, a = med["before"].get(name, math.nan), med["after"][name]
        each = " / ".join(" ".join(f"{run['cpu'][name] * 1e3:.1f}" for run in got[label] if name in run["cpu"])
                          for label in ("before", "after"))
        print(f"| {name} | {b * 1e3:.1f} | {a * 1e3:.1f} | {(a - b) * 1e3:+.1f} "
              f"| {b / med['before'][base_g]:.2f} -> {a / med['after'][base_g]:.2f} "
              f"| {wall['before'].get(name, math.nan) * 1e3:.1f} / {wall['after'][name] * 1e3:.1f} | {each} |")
    print(f"\nload (uptime) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
