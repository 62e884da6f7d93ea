"""sigma_max when a matrix's top two singular values cross (a known limit, docs/instruments.md
"Known limit: a crossing of the top singular values"): a 512 x 256 matrix (above BLOCK_MAX, so one
kept vector) whose top singular value shrinks while the second grows past it, recorded one snapshot
per step by the numpy Recorder and by weighttui.torch (the fused CPU kernel), its sigma_max series
read back and compared with numpy.linalg.svd.

    python benchmarks/sigma_crossing.py          # a few seconds

Prints, per path, the worst relative error, how many snapshots were off by more than 1e-3, and
the first and last of them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import weighttui

STEPS = 60


def matrices(m: int = 512, n: int = 256, seed: int = 1) -> list[np.ndarray]:
    """STEPS matrices: sigma_1 = 3 - 0.05 t, sigma_2 = 2 + 0.05 t (they cross at t = 10), the rest
    1 ... 0.1, fixed singular vectors, a little noise as a training step gives."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    out = []
    for t in range(STEPS):
        s = np.linspace(1.0, 0.1, n)
        s[0], s[1] = 3.0 - 0.05 * t, 2.0 + 0.05 * t
        w = (u * s) @ v.T + rng.standard_normal((m, n)) * 1e-3
        out.append(w.astype(np.float32))
    return out


def numpy_path(ws, path: str) -> None:
    with weighttui.Recorder(path, every=1, instruments=["sigma"]) as rec:
        for t, w in enumerate(ws):
            rec.snapshot(t, {"w": w})


def torch_path(ws, path: str) -> None:
    import torch

    import weighttui.torch as wt

    layer = torch.nn.Linear(ws[0].shape[1], ws[0].shape[0], bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)
    handle = wt.watch(layer, path, optimizer=opt, every=1, instruments=["sigma"])
    try:
        for w in ws:
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(w))
            opt.step()  # (the snapshot is taken after the optimizer's step)
    finally:
        handle.close()


def report(label: str, path: str, ws) -> None:
    run = weighttui.open(path, cache=False)
    name = run.tensor_names[0]
    steps, got = run.series(name, "sigma_max")
    steps, got = steps[-len(ws):], got[-len(ws):]  # (weighttui.torch also snapshots the layer's initial values)
    true = np.array([np.linalg.svd(w.astype(np.float64), compute_uv=False)[0] for w in ws])
    rel = np.abs(got - true) / true
    bad = np.flatnonzero(rel > 1e-3)
    span = f"steps {int(steps[bad[0]])}-{int(steps[bad[-1]])}" if bad.size else "none"
    print(f"{label:<28} snapshots {got.size:>3}  worst {np.nanmax(rel):.2e}  off by > 1e-3: {bad.size:>2} ({span})")


def main() -> int:
    ws = matrices()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [("numpy Recorder", numpy_path)]
        try:
            import torch  # noqa: F401

            paths.append(("weighttui.torch (fused CPU)", torch_path))
        except ImportError:
            print("(torch is not installed: its path is left out)")
        for label, record in paths:
            path = os.path.join(tmp, label.split()[0] + ".wtui")
            record(ws, path)
            report(label, path, ws)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
