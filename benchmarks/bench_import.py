"""`weighttui import` throughput and peak RSS against `cat > /dev/null` of the same checkpoints.

    python benchmarks/bench_import.py [--params 100e6] [--checkpoints 20] [--format safetensors|pt] [--no-values]

Generates N checkpoints of a transformer-shaped model (an embedding of 1/3 of
the parameters, the rest in 12 square-ish blocks) in a temporary directory,
reads them once with cat (page cache warm), times `cat * > /dev/null`, then
runs `python -m weighttui.cli import` in a child process and samples its
peak RSS from outside (psutil, every 20 ms, or /proc/PID/status VmHWM at exit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def shapes(params: int) -> list[tuple[int, int]]:
    emb_rows = 32000
    emb_cols = max(1, int(params / 3 / emb_rows))
    rest = params - emb_rows * emb_cols
    side = int((rest / 12) ** 0.5)
    return [(emb_rows, emb_cols)] + [(side, side)] * 12


def generate(d: str, n: int, params: int, fmt: str) -> int:
    rng = np.random.default_rng(0)
    base = {f"layer{i}.weight": rng.standard_normal(s, dtype=np.float32) * 0.02 for i, s in enumerate(shapes(params))}
    largest = max(v.nbytes for v in base.values())
    for k in range(n):
        for v in base.values():
            v += np.float32(1e-4) * rng.standard_normal(v.shape, dtype=np.float32)
        path = os.path.join(d, f"step_{(k + 1) * 100}.{'safetensors' if fmt == 'safetensors' else 'pt'}")
        if fmt == "safetensors":
            from safetensors.numpy import save_file

            save_file(base, path)
        else:
            import torch

            torch.save({kk: torch.from_numpy(vv) for kk, vv in base.items()}, path)
    return largest


def peak_rss(cmd) -> tuple[float, int]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    peak = 0
    status = f"/proc/{p.pid}/status"
    while p.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.02)
    err = p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        raise SystemExit(f"import failed: {err}")
    return time.perf_counter() - t0, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=float, default=100e6)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    ap.add_argument("--no-values", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wtui-bench-") as d:
        src = os.path.join(d, "ck")
        os.mkdir(src)
        largest = generate(src, args.checkpoints, int(args.params), args.format)
        files = sorted(os.path.join(src, f) for f in os.listdir(src))
        total = sum(os.path.getsize(f) for f in files)
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        t0 = time.perf_counter()
        subprocess.run(f"cat {' '.join(files)} > /dev/null", shell=True, check=True)
        cat_s = time.perf_counter() - t0
        out = os.path.join(d, "run.wtui")
        cmd = [sys.executable, "-m", "weighttui.cli", "import", src, "--out", out]
        if args.no_values:
            cmd.append("--no-values")
        imp_s, rss = peak_rss(cmd)
        base_s, base_rss = peak_rss([sys.executable, "-c", "import weighttui.cli.main, numpy"
                                     + (", torch" if args.format == "pt" else "")])
        print(f"{args.checkpoints} checkpoints x {args.params / 1e6:.0f}M params ({args.format}), "
              f"{total / 1e9:.2f} GB, largest tensor {largest / 1e6:.0f} MB, "
              f"values {'off' if args.no_values else 'on'}")
        print(f"cat > /dev/null: {cat_s:.2f} s ({total / cat_s / 1e9:.2f} GB/s)")
        print(f"weighttui import: {imp_s:.2f} s ({total / imp_s / 1e9:.3f} GB/s), "
              f"ratio import/cat throughput "
              f"{cat_s / imp_s:.3f}")
        print(f"peak RSS {rss / 1e6:.0f} MB = {(rss - base_rss) / largest:.2f} x largest tensor + "
              f"{base_rss / 1e6:.0f} MB (python + imports alone); log {os.path.getsize(out) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
