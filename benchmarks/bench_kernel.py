"""The fused kernel alone (weighttui._fastats.snapshot), per element, side by side for two builds.

Times one call of the kernel on the ResNet-50 parameter shapes (161 float32 tensors, 25.6M
values): values and exact deltas with 64-bin histograms and the copy into the previous copy
(restored, untimed, before every call so that each call sees a real update), without and with
every kernel.Extras part (x0, two optimizer states, units, v, vd, idx). CPU time of this process
(one thread), median of interleaved rounds, as a multiple of one np.sum read pass.

    python benchmarks/bench_kernel.py                       # this checkout's build
    python benchmarks/bench_kernel.py --other OLD.so        # and another build of _fastats, side by side
    python benchmarks/bench_kernel.py --quick               # fewer rounds
    python benchmarks/bench_kernel.py --import-shapes       # one checkpoint of bench_import's model

--import-shapes: the tensors of one checkpoint of bench_import.py's 100M-parameter model (a
33M-value embedding and 12 of 5.5M: 400 MB, far past the caches) and a previous copy, without
the copy (as `weighttui import` calls the kernel): values and values + delta only, with the
bytes the two passes read per second. The header says which variant of the hot loops each
build runs (ISA: avx512f, avx2 or baseline).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import import shapes as import_shapes
from shapes import resnet50_shapes

from weighttui.record import instruments as inst
from weighttui.record import kernel


def load(path: str, tag: str):
    """Another build of the extension, under its own module name."""
    loader = importlib.machinery.ExtensionFileLoader(f"{tag}._fastats", path)
    spec = importlib.util.spec_from_file_location(f"{tag}._fastats", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", action="append", default=[], help="path of another _fastats build (repeatable)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated subset of the cases")
    ap.add_argument("--mlp", action="store_true", help="bench_keras's MLP shapes (3.6M values, cache-resident)")
    ap.add_argument("--import-shapes", action="store_true",
                    help="one checkpoint of bench_import's 100M model (400 MB), no copy, as the import calls it")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds
    builds: dict[str, Any] = {"this": kernel._fastats}
    for k, p in enumerate(args.other):
        builds[f"other{k}:{Path(p).name}"] = load(p, f"_wtk_other{k}")
    rng = np.random.default_rng(0)
    shapes = ([(784, 1536), (1536,), (1536, 1536), (1536,), (1536, 10), (10,)] if args.mlp
              else import_shapes(int(100e6)) if args.import_shapes else resnet50_shapes())
    copy = not args.import_shapes
    xs = [(0.05 * rng.standard_normal(int(np.prod(s)), dtype=np.float32)) for s in shapes]
    prevs0 = [(x - 1e-3 * rng.standard_normal(x.size, dtype=np.float32)).astype(np.float32) for x in xs]
    prevs = [p.copy() for p in prevs0]
    x0s = [(x + 1e-2 * rng.standard_normal(x.size, dtype=np.float32)).astype(np.float32) for x in xs]
    m1 = [1e-4 * rng.standard_normal(x.size, dtype=np.float32) for x in xs]
    m2 = [1e-8 * rng.random(x.size, dtype=np.float32) for x in xs]
    mns = [inst.matrix_shape(tuple(s)) for s in shapes]
    vec = [None if mn is None else rng.random(mn[1]) for mn in mns]
    idx = [np.arange(x.size) if x.size <= inst.DEFAULT_COS_SAMPLE
           else inst.sample_index(str(i), x.size, inst.DEFAULT_COS_SAMPLE) for i, x in enumerate(xs)]
    total = sum(x.size for x in xs)
    codes = bytes([kernel.F32] * len(xs))
    bins = 64

    def extras(part):
        out = []
        for i in range(len(xs)):
            mn, kw = mns[i], {}
            if part in ("x0", "all", "x0+states"):
                kw["x0"] = x0s[i]
            if part in ("states", "all", "x0+states"):
                kw["states"] = (m1[i], m2[i])
            if mn is not None and part in ("units", "all"):
                kw.update(rows=mn[0], units=True)
            if mn is not None and part in ("v", "all"):
                kw.update(rows=mn[0], v=vec[i])
            if mn is not None and part in ("vd", "all"):
                kw.update(rows=mn[0], vd=vec[i])
            if part in ("idx", "all"):
                kw["idx"] = idx[i]
            out.append(kernel.Extras(**kw))
        return out

    cases = ["values only", "values + delta", "x0", "states", "x0+states", "units", "v", "vd", "idx", "all"]
    if args.import_shapes:
        cases = cases[:2]
    if args.only:
        cases = [c for c in cases if c in args.only.split(",")]
    res: dict[tuple[str, str], list[float]] = {}
    base = []
    for _ in range(rounds):
        c0 = time.process_time()
        for x in xs:
            x.sum()
        base.append(time.process_time() - c0)
        for case in cases:
            for bname, mod in builds.items():
                ex = None if case in ("values only", "values + delta") else extras(case)
                pv = [None] * len(xs) if case == "values only" else prevs
                for p, q in zip(prevs, prevs0, strict=True):
                    p[:] = q
                a = [list(xs), list(pv), codes, bins, np.empty((len(xs), 12 + bins)),
                     np.empty((len(xs), 12 + bins)), copy, 1]
                if ex is not None:
                    a.append([e._arg(x.size) for e, x in zip(ex, xs, strict=True)])
                c0 = time.process_time()
                mod.snapshot(*a)
                res.setdefault((case, bname), []).append(time.process_time() - c0)
    b = statistics.median(base)
    which = "MLP" if args.mlp else "bench_import checkpoint" if args.import_shapes else "ResNet-50"
    print(f"# fused kernel, {which} shapes ({len(xs)} tensors, {total / 1e6:.1f}M float32), 64 bins, "
          f"{'with' if copy else 'without'} the copy, CPU ms, median of {rounds}; np.sum pass {b * 1e3:.2f} ms "
          f"({total * 4 / b / 1e9:.1f} GB/s); load {os.getloadavg()}")
    print("# ISA: " + ", ".join(f"{n} {getattr(m, 'ISA', '?')}" for n, m in builds.items()))
    names = list(builds)
    print(f"{'case':<16}" + "".join(f"{n[:22]:>24}" for n in names) + "   (ms, x np.sum)")
    for case in cases:
        cells = []
        for n in names:
            t = statistics.median(res[(case, n)])
            cells.append(f"{t * 1e3:9.1f} {t / b:6.1f}x".rjust(24))
        # bytes read: each pass reads x (and prev), pass B writes prev with the copy
        streams = (1 if case == "values only" else 2) * 2 + (1 if copy and case != "values only" else 0)
        rates = "  " + " ".join(f"{total * 4 * streams / statistics.median(res[(case, n)]) / 1e9:.1f}"
                                for n in names) + " GB/s"
        print(f"{case:<16}" + "".join(cells) + (rates if args.import_shapes else ""))


if __name__ == "__main__":
    main()
