"""PyTorch recording cost, side by side in one run (prints a markdown table).

1. One snapshot of a ResNet-50-shaped parameter set (161 tensors, 25.6M
   float32 values) on the CPU: weighttui's statistics + 64-bin histograms +
   exact delta + samples (what the training thread is blocked for), as a
   multiple of one read pass (`torch.sum` over every parameter); against
   TensorBoard's `SummaryWriter.add_histogram` over the same parameters, and
   against what `wandb.watch(log="all", log_freq=1)`'s own hooks add to a
   forward + backward pass (offline mode, parameters and gradients); also
   weighttui's torch-ops engine (cpu_kernel="torch") next to the fused kernel.
2. End-to-end slowdown of a real training loop (an MLP on synthetic data)
   with a snapshot every step and every 10 steps, against no recording;
   the configurations run interleaved, round after round, and the median
   round counts, so that load from other processes hits all of them alike.

    python benchmarks/bench_torch.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_torch.py --quick    # small sizes, to check it runs
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapes import resnet50_shapes  # one home for the shapes (benchmarks/shapes.py)

import weighttui.torch as wt
from weighttui.integrations import torch_native


class ParamSet(torch.nn.Module):
    """The parameters of a model, with a forward that touches each of them (for hooks)."""

    def __init__(self, shapes, scale=1.0):
        super().__init__()
        self.params = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(s) * 0.05 * scale) for s in shapes)

    def forward(self, x):
        return x + sum(p.view(-1)[0] for p in self.params)


def timed(fn, repeat):
    """Median seconds of fn() over `repeat` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"load average {load[0]:.2f}")


