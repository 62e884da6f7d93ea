"""sigma_max's accuracy and cost on real training (docs/instruments.md, "Spectral norm: accuracy and
cost by size"): an MLP with the matrix sizes given, trained with AdamW or SGD with momentum, watched
with instruments=["sigma"] and full values every `every` steps; per weight matrix, the worst relative
error of sigma_max against numpy.linalg.svd over every snapshot (and from the third snapshot on), the
Lanczos steps each snapshot took and the CPU time spent in them (record/instruments.lanczos, its torch
products included), against the CPU time of one pass of the two matrix-vector products. The same run
with sigma_steps=0 (one power step per snapshot, the estimate before) beside it.

    python benchmarks/bench_sigma.py --dims 384,512,1024,10 --opt adamw      # about a minute
    python benchmarks/bench_sigma.py --dims 1024,4096,1024,10 --steps 60    # 4096 x 1024: a few minutes
    python benchmarks/bench_sigma.py --quick                                 # small, to check it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

import weighttui
import weighttui.torch as wt
from weighttui.record import instruments as inst


def train(path, dims, opt, steps, every, lr, sigma_steps, cpu_kernel):
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    if opt == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr or 1e-3, weight_decay=0.01)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr or 0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(dims[0], dims[-1], generator=gen)
    calls: list = []
    real = inst.lanczos

    def timed(*a, **kw):
        t0 = time.process_time()
        out = real(*a, **kw)
        calls.append((tuple(a[1].shape), out[3], time.process_time() - t0))  # (n, p): the matrix's
        return out

    inst.lanczos = timed
    try:
        handle = wt.watch(model, path, optimizer=optimizer, every=every, full_every=every, cpu_kernel=cpu_kernel,
                          instruments={**{k: False for k in inst.ALL}, "sigma": True, "sigma_steps": sigma_steps})
        for _ in range(steps):
            x = torch.randn(128, dims[0], generator=gen)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1)).backward()
            optimizer.step()
        handle.close()
    finally:
        inst.lanczos = real
    return calls


def matvec_ms(shape, reps=20) -> float:
    w = torch.randn(shape)
    v = torch.randn(shape[1])
    t0 = time.process_time()
    for _ in range(reps):
        torch.mv(w, v) @ w
    return (time.process_time() - t0) / reps * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="384,512,1024,10")
    ap.add_argument("--opt", default="adamw", choices=["adamw", "momentum"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--cpu-kernel", default="fused")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.dims, args.steps = "64,256,32,10", 20
    dims = [int(d) for d in args.dims.split(",")]
    print(f"load {os.getloadavg()}, torch {torch.__version__}, dims {dims}, {args.opt}, {args.steps} steps, "
          f"every {args.every}, sigma_steps {inst.DEFAULT_SIGMA_STEPS} vs 0, tol {inst.SIGMA_TOL}")
    print("| matrix | elements | worst error, sigma_steps=0 | worst error | from 3rd snapshot | last |"
          " Lanczos steps / snapshot (max) | CPU ms / snapshot | one W v, W^T u pass, CPU ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for sigma_steps in (0, inst.DEFAULT_SIGMA_STEPS):
            path = Path(tmp) / f"s{sigma_steps}.wtui"
            calls = train(path, dims, args.opt, args.steps, args.every, args.lr, sigma_steps, args.cpu_kernel)
            run = weighttui.open(path)
            for name in run.tensor_names:
                if not name.endswith("weight"):
                    continue
                steps, sig = run.series(name, "sigma_max")
                w = [run.weights(step=s)[name] for s in steps.tolist()]
                ref = np.array([inst.sigma_max_ref(a) for a in w])
                m, n = w[0].shape
                key = (n, inst.DEFAULTS.vectors(m, n))  # (two matrices of one key share their calls: say so)
                res[(name, sigma_steps)] = (np.abs((ref - sig) / ref), w[0].shape,
                                            [c for c in calls if c[0] == key])
        for name in [k[0] for k in res if k[1] == 0]:
            e0, shape, _ = res[(name, 0)]
            e, _, calls = res[(name, inst.DEFAULT_SIGMA_STEPS)]
            n_snap = len(e)
            taken = [c[1] for c in calls]
            cpu = sum(c[2] for c in calls) / max(1, n_snap) * 1e3
            print(f"| {shape[0]} x {shape[1]} | {shape[0] * shape[1]:,} | {e0.max():.1e} | {e.max():.1e} |"
                  f" {e[2:].max():.1e} | {e[-1]:.1e} | {np.mean(taken) if taken else 0:.1f} ({max(taken, default=0)})"
                  f" | {cpu:.2f} | {matvec_ms(shape):.2f} |")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
