"""FORMAT.md statistics of jax.Arrays on their device, with one host transfer per snapshot.

For parameters on an accelerator: one jitted function computes, for every
leaf, the raw row (record/raw_rows.py: n, m, lo, hi, c, s1, s2, asum, zeros,
nan, inf, psq | histogram counts) of the values and of the exact update
against the previous snapshot's leaves (jax.Arrays are immutable: holding the
previous pytree's leaves is the previous copy, no copy is made), plus the
sampled elements; the rows come to the host in one jax.device_get and are
finished by raw_rows like every other engine's. The gradients' rows and the
instruments' parts (record/device_instruments.py, computed with jnp on the same
device) join that one transfer.

Everything is computed in float64 (inside jax.enable_x64, whatever the
program's setting) with numpy's formulas: histogram bins are numpy.histogram's
(the index ((x - lo) / (hi - lo)) * B, then its correction against the edges
k * ((hi - lo) / B) + lo), over the finite elements; the mean is taken first
and the sums are shifted by it. On the CPU the fused C kernel is faster
(integrations/jax.py uses it there); this path is forced with stats="device"
(how the tests run it on a CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weighttui.record.raw_rows import _PSQ, N_RAW, delta_rows, hist_parts, weight_rows
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS, Block, empty_block


def _hist(v, ok, lo, hi, bins: int):
    """numpy.histogram counts of v[ok] over [lo, hi]; lo == hi: all in bin B // 2."""
    same = hi <= lo
    span = jnp.where(same, 1.0, hi - lo)
    vs = jnp.where(ok, v, lo)
    idx = jnp.floor(((vs - lo) / span) * bins).astype(jnp.int32)  # numpy's formula and order
    idx = jnp.clip(idx, 0, bins - 1)
    step = span / bins

    def edge(i):
        return jnp.where(i >= bins, hi, i.astype(jnp.float64) * step + lo)

    idx = idx - (vs < edge(idx)).astype(jnp.int32)
    idx = idx + ((vs >= edge(idx + 1)) & (idx != bins - 1)).astype(jnp.int32)
    idx = jnp.where(same, bins // 2, jnp.clip(idx, 0, bins - 1))
    return jnp.zeros(bins, jnp.float64).at[idx].add(ok.astype(jnp.float64))


def _raw(x, prev, bins: int):
    """The raw row [N_RAW + bins] of x (prev None) or of d = x - prev."""
    v = x.astype(jnp.float64).reshape(-1)
    n = jnp.float64(v.size)
    if prev is None:
        ok = jnp.isfinite(v)
        nan = jnp.sum(jnp.isnan(v)).astype(jnp.float64)
        inf = jnp.sum(jnp.isinf(v)).astype(jnp.float64)
        zeros = jnp.sum(v == 0).astype(jnp.float64)
        p2 = jnp.float64(0.0)
    else:
        p = prev.astype(jnp.float64).reshape(-1)
        ok = jnp.isfinite(v) & jnp.isfinite(p)
        v = jnp.where(ok, v - p, 0.0)
        nan = inf = jnp.float64(0.0)
        zeros = jnp.sum(ok & (v == 0)).astype(jnp.float64)
        p2 = jnp.sum(jnp.where(ok, p * p, 0.0))
    m = jnp.sum(ok).astype(jnp.float64)
    fin = jnp.where(ok, v, 0.0)
    lo = jnp.min(jnp.where(ok, v, jnp.inf), initial=jnp.inf)  # initial: a zero-size leaf has no min
    hi = jnp.max(jnp.where(ok, v, -jnp.inf), initial=-jnp.inf)
    c = jnp.where(m > 0, jnp.sum(fin) / jnp.maximum(m, 1.0), 0.0) if prev is None else jnp.float64(0.0)
    t = jnp.where(ok, v - c, 0.0)
    s1 = jnp.sum(t)
    s2 = jnp.sum(t * t)
    asum = jnp.sum(jnp.abs(fin))
    counts = _hist(v, ok, lo, hi, bins)
    head = jnp.stack([n, m, lo, hi, c, s1, s2, asum, zeros, nan, inf, p2])
    return jnp.concatenate([head, counts])


def _rows(xs, prevs, samples, prev_at: tuple, bins: int):
    """Raw rows of every leaf, of the deltas xs[prev_at[j]] - prevs[j], and the sampled elements."""
    raw_w = jnp.stack([_raw(x, None, bins) for x in xs])
    raw_d = jnp.stack([_raw(xs[i], p, bins) for i, p in zip(prev_at, prevs, strict=True)]) if prevs else None
    picked = [x.reshape(-1)[jnp.asarray(i)].astype(jnp.float32) for x, i in zip(xs, samples, strict=True)
              if i is not None]
    sample = jnp.concatenate(picked) if picked else None
    return raw_w, raw_d, sample


_jitted = jax.jit(_rows, static_argnames=("prev_at", "bins"))


class DeviceStats:
    """Weights, delta and gradient blocks of jax.Arrays, computed where they live.

    Keeps the previous snapshot's leaves (by tensor id) for the exact deltas.
    """

    def __init__(self, bins: int, reporter=None):
        self.bins = int(bins)
        self._prev: dict[int, jax.Array] = {}
        # jax.Arrays are immutable, so the previous leaves are held, not copied, until a training
        # step donates them (jit donate_argnums deletes their buffers): then copies from that on
        self.copy = False
        self.reporter = reporter

    def previous(self, infos, leaves, *, delta: bool) -> dict[int, jax.Array]:
        """row -> the previous snapshot's leaf, where the exact delta has one (same shape)."""
        gone = [k for k, leaf in self._prev.items() if leaf.is_deleted()]
        if gone:
            for k in gone:
                del self._prev[k]
            if not self.copy and self.reporter is not None:
                self.reporter.once("jax-donated", "weighttui: the parameters' buffers were donated (jit "
                                   "donate_argnums): their exact updates start again at the next snapshot, from "
                                   "copies weighttui keeps from now on")
            self.copy = True
        return {i: self._prev[info.id] for i, info in enumerate(infos) if delta and info.id in self._prev
                and self._prev[info.id].shape == leaves[i].shape}

    def __call__(self, infos, leaves, *, delta: bool, names=None, grads: dict | None = None, extra=None):
        """(weights Block, delta Block or None, gradient Block or None, samples float32 or None,
        host copy of `extra` or None) of one snapshot, in one device-to-host transfer.

        grads: name -> jax.Array, for the rows of `names`; extra: a device array that joins
        the transfer (the instruments' parts, record/device_instruments.py)."""
        with_prev = sorted(self.previous(infos, leaves, delta=delta))
        samples = tuple(None if info.sample_index is None else np.asarray(info.sample_index) for info in infos)
        prevs = tuple(self._prev[infos[i].id] for i in with_prev)
        grows = [(i, grads[n]) for i, n in enumerate(names or ()) if grads and n in grads]
        with jax.enable_x64(True):
            out = _jitted(tuple(leaves), prevs, samples, prev_at=tuple(with_prev), bins=self.bins)
            gout = _jitted(tuple(g for _i, g in grows), (), tuple(None for _ in grows), prev_at=(),
                           bins=self.bins)[0] if grows else None
            raw_w, raw_d, sample, raw_g, extra_h = jax.device_get((*out, gout, extra))  # the one transfer
        weights = _block(WEIGHT_STATS, np.asarray(raw_w), self.bins)
        block = None
        if delta:
            block = empty_block(DELTA_STATS, len(infos), self.bins)
            if with_prev:
                rd = np.asarray(raw_d)
                at = np.asarray(with_prev)
                block.stats[at] = delta_rows(rd, rd[:, _PSQ])
                lo, hi, counts = hist_parts(rd, self.bins)
                assert block.hist is not None
                block.hist[0][at], block.hist[1][at], block.hist[2][at] = lo, hi, counts
            for info, leaf in zip(infos, leaves, strict=True):
                # immutable: the reference is the copy (unless buffers are donated)
                self._prev[info.id] = jnp.array(leaf, copy=True) if self.copy else leaf
        grad = None
        if grows:
            sub = _block(WEIGHT_STATS, np.asarray(raw_g), self.bins)
            grad = empty_block(WEIGHT_STATS, len(infos), self.bins)
            at = np.asarray([i for i, _g in grows])
            grad.stats[at] = sub.stats
            assert grad.hist is not None and sub.hist is not None
            for part, src in zip(grad.hist, sub.hist, strict=True):
                part[at] = src
        sample = None if sample is None else np.asarray(sample, dtype=np.float32)
        return weights, block, grad, sample, None if extra_h is None else np.asarray(extra_h)


def _block(names, raw: np.ndarray, bins: int) -> Block:
    assert raw.shape[1] == N_RAW + bins
    return Block(tuple(names), weight_rows(raw), hist_parts(raw, bins))
