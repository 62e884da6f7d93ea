"""The statistics of docs/FORMAT.md with TensorFlow ops, where the variables live.

One tf.function computes, for every recorded tensor at once, the weight
statistics, histograms, exact update (delta) statistics against the previous
snapshot's values (kept as immutable TF tensors, no host copy) and the
sampled elements; the results come to the host as a few small arrays.

Everything is computed in float64 with the same operations, in the same
order where it matters, as weighttui.record.stats (the reference): histogram bin
indices follow numpy.histogram's formula and edge correction, so counts match
it exactly; sums may differ from numpy's pairwise sums in the last bits.

On CPU this is far slower than host views + the fused C kernel (30x to 50x,
benchmarks/bench_keras.py, docs/keras.md): every masked float64 op is a full
pass over memory. WeightCallback uses it for variables on a GPU/TPU,
where those passes are cheap and the host copy is not (not measured here:
no GPU was available), or when asked with stats="device".

The instruments (docs/instruments.md) are record/device_instruments.py's, with
the TF ops of TFArrays (TFInstruments); the gradients this path reads are the
host copies its gradient block is computed from.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from weighttui.record.device_instruments import ArrayInstruments, locator
from weighttui.record.stats import DELTA_STATS, WEIGHT_STATS, Block

_F64 = tf.float64


class TFArrays:
    """The array module record/device_instruments.py computes the instruments with, in TF ops
    (on the tensors' device): numpy's names for what that module uses."""

    float32, float64, int32 = tf.float32, tf.float64, tf.int32
    linalg = type("linalg", (), {
        "qr": staticmethod(lambda a: tf.linalg.qr(a)),  # reduced, as numpy's
        "eigh": staticmethod(tf.linalg.eigh),
        "svdvals": staticmethod(lambda a: tf.linalg.svd(a, compute_uv=False)),
    })
    matmul = staticmethod(tf.linalg.matmul)
    transpose = staticmethod(tf.transpose)
    reshape = staticmethod(tf.reshape)
    take = staticmethod(tf.gather)
    sqrt = staticmethod(tf.sqrt)
    where = staticmethod(tf.where)
    isfinite = staticmethod(tf.math.is_finite)
    logical_not = staticmethod(tf.logical_not)
    zeros_like = staticmethod(tf.zeros_like)
    stack = staticmethod(tf.stack)

    abs = staticmethod(tf.abs)
    ones_like = staticmethod(tf.ones_like)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        return tf.reduce_sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(a, axis=None, keepdims=False, initial=None):
        out = tf.reduce_max(a, axis=axis, keepdims=keepdims)  # (-inf over nothing)
        return out if initial is None else tf.maximum(out, tf.cast(initial, out.dtype))

    @staticmethod
    def astype(a, dtype):
        return tf.cast(a, dtype)

    @staticmethod
    def asarray(a, dtype=None):
        return tf.convert_to_tensor(a, dtype=dtype)

    @staticmethod
    def concatenate(parts):
        return tf.concat(parts, 0)


def _hist(x, mask, lo, hi, bins: int):
    """Counts of x[mask] in `bins` bins over [lo, hi], as numpy.histogram counts them."""
    ok = hi > lo
    lo = tf.where(ok, lo, tf.zeros_like(lo))
    hi = tf.where(ok, hi, tf.ones_like(hi))  # lo == hi is patched on the host
    nb = tf.cast(bins, _F64)
    xs = tf.where(mask, x, lo)
    idx = tf.cast(tf.floor((xs - lo) / (hi - lo) * nb), tf.int32)  # numpy's formula and order
    idx = tf.clip_by_value(idx, 0, bins - 1)
    # numpy's correction for values that rounding put one bin off; its edges
    # are linspace(lo, hi, bins + 1): i * ((hi - lo) / bins) + lo, the last one hi
    step = (hi - lo) / nb

    def edge(i):
        return tf.where(i >= bins, hi, tf.cast(i, _F64) * step + lo)

    idx = idx - tf.cast(xs < edge(idx), tf.int32)
    idx = idx + tf.cast((xs >= edge(idx + 1)) & (idx != bins - 1), tf.int32)
    return tf.math.unsorted_segment_sum(tf.cast(mask, tf.int32), idx, bins)


def _moments(x, mask):
    """[mean, std, min, max, absmean, norm, zero_frac, nan, inf, finite count] of one tensor."""
    n = tf.cast(tf.size(x), _F64)
    m = tf.reduce_sum(tf.cast(mask, _F64))
    xf = tf.where(mask, x, tf.zeros_like(x))
    mean = tf.reduce_sum(xf) / m
    c = tf.where(mask, x - mean, tf.zeros_like(x))
    inf = tf.constant(np.inf, _F64)
    return tf.stack([
        mean,
        tf.sqrt(tf.reduce_sum(c * c) / m),
        tf.reduce_min(tf.where(mask, x, inf)),
        tf.reduce_max(tf.where(mask, x, -inf)),
        tf.reduce_sum(tf.abs(xf)) / m,
        tf.sqrt(tf.reduce_sum(xf * xf)),
        tf.reduce_sum(tf.cast(tf.equal(x, 0), _F64)) / n,
        tf.reduce_sum(tf.cast(tf.math.is_nan(x), _F64)),
        tf.reduce_sum(tf.cast(tf.math.is_inf(x), _F64)),
        m,
    ])


def _delta(x, p):
    """[norm, ratio, max_abs, mean_abs, changed_frac, finite-in-both count] and the mask."""
    n = tf.cast(tf.size(x), _F64)
    both = tf.math.is_finite(x) & tf.math.is_finite(p)
    zero = tf.zeros_like(x)
    d = tf.where(both, x - p, zero)
    pb = tf.where(both, p, zero)
    m = tf.reduce_sum(tf.cast(both, _F64))
    dnorm = tf.sqrt(tf.reduce_sum(d * d))
    pnorm = tf.sqrt(tf.reduce_sum(pb * pb))
    ad = tf.abs(d)
    row = tf.stack([dnorm, pnorm, tf.reduce_max(ad), tf.reduce_sum(ad) / m,
                    tf.reduce_sum(tf.cast(tf.not_equal(d, 0), _F64)) / n, m])
    return row, d, both


class TFInstruments:
    """The instruments of WeightCallback's TF-ops path (record/device_instruments.py in TF ops):
    start() before the statistics, finish() after them; the parts come to the host in one copy."""

    def __init__(self, recorder):
        self.rec = recorder
        self.ins = ArrayInstruments.like(recorder.instruments, TFArrays)

    def __bool__(self) -> bool:
        return bool(self.ins)

    def start(self, infos, values, prevs: dict, grads: dict | None, optim: dict | None):
        return self.ins.start(infos, values, prevs, grads, optim)

    def finish(self, step, pend, infos, values, grads, optim, weights, delta, grad):
        names = [i.name for i in infos]
        flat = None if pend.flat is None else pend.flat.numpy()  # the instruments' one transfer
        return self.ins.finish(step, pend, flat, infos, weights, delta, grad, origin=self.rec.origin_frames,
                               locate=locator(values, names, grads, optim, np.asarray))


class TFStats:
    """Weights and exact-delta blocks for a fixed list of tensors, on their device."""

    def __init__(self, bins: int, sample_indices, delta: bool):
        self.bins = int(bins)
        self.delta = bool(delta)
        self._samples = [None if s is None else tf.constant(np.asarray(s, dtype=np.int64))
                         for s in sample_indices]
        self._fn = tf.function(self._compute, reduce_retracing=True)  # XLA measured slower on CPU

    def _compute(self, values, prevs):
        bins = self.bins
        rows, hists, drows, dhists, samples = [], [], [], [], []
        for i, v in enumerate(values):
            x = tf.reshape(tf.cast(v, _F64), [-1])
            mask = tf.math.is_finite(x)
            row = _moments(x, mask)
            rows.append(row)
            hists.append(_hist(x, mask, row[2], row[3], bins))
            if self._samples[i] is not None:
                samples.append(tf.cast(tf.gather(tf.reshape(v, [-1]), self._samples[i]), tf.float32))
            if self.delta:
                p = tf.reshape(tf.cast(prevs[i], _F64), [-1])
                drow, d, both = _delta(x, p)
                inf = tf.constant(np.inf, _F64)
                dlo = tf.reduce_min(tf.where(both, d, inf))
                dhi = tf.reduce_max(tf.where(both, d, -inf))
                drows.append(tf.concat([drow, tf.stack([dlo, dhi])], 0))
                dhists.append(_hist(d, both, dlo, dhi, bins))
        out = {"stats": tf.stack(rows), "hist": tf.stack(hists)}
        if samples:
            out["sample"] = tf.concat(samples, 0)
        if self.delta:
            out["delta"] = tf.stack(drows)
            out["dhist"] = tf.stack(dhists)
        return out

    def __call__(self, values, prevs, has_prev):
        """(weights Block, delta Block or None, sample float32 array or None).

        values: the tensors now; prevs: the tensors at the previous snapshot
        (any tensor of the same shape where has_prev[i] is False).
        """
        out = {k: t.numpy() for k, t in self._fn(list(values), list(prevs) if self.delta else []).items()}
        weights = _weights_block(out["stats"], out["hist"], self.bins)
        delta = _delta_block(out["delta"], out["dhist"], has_prev, self.bins) if self.delta else None
        return weights, delta, out.get("sample")


def _fix_hist(lo, hi, counts, finite, bins):
    """FORMAT.md's cases numpy.histogram does not cover: lo == hi, nothing finite."""
    flat = lo == hi
    counts[flat] = 0
    counts[flat, bins // 2] = finite[flat]
    none = finite == 0
    lo[none], hi[none] = np.nan, np.nan
    counts[none] = 0


def _weights_block(stats, hist, bins) -> Block:
    s = np.array(stats[:, :9], dtype=np.float64)
    finite = stats[:, 9].astype(np.int64)
    none = finite == 0
    s[none, 0:5] = np.nan  # mean std min max absmean of no finite values
    lo, hi = s[:, 2].copy(), s[:, 3].copy()
    counts = hist.astype(np.uint32)
    _fix_hist(lo, hi, counts, finite, bins)
    return Block(WEIGHT_STATS, s, (lo, hi, counts))


def _delta_block(drows, dhist, has_prev, bins) -> Block:
    t = drows.shape[0]
    dnorm, pnorm, max_abs, mean_abs, changed, finite, lo, hi = (drows[:, j].copy() for j in range(8))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pnorm > 0, dnorm / np.where(pnorm > 0, pnorm, 1.0), np.where(dnorm > 0, np.inf, 0.0))
    none = finite == 0
    max_abs[none] = np.nan
    mean_abs[none] = np.nan
    stats = np.stack([dnorm, ratio, max_abs, mean_abs, changed, np.ones(t)], axis=1)
    counts = dhist.astype(np.uint32)
    _fix_hist(lo, hi, counts, finite.astype(np.int64), bins)
    missing = ~np.asarray(has_prev, dtype=bool)
    stats[missing] = np.nan
    lo[missing], hi[missing] = np.nan, np.nan
    counts[missing] = 0
    return Block(DELTA_STATS, stats, (lo, hi, counts))