def bench_snapshot(shapes, repeat, tmp, with_grads):
    torch.manual_seed(0)
    model = ParamSet(shapes)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    rows = []
    read = timed(lambda: [p.sum() for p in params], repeat)
    rows.append(("read", "read pass: torch.sum over every parameter", read))

    def weighttui_time(grads, **options):
        handle = wt.watch(model, tmp / "bench.wtui", delta="exact", initial=False, queue_size=1000,
                          **options)
        handle.grads = grads

        def snap():
            with torch.no_grad():
                for p in params[:3]:  # an update, so deltas are not all zero
                    p.add_(1e-4)
            handle.step()

        try:
            return timed(snap, repeat)
        finally:
            handle.close()

    fused = "fused" if torch_native.available() else None
    if fused:
        rows.append(("default", "weighttui (default: fused CPU kernel): stats + 64-bin hist of every element "
                     "+ exact delta + samples", weighttui_time(False)))
        if with_grads:
            rows.append(("grads", "weighttui (default) + gradient stats and hist",
                         weighttui_time(True)))
    else:
        rows.append(("default", f"weighttui fused kernel: not run ({torch_native.UNAVAILABLE})", float("nan")))
    rows.append(("torch-auto", "weighttui, torch-ops engine (cpu_kernel='torch'), hist_sample='auto' "
                 "(tensors > 65,536 elements binned from a sample of that size)",
                 weighttui_time(False, cpu_kernel="torch")))
    rows.append(("torch-all", "weighttui, torch-ops engine, every element binned",
                 weighttui_time(False, cpu_kernel="torch", hist_sample=None)))
    if with_grads and not fused:
        rows.append(("grads", "weighttui (torch-ops engine) + gradient stats and hist",
                     weighttui_time(True, cpu_kernel="torch")))

    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(tmp / "tb"))
    step = [0]

    def tb_hist():
        step[0] += 1
        for i, p in enumerate(params):
            tb.add_histogram(f"p{i}", p, step[0])

    t_tb = timed(tb_hist, max(1, repeat // 5))
    tb.close()
    rows.append(("tb", "TensorBoard add_histogram, every parameter", t_tb))

    t_wandb = wandb_time(model, max(2, repeat // 3), tmp)
    if isinstance(t_wandb, str):
        rows.append(("wandb", f"W&B wandb.watch: not run ({t_wandb})", float("nan")))
    else:
        rows.append(("wandb", "W&B wandb.watch(log='all', log_freq=1), offline: what its hooks add to "
                     "one forward + backward (parameters and gradients)", t_wandb))
    return n, len(params), read, rows


def wandb_time(model, repeat, tmp):
    """Seconds that wandb.watch's own hooks add to a forward + backward pass.

    The hooks are W&B's real ones (a forward hook logging every parameter, a
    gradient hook per parameter, log_freq=1), in offline mode; the cost is the
    median step with them minus the median step without, interleaved."""
    try:
        import wandb
    except ImportError:
        return "wandb is not installed"
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        run = wandb.init(mode="offline", dir=str(tmp), project="bench", settings=wandb.Settings(
            console="off", x_disable_stats=True))
    except Exception as exc:  # no service process, sandbox ...
        return f"wandb.init failed: {type(exc).__name__}: {exc}"
    x = torch.zeros(1)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        run.log({}, commit=True)

    try:
        plain, hooked = [], []
        step()
        for _ in range(repeat):
            t0 = time.perf_counter()
            step()
            plain.append(time.perf_counter() - t0)
            wandb.watch(model, log="all", log_freq=1)
            step()  # the first hooked step after watch() sets up its history
            t0 = time.perf_counter()
            step()
            hooked.append(time.perf_counter() - t0)
            wandb.unwatch(model)
        return statistics.median(hooked) - statistics.median(plain)
    finally:
        run.finish()


def bench_passes(shapes, repeat):
    """What one eager torch pass costs over the same parameters, in read passes:
    the floor of a snapshot built from separate ops (each statistic is one)."""
    torch.manual_seed(0)
    xs = [torch.randn(s).reshape(-1) * 0.05 for s in shapes]
    prev = [x - 1e-4 for x in xs]
    tmp = torch.empty(max(x.numel() for x in xs))

    def rows(x):  # as torch_stats sums squares: norms of 256-element rows
        r = x.numel() // 256
        return x[:r * 256].view(r, 256)

    ops = [
        ("read pass: sum", lambda x, p: x.sum()),
        ("min and max: aminmax", lambda x, p: torch.aminmax(x)),
        ("sum of squares: vector_norm of 256-element rows", lambda x, p: torch.linalg.vector_norm(rows(x), dim=1)),
        ("same, as mul into a temporary + sum", lambda x, p: torch.mul(x, x, out=tmp[:x.numel()]).sum()),
        ("shifted copy x - c into a temporary", lambda x, p: torch.sub(x, 0.01, out=tmp[:x.numel()])),
        ("sum of abs(x) and nonzero count: abs into a temporary, sum, sign_, sum",
         lambda x, p: (torch.abs(x, out=tmp[:x.numel()]).sum(), tmp[:x.numel()].sign_().sum())),
        ("nonzero count: count_nonzero", lambda x, p: torch.count_nonzero(x)),
        ("delta: x - prev into a temporary", lambda x, p: torch.sub(x, p, out=tmp[:x.numel()])),
        ("delta: copy x into prev for the next one", lambda x, p: p.copy_(x)),
    ]
    res = {name: [] for name, _ in ops}
    for _ in range(repeat):  # interleaved, so load hits every op alike
        for name, fn in ops:
            t0 = time.perf_counter()
            for x, p in zip(xs, prev, strict=True):
                fn(x, p)
            res[name].append(time.perf_counter() - t0)
    return [(name, statistics.median(v)) for name, v in res.items()]


# ------------------------------------------------------------ end to end


def make_mlp(width, depth):
    layers, d = [], 256
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), torch.nn.GELU()]
        d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10))


