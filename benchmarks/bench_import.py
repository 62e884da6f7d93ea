"""`weighttui import` throughput and peak RSS against `cat > /dev/null` of the same checkpoints.

    python benchmarks/bench_import.py [--params 100e6] [--checkpoints 20] [--format safetensors|pt|npz]
                                      [--modes values,no-values] [--keep DIR] [--quick] [--no-copy]

Generates N checkpoints of a transformer-shaped model (an embedding of 1/3 of
the parameters, the rest in 12 square-ish blocks) in a temporary directory
(or DIR with --keep, reused when it already holds them), reads them once with
cat (page cache warm), then runs `python -m weighttui.cli import` in a child
process for each mode (values kept, --no-values), side by side, each between
two timings of `cat * > /dev/null` (the faster is used). For values, also
`cat * > file` + fsync: the disk's share of writing a log as large as the
checkpoints (--no-copy leaves it out). For each: wall time, the child's CPU
time (user + system, from wait4), throughput against cat, and peak RSS (the
child's own VmHWM, said at its exit and sampled every 20 ms) against the
largest tensor. The weighttui that runs is the one on PYTHONPATH (to compare
two trees, run the script twice with the same --keep DIR).

--quick: 20M parameters x 5 checkpoints (400 MB), for a check while developing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from childproc import wait_measured


def shapes(params: int) -> list[tuple[int, int]]:
    emb_rows = 32000
    emb_cols = max(1, int(params / 3 / emb_rows))
    rest = params - emb_rows * emb_cols
    side = int((rest / 12) ** 0.5)
    return [(emb_rows, emb_cols)] + [(side, side)] * 12


SUFFIX = {"safetensors": "safetensors", "pt": "pt", "npz": "npz"}


def generate(d: str, n: int, params: int, fmt: str) -> int:
    """Write the checkpoints into d (unless d already holds them); the largest tensor's bytes."""
    sh = shapes(params)
    largest = max(r * c for r, c in sh) * 4
    names = [os.path.join(d, f"step_{(k + 1) * 100}.{SUFFIX[fmt]}") for k in range(n)]
    if all(os.path.exists(p) for p in names):
        return largest
    rng = np.random.default_rng(0)
    base = {f"layer{i}.weight": rng.standard_normal(s, dtype=np.float32) * 0.02 for i, s in enumerate(sh)}
    for path in names:
        for v in base.values():
            v += np.float32(1e-4) * rng.standard_normal(v.shape, dtype=np.float32)
        if fmt == "safetensors":
            from safetensors.numpy import save_file

            save_file(base, path)
        elif fmt == "npz":
            np.savez(path, **base)  # stored, not compressed: the import maps it
        else:
            import torch

            torch.save({kk: torch.from_numpy(vv) for kk, vv in base.items()}, path)
    for path in names:  # a folder of finished checkpoints: `import` maps files unchanged for 30 s in place
        os.utime(path, (1e9, 1e9))
    return largest


# Runs `python -m MODULE ARGS` and says its own VmHWM last on stderr: ru_maxrss from wait4 is no good
# here, as Linux carries the parent's high-water mark over the child's exec.
WRAP = """import runpy, sys
mod, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    if mod != "-":
        runpy.run_module(mod, run_name="__main__", alter_sys=True)
finally:
    hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(f"\\nVmHWM {hwm}", file=sys.stderr)
"""


def run_measured(cmd) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS bytes, stderr) of `python -c WRAP MODULE ARGS` (CPU from wait4)."""
    t0 = time.perf_counter()
    # cwd: not this checkout, so that the weighttui on PYTHONPATH is the one that runs
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(p.stderr.read() if p.stderr else b""))
    reader.start()
    _code, cpu, peak = wait_measured(p)
    wall = time.perf_counter() - t0
    reader.join()
    err = b"".join(err_chunks).decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed: {err}")
    said = [ln for ln in err.splitlines() if ln.startswith("VmHWM ")]
    if said:
        peak = max(peak, int(said[-1].split()[1]) * 1024)
    return wall, cpu, peak, err


def cat_time(files) -> float:
    t0 = time.perf_counter()
    subprocess.run(f"cat {' '.join(files)} > /dev/null", shell=True, check=True)
    return time.perf_counter() - t0


def copy_time(files, dest: str) -> float:
    """`cat FILES > dest` and an fsync: what writing a log as large as the checkpoints costs at least."""
    t0 = time.perf_counter()
    subprocess.run(f"cat {' '.join(files)} > {dest}", shell=True, check=True)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    took = time.perf_counter() - t0
    os.unlink(dest)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=float, default=100e6)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--format", choices=tuple(SUFFIX), default="safetensors")
    ap.add_argument("--modes", default="values,no-values", help="comma-separated: values, no-values")
    ap.add_argument("--keep", help="generate into (or reuse) this directory instead of a temporary one")
    ap.add_argument("--quick", action="store_true", help="20M parameters x 5 checkpoints")
    ap.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True,
                    help="with values, also time writing the same bytes to a file (cat > file + fsync)")
    args = ap.parse_args()
    if args.quick:
        args.params, args.checkpoints = 20e6, 5
    with tempfile.TemporaryDirectory(prefix="wtui-bench-") as tmp:
        src = args.keep or os.path.join(tmp, "ck")
        os.makedirs(src, exist_ok=True)
        largest = generate(src, args.checkpoints, int(args.params), args.format)
        files = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith("." + SUFFIX[args.format]))
        files = files[: args.checkpoints]
        total = sum(os.path.getsize(f) for f in files)
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        base_wall, _c, base_rss, _e = run_measured([sys.executable, "-c", "import weighttui.cli.main, numpy"
                                                    + (", torch" if args.format == "pt" else "")
                                                    + "\n" + WRAP, "-"])
        print(f"{len(files)} checkpoints x {args.params / 1e6:.0f}M params ({args.format}), {total / 1e9:.2f} GB, "
              f"largest tensor {largest / 1e6:.1f} MB; python + imports alone: {base_rss / 1e6:.0f} MB, "
              f"{base_wall:.2f} s; load average {os.getloadavg()[0]:.1f}")
        out = os.path.join(tmp, "run.wtui")
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            cmd = [sys.executable, "-c", WRAP, "weighttui.cli", "import", src, "--out", out]
            if mode == "no-values":
                cmd.append("--no-values")
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            cat_s = cat_time(files)
            wall, cpu, rss, _err = run_measured(cmd)
            cat_after = cat_time(files)
            cat_s = min(cat_s, cat_after)
            log = os.path.getsize(out)
            os.unlink(out)
            print(f"  {mode:9s}: cat {cat_s:.2f} s ({total / cat_s / 1e9:.2f} GB/s) | import {wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU ({total / wall / 1e9:.3f} GB/s) | import/cat throughput {cat_s / wall:.3f} | "
                  f"peak RSS {rss / 1e6:.0f} MB = {(rss - base_rss) / largest:.2f} x largest tensor + "
                  f"{base_rss / 1e6:.0f} MB | log {log / 1e9:.2f} GB | load {os.getloadavg()[0]:.1f}")
            if mode == "values" and args.copy:
                cp_s = copy_time(files, os.path.join(tmp, "copy"))
                print(f"  {'':9s}  cat > file + fsync (the log's bytes written, nothing computed): {cp_s:.2f} s "
                      f"({total / cp_s / 1e9:.2f} GB/s) | import/copy throughput {cp_s / wall:.3f}")


if __name__ == "__main__":
    main()
