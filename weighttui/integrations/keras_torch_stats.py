"""WeightCallback on the Keras torch backend with variables on an accelerator (CUDA ...):
statistics on the variables' device, the PyTorch integration's way.

Raw rows come from torch_rows' RowRouter (torch_stats' device ops; the fused
kernel for CPU tensors it takes), previous values are device copies, and one
host copy per snapshot brings the rows and sampled elements over
(torch_host.to_host): the weights, deltas and gradients never leave the
device. `WeightCallback(stats="device")` forces this path for CPU variables
too, with torch's ops instead of the kernel (how it is tested without a GPU).

The instruments (docs/instruments.md) are not computed on this path.
"""

from __future__ import annotations

import numpy as np
import torch

from weighttui.integrations import torch_host
from weighttui.integrations.torch_rows import RowRouter
from weighttui.integrations.torch_stats import (
    DeviceStats,
    exact_delta_rows,
    hist_parts,
    remember_sumsq,
    weight_rows,
)
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS, Block


class TorchStats:
    """Weights, exact-delta and gradient blocks of torch tensors on their device."""

    def __init__(self, bins: int, *, delta: bool, cpu_kernel: str = "fused"):
        self.bins = int(bins)
        self.delta = bool(delta)
        self.router = RowRouter(DeviceStats(self.bins), cpu_kernel=cpu_kernel, sharded=False)
        self._prev: dict[str, torch.Tensor] = {}  # name -> the values at the previous snapshot (device copy)
        self._prev_sumsq: dict[str, float] = {}  # name -> sum of their squares (from that snapshot's rows)
        self._index: dict[tuple, torch.Tensor] = {}  # (name, device) -> sample indices there

    def __call__(self, infos, xs: list, grads: list | None):
        """(weights Block, delta Block or None, grad Block or None, samples float64 or None).

        xs: the tensors now (detached), in infos order; grads: None or per row a tensor or None."""
        t, bins = len(xs), self.bins
        names = [i.name for i in infos]
        prevs = [self._prev.get(n) if self.delta else None for n in names]
        prevs = [p if p is not None and p.shape == x.shape and p.dtype == x.dtype and p.device == x.device else None
                 for p, x in zip(prevs, xs, strict=True)]
        g_at = [] if grads is None else [i for i, g in enumerate(grads) if g is not None]
        gs = [grads[i].detach() for i in g_at]  # type: ignore[index]
        w, d, copied = self.router.rows(xs + gs, prevs + [None] * len(gs))
        samples = self._samples(infos, xs)
        parts = [p for r in (w, d) if r is not None for p, _ in r.parts]
        host = torch_host.to_host(parts + ([samples] if samples is not None else []))  # the one copy
        k = w.fill(host, 0)
        if d is not None:
            k = d.fill(host, k)
        sample = host[k] if samples is not None else None
        self.router.redo(w)  # the rare masked pass: NaN/Inf
        if d is not None:
            self.router.redo(d)
        raw_w = w.raw[:t]
        weights = Block(WEIGHT_STATS, weight_rows(raw_w), hist_parts(raw_w, bins))
        grad = None
        if g_at:
            raw_g = w.raw[t:]
            stats = np.full((t, len(WEIGHT_STATS)), np.nan)
            lo, hi = np.full(t, np.nan), np.full(t, np.nan)
            counts = np.zeros((t, bins), dtype=np.uint32)
            stats[g_at] = weight_rows(raw_g)
            lo[g_at], hi[g_at], counts[g_at] = hist_parts(raw_g, bins)
            grad = Block(WEIGHT_STATS, stats, (lo, hi, counts))
        delta = self._delta_block(names, prevs, d.raw if d is not None else None) if self.delta else None
        self._keep(names, xs, raw_w, set(copied))
        return weights, delta, grad, sample

    def _samples(self, infos, xs) -> torch.Tensor | None:
        parts = []
        for info, x in zip(infos, xs, strict=True):
            if info.sample_index is None:
                continue
            key = (info.name, x.device)
            idx = self._index.get(key)
            if idx is None or idx.numel() != info.sample_index.size:
                idx = self._index[key] = torch.as_tensor(info.sample_index, device=x.device)
            parts.append(torch.index_select(x.reshape(-1), 0, idx).to(torch.float64))
        if not parts:
            return None
        dev = parts[0].device
        return torch.cat([p.to(dev) for p in parts])

    def _delta_block(self, names, prevs, raw_d) -> Block:
        """Rows of the tensors with a previous copy; the others 'not covered'. The fast path does
        not measure sum(prev^2): the previous snapshot's rows gave it (as watch() does)."""
        t, bins = len(names), self.bins
        stats = np.full((t, len(DELTA_STATS)), np.nan)
        lo, hi = np.full(t, np.nan), np.full(t, np.nan)
        counts = np.zeros((t, bins), dtype=np.uint32)
        at = [i for i, p in enumerate(prevs) if p is not None]
        if at and raw_d is not None:
            known = np.array([self._prev_sumsq.get(names[i], np.nan) for i in at])
            stats[at] = exact_delta_rows(raw_d, known)
            lo[at], hi[at], counts[at] = hist_parts(raw_d, bins)
        return Block(DELTA_STATS, stats, (lo, hi, counts))

    def _keep(self, names, xs, raw_w, copied: set) -> None:
        """What the next snapshot's deltas compare against (the kernel copied some already)."""
        if not self.delta:
            return
        remember_sumsq(self._prev_sumsq, names, raw_w)
        to, frm = [], []
        for i, (name, x) in enumerate(zip(names, xs, strict=True)):
            if i in copied:
                continue
            prev = self._prev.get(name)
            if prev is None or prev.shape != x.shape or prev.dtype != x.dtype or prev.device != x.device:
                self._prev[name] = x.detach().clone()
            else:
                to.append(prev)
                frm.append(x)
        if to:
            with torch.no_grad():
                torch._foreach_copy_(to, frm)
