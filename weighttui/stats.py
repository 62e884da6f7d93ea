"""The statistics and histograms of docs/FORMAT.md, in numpy.

This is the reference: every other backend (torch on the device, ...) is
tested against these functions. Everything is accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_STATS = ("mean", "std", "min", "max", "absmean", "norm", "zero_frac", "nan", "inf")
DELTA_STATS = ("norm", "ratio", "max_abs", "mean_abs", "changed_frac", "exact")
KINDS = ("weights", "delta", "grad")
DEFAULT_BINS = 64

_NAN = float("nan")


@dataclass
class Block:
    """One statistics block of a snapshot: rows follow the snapshot's ids.

    hist is (lo [T] f8, hi [T] f8, counts [T, B] u4) or None.
    """

    names: tuple[str, ...]
    stats: np.ndarray
    hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def to_payload(self, encode_array) -> dict:
        out = {"names": list(self.names), "stats": encode_array(self.stats), "hist": None}
        if self.hist is not None:
            lo, hi, counts = self.hist
            out["hist"] = {"lo": encode_array(lo), "hi": encode_array(hi), "counts": encode_array(counts)}
        return out


def as_float64(x) -> np.ndarray:
    """A flat float64 view or copy of any array-like (ints, bools, float16 ...)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot take statistics of dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False).reshape(-1)


def _finite_part(x64: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(finite elements, nan count, inf count); avoids a mask when all are finite."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is the signal, not a problem
        total = x64.sum()
    if np.isfinite(total):  # a float64 sum of finite values cannot overflow here
        return x64, 0, 0
    nan = int(np.count_nonzero(np.isnan(x64)))
    inf = int(np.count_nonzero(np.isinf(x64)))
    return x64[np.isfinite(x64)], nan, inf


def weight_stats(x) -> np.ndarray:
    """The 9 WEIGHT_STATS of one tensor, as float64."""
    x64 = as_float64(x)
    n = x64.size
    fin, nan, inf = _finite_part(x64)
    m = fin.size
    zero_frac = np.count_nonzero(x64 == 0) / n if n else _NAN
    if m == 0:
        return np.array([_NAN, _NAN, _NAN, _NAN, _NAN, 0.0, zero_frac, nan, inf])
    mean = fin.sum() / m
    centred = fin - mean
    var = np.einsum("i,i->", centred, centred) / m  # einsum: no BLAS threads
    absfin = np.abs(fin)
    sumsq = np.einsum("i,i->", fin, fin)
    return np.array([
        mean, np.sqrt(var), fin.min(), fin.max(), absfin.sum() / m,
        np.sqrt(sumsq), zero_frac, nan, inf,
    ])


def histogram(x, bins: int = DEFAULT_BINS) -> tuple[float, float, np.ndarray]:
    """(lo, hi, counts): B equal-width bins over [min, max] of the finite values.

    As numpy.histogram(x, bins, range=(lo, hi)) counts them; if lo == hi every
    finite value falls in bin B // 2; no finite values gives NaN bounds and zeros.
    """
    x64 = as_float64(x)
    fin, _nan, _inf = _finite_part(x64)
    counts = np.zeros(bins, dtype=np.uint32)
    if fin.size == 0:
        return _NAN, _NAN, counts
    lo, hi = float(fin.min()), float(fin.max())
    if lo == hi:
        counts[bins // 2] = fin.size
        return lo, hi, counts
    counts[:] = np.histogram(fin, bins=bins, range=(lo, hi))[0]
    return lo, hi, counts


def delta_stats(now, prev, *, exact: bool = True, total: int | None = None) -> np.ndarray:
    """The 6 DELTA_STATS of d = now - prev over the elements finite in both.

    With exact=False, `now` and `prev` are a tensor's sampled elements and
    `total` its full element count: norm is then scaled up to estimate the full
    tensor's, ratio is the sample's ratio, max_abs is a lower bound.
    """
    a, b = as_float64(now), as_float64(prev)
    if a.shape != b.shape:
        raise ValueError("delta of arrays with different shapes")
    n = a.size
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: excluded just below
        d = a - b
    both = np.isfinite(a) & np.isfinite(b)
    if not both.all():
        d, b = d[both], b[both]
    m = d.size
    if n == 0:
        return np.array([0.0, _NAN, _NAN, _NAN, _NAN, float(exact)])
    dnorm = np.sqrt(np.einsum("i,i->", d, d))
    pnorm = np.sqrt(np.einsum("i,i->", b, b))
    ratio = dnorm / pnorm if pnorm > 0 else (np.inf if dnorm > 0 else 0.0)
    max_abs = float(np.abs(d).max()) if m else _NAN
    mean_abs = float(np.abs(d).sum() / m) if m else _NAN
    changed = np.count_nonzero(d) / n
    if not exact and total:
        dnorm *= np.sqrt(total / n)
    return np.array([dnorm, ratio, max_abs, mean_abs, changed, float(exact)])


def weights_block(arrays, bins: int = DEFAULT_BINS, *, with_hist: bool = True) -> Block:
    """A WEIGHT_STATS block (stats + histograms) over a list of arrays."""
    t = len(arrays)
    stats = np.empty((t, len(WEIGHT_STATS)))
    lo = np.empty(t)
    hi = np.empty(t)
    counts = np.zeros((t, bins), dtype=np.uint32)
    for i, x in enumerate(arrays):
        stats[i] = weight_stats(x)
        if with_hist:
            lo[i], hi[i], counts[i] = histogram(x, bins)
    return Block(WEIGHT_STATS, stats, (lo, hi, counts) if with_hist else None)


def empty_block(names, t: int, bins: int | None) -> Block:
    """A block whose rows are all 'not covered': NaN stats, zero counts."""
    stats = np.full((t, len(names)), np.nan)
    hist = None
    if bins:
        hist = (np.full(t, np.nan), np.full(t, np.nan), np.zeros((t, bins), dtype=np.uint32))
    return Block(tuple(names), stats, hist)


def hist_percentiles(lo: float, hi: float, counts: np.ndarray, qs) -> np.ndarray:
    """Percentiles (0..100) estimated from one histogram by linear interpolation."""
    qs = np.asarray(qs, dtype=np.float64)
    total = counts.sum()
    if total == 0 or not np.isfinite(lo) or not np.isfinite(hi):
        return np.full(qs.shape, np.nan)
    if lo == hi:
        return np.full(qs.shape, lo)
    edges = np.linspace(lo, hi, counts.size + 1)
    cdf = np.concatenate(([0.0], np.cumsum(counts, dtype=np.float64) / total))
    return np.interp(qs / 100.0, cdf, edges)
