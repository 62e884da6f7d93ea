"""What each instrument (docs/instruments.md) adds to a torch snapshot, side by side in one run.

1. One snapshot of the ResNet-50 parameter shapes (161 tensors, 25.6M float32
   values, CPU, fused kernel, exact deltas, gradients, AdamW state): weighttui
   without instruments, each instrument alone, and all of them; the
   configurations run interleaved, round after round, and the median counts.
2. Training slowdown of bench_torch's MLP (AdamW) with a snapshot every 10
   steps: no recording, weighttui without instruments, with all of them.

    python benchmarks/bench_instruments.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_instruments.py --quick    # small sizes, to check it runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_torch import ParamSet, machine, resnet50_shapes, time_training

import weighttui.torch as wt

CONFIGS = {
    "no instruments, no gradients (today's default snapshot)": dict(grads=False, instruments=False),
    "no instruments (gradients)": dict(grads=True, instruments=False),
    "+ sigma (sigma_max, stable_rank, sigma_ratio)": dict(grads=True, instruments=["sigma"]),
    "+ sigma, block=1 (power iteration: 2 matrix-vector products per matrix)":
        dict(grads=True, instruments={"sigma": True, "dist_init": False, "cos": False, "optim": False,
                                      "nan_origin": False, "units": False, "block": 1}),
    "+ dist_init": dict(grads=True, instruments=["dist_init"]),
    "+ cos (cos_prev, cos_grad)": dict(grads=True, instruments=["cos"]),
    "+ optim (AdamW state)": dict(grads=True, instruments=["optim"]),
    "+ nan_origin (healthy run)": dict(grads=True, instruments=["nan_origin"]),
    "+ units (per-unit norms of weights and gradients)": dict(grads=True, instruments=["units"]),
    'the default set (instruments="default": optim, nan_origin, units)': dict(grads=True, instruments="default"),
    "all instruments": dict(grads=True, instruments=True),
    "all instruments, block=1": dict(grads=True, instruments={"block": 1}),
}


def bench_snapshot(shapes, rounds, repeat, tmp):
    torch.manual_seed(0)
    model = ParamSet(shapes)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # the state (exp_avg, exp_avg_sq) exists
    noise = [torch.randn_like(p) * 1e-4 for p in params]
    read_times = []
    times = {k: [] for k in CONFIGS}
    for r in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeat):
            [p.sum() for p in params]
        read_times.append((time.perf_counter() - t0) / repeat)
        for name, cfg in CONFIGS.items():
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

            snap()  # first snapshot: copies, the spectral warm-up
            update()
            snap()
            for _ in range(repeat):
                update()
                t0 = time.perf_counter()
                snap()
                times[name].append(time.perf_counter() - t0)
            handle.close()
    return sum(p.numel() for p in params), len(params), statistics.median(read_times), \
        {k: statistics.median(v) for k, v in times.items()}


def bench_training(rounds, steps, width, depth, batch, tmp):
    configs = {"no recording": None,
               "every 10 steps, no instruments": {"every": 10, "instruments": False},
               "every 10 steps, the default instruments": {"every": 10, "instruments": "default"},
               "every 10 steps, all instruments": {"every": 10, "instruments": True}}
    return time_training(configs, rounds, steps, width, depth, batch, tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = resnet50_shapes()
    rounds, repeat, steps, width = 3, 5, 40, 1024
    if args.quick:
        shapes = [(64, 3, 7, 7), (256, 64, 3, 3), (1000, 512), (1000,)]
        rounds, repeat, steps, width = 1, 2, 10, 128
    print(f"machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        n, t, read, times = bench_snapshot(shapes, rounds, repeat, tmp)
        base = times["no instruments, no gradients (today's default snapshot)"]
        base_g = times["no instruments (gradients)"]
        print(f"### One snapshot, {t} tensors, {n / 1e6:.1f}M float32 values; read pass {read * 1e3:.1f} ms\n")
        print("| configuration | ms | x today's default | x no instruments (gradients) | instrument alone: ms |")
        print("|---|---:|---:|---:|---:|")
        for name, s in times.items():
            alone = "" if "no instruments" in name else f"{(s - base_g) * 1e3:+.1f}"
            print(f"| {name} | {s * 1e3:.1f} | {s / base:.2f} | {s / base_g:.2f} | {alone} |")
        med = bench_training(rounds, steps, width, 4, 256, tmp)
        plain = med["no recording"]
        print("\n### Training: MLP 256-1024x4-10, AdamW, batch 256, median of interleaved rounds\n")
        print("| configuration | ms per step | slowdown |")
        print("|---|---:|---:|")
        for name, s in med.items():
            slow = "" if name == "no recording" else f"{(s / plain - 1) * 100:+.1f}%"
            print(f"| {name} | {s * 1e3:.2f} | {slow} |")


if __name__ == "__main__":
    main()