def time_training(configs, rounds, steps, width, depth, batch, tmp, clock=time.perf_counter, warm=3):
    """Median seconds per training step of the MLP for each configuration: name -> the
    options of wt.watch (None: no recording), run interleaved, round after round.
    clock: time.perf_counter (wall) or time.process_time (the process's CPU time, steadier
    on a busy machine; it counts the recorder's writer thread too). The clock starts after
    `warm` steps (allocator warm-up; a larger value also leaves out the first snapshots' one-time work)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 256)
    y = torch.randint(0, 10, (batch,))
    results = {k: [] for k in configs}
    for r in range(rounds):
        for c, (name, options) in enumerate(configs.items()):
            torch.manual_seed(r)
            model = make_mlp(width, depth)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            handle = None
            if options is not None:
                handle = wt.watch(model, tmp / f"train{r}_{c}.wtui", optimizer=opt, initial=False, **options)
            for i in range(steps + warm):
                if i == warm:  # after warm-up (allocator, first-snapshot copies)
                    t0 = clock()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            results[name].append((clock() - t0) / steps)
            if handle is not None:
                handle.close()
    return {k: statistics.median(v) for k, v in results.items()}


def bench_training(rounds, steps, width, depth, batch, tmp):
    configs = {"no recording": None, "weighttui every 10 steps": {"every": 10}, "weighttui every step": {"every": 1}}
    n_params = sum(p.numel() for p in make_mlp(width, depth).parameters())
    return n_params, time_training(configs, rounds, steps, width, depth, batch, tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-training", action="store_true", help="only the snapshot and per-pass tables")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's own choice); 1 is steadier on a busy machine")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = resnet50_shapes()
    if args.quick:
        shapes = [tuple(max(1, d // 8) for d in s) for s in shapes]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"machine: {machine()}\n")
        n, t, read, rows = bench_snapshot(shapes, 3 if args.quick else args.repeat, tmp, with_grads=True)
        print(f"## One snapshot, {t} tensors, {n / 1e6:.1f}M float32 values (ResNet-50 shapes), CPU\n")
        print("| what | time (ms) | x read pass | weighttui faster by |")
        print("|---|---:|---:|---:|")
        by = {key: sec for key, _, sec in rows}
        snap = by["default"] if by["default"] == by["default"] else by["torch-auto"]
        grads = by.get("grads", float("nan"))
        for key, what, sec in rows:
            faster = ""
            if key == "tb" and sec == sec:
                faster = f"{sec / snap:.1f}x (vs weighttui default)"
            elif key == "wandb" and sec == sec:
                faster = f"{sec / grads:.1f}x (vs weighttui with gradients)"
            elif key.startswith("torch-") and sec == sec:
                faster = f"{sec / snap:.1f}x (fused vs this)"
            print(f"| {what} | {sec * 1e3:.1f} | {sec / read:.1f} | {faster} |")
        passes = bench_passes(shapes, 3 if args.quick else args.repeat)
        base = passes[0][1]
        print("\n## What one torch pass costs over these parameters (median, interleaved)\n")
        print("| pass | time (ms) | x read pass |")
        print("|---|---:|---:|")
        for what, sec in passes:
            print(f"| {what} | {sec * 1e3:.1f} | {sec / base:.2f} |")
        if args.no_training:
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
            return
        width, depth, batch = (256, 2, 64) if args.quick else (1024, 4, 256)
        steps = 10 if args.quick else 40
        n_params, med = bench_training(2 if args.quick else args.rounds, steps, width, depth, batch, tmp)
        base = med["no recording"]
        print(f"\n## Training loop: MLP 256-{'-'.join([str(width)] * depth)}-10 ({n_params / 1e6:.1f}M "
              f"parameters), AdamW, batch {batch}, {steps} steps, median of "
              f"{2 if args.quick else args.rounds} interleaved rounds\n")
        print("| configuration | ms per step | slowdown |")
        print("|---|---:|---:|")
        for name, sec in med.items():
            print(f"| {name} | {sec * 1e3:.2f} | {100 * (sec / base - 1):+.1f}% |")
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
