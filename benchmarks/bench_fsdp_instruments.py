"""Cost of the instruments across the shards of an FSDP2 run (docs/instruments.md, "Paths"): two
gloo processes on the CPU, an MLP with every Linear `fully_shard`ed, a snapshot at every step
with instruments off, the default set and all of them, interleaved over rounds. Prints the
median time of one training step (snapshot included) of rank 0, wall and CPU, and `uptime`.

    python benchmarks/bench_fsdp_instruments.py [--width 512 --depth 4 --steps 6 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = (("no watch", None), ("off", False), ("default", "default"), ("all", True))


def worker(width: int, depth: int, steps: int, rounds: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    import weighttui.torch as wt

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(64, width, generator=g), torch.randn(64, 1, generator=g)
    times: dict[str, list] = {name: [] for name, _ in CONFIGS}
    for r in range(rounds + 1):  # round 0: warm-up (the spectral warm-up, first copies), not counted
        for i, (name, opt_choice) in enumerate(CONFIGS):
            h = None if opt_choice is None else wt.watch(model, os.path.join(out_dir, f"r{r}-{i}.wtui"),
                                                          optimizer=opt, instruments=opt_choice)
            for s in range(steps):
                w, c = time.perf_counter(), time.process_time()
                loss = ((model(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()  # the snapshot: every step
                if r and s:  # the first snapshot of a watch() takes its copies
                    times[name].append((time.perf_counter() - w, time.process_time() - c))
            if h is not None:
                h.close()
            dist.barrier()
    if rank == 0:
        base = statistics.median(t[0] for t in times["off"])
        for name, ts in times.items():
            wall = statistics.median(t[0] for t in ts) * 1e3
            cpu = statistics.median(t[1] for t in ts) * 1e3
            print(f"{name:9s} step+snapshot wall {wall:8.1f} ms  cpu {cpu:8.1f} ms  x off {wall / 1e3 / base:5.2f}",
                  flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*(int(a) for a in args.worker[:4]), args.worker[4])
        return
    params = args.depth * (args.width * args.width + args.width) + args.width + 1
    print(f"FSDP2, 2 gloo processes, MLP {args.depth} x {args.width} ({params / 1e6:.2f}M parameters), "
          f"a snapshot every step, {args.rounds} rounds of {args.steps} steps")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(2):
            env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                       OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(args.width), str(args.depth),
                                           str(args.steps), str(args.rounds), tmp], env=env))
        for p in procs:
            p.wait()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
