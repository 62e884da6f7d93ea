"""The statistics and histograms of docs/FORMAT.md, in numpy.

This is the reference: every other backend (torch on the device, ...) is
tested against these functions. Everything is accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Re-exported: the statistics' names are part of what this module computes.
from weighttui.log.schema import DELTA_STATS as DELTA_STATS
from weighttui.log.schema import KINDS as KINDS
from weighttui.log.schema import WEIGHT_STATS as WEIGHT_STATS

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


# Large tensors are walked in chunks that fit in cache, converted to float64 one
# chunk at a time: a whole-tensor float64 copy cost more in page faults than in
# arithmetic (measured: 31 ms -> see docs/core.md for 4M float32 values).
CHUNK = 1 << 17


def _flat_source(x) -> np.ndarray:
    """A flat view of x in a dtype the chunked paths read exactly (float32/float64/ints)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot take statistics of dtype {arr.dtype}")
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)  # float16 -> float32 is exact
    return arr.reshape(-1)


def _chunked_weight_stats(a: np.ndarray, total: float) -> np.ndarray:
    """WEIGHT_STATS of an all-finite flat array whose float64 sum is `total`."""
    n = a.size
    mean = total / n
    buf = np.empty(min(n, CHUNK))
    tmp = np.empty_like(buf)
    sumsq = abssum = centred = 0.0
    for start in range(0, n, CHUNK):
        chunk = a[start:start + CHUNK]
        b = buf[: chunk.size]
        np.copyto(b, chunk, casting="unsafe")  # exact: float32 and ints < 2**53 fit float64
        sumsq += np.einsum("i,i->", b, b)  # einsum: no BLAS threads
        abssum += np.abs(b, out=tmp[: b.size]).sum()
        b -= mean
        centred += np.einsum("i,i->", b, b)
    zeros = n - np.count_nonzero(a)
    return np.array([mean, np.sqrt(centred / n), float(a.min()), float(a.max()), abssum / n,
                     np.sqrt(sumsq), zeros / n, 0.0, 0.0])


def weight_stats(x) -> np.ndarray:
    """The 9 WEIGHT_STATS of one tensor, as float64."""
    a = _flat_source(x)
    if a.size > CHUNK:
        total = a.sum(dtype=np.float64)
        if np.isfinite(total):  # no NaN/Inf (and no overflow): the fast path
            return _chunked_weight_stats(a, float(total))
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
    a = _flat_source(x)
    counts = np.zeros(bins, dtype=np.uint32)
    if a.size > CHUNK and np.isfinite(a.sum(dtype=np.float64)):
        fin = a  # all finite: no masked copy
    else:
        fin, _nan, _inf = _finite_part(as_float64(a))
    if fin.size == 0:
        return _NAN, _NAN, counts
    lo, hi = float(fin.min()), float(fin.max())
    if lo == hi:
        counts[bins // 2] = fin.size
        return lo, hi, counts
    counts[:] = histogram_counts(fin, bins, lo, hi)
    return lo, hi, counts


def histogram_counts(values: np.ndarray, bins: int, lo: float, hi: float) -> np.ndarray:
    """numpy.histogram(values, bins, range=(lo, hi)) counts, for finite values in [lo, hi]."""
    values = values.reshape(-1)
    if values.size <= CHUNK:
        return _numpy_histogram(values, bins, lo, hi)
    binner = _Binner(bins, lo, hi)
    for start in range(0, values.size, CHUNK):
        binner.add(values[start:start + CHUNK])
    return binner.counts


def _numpy_histogram(values, bins: int, lo: float, hi: float) -> np.ndarray:
    try:
        return np.histogram(values, bins=bins, range=(lo, hi))[0]
    except ValueError:
        # "Too many bins for data range": [lo, hi] is a few ulps wide, so some of
        # numpy's edges coincide; bin against those same edges ourselves
        edges = np.linspace(lo, hi, bins + 1)
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
        return np.bincount(idx, minlength=bins)


class _Binner:
    """Accumulates numpy.histogram counts over chunks, about 3x faster than numpy.

    The same index arithmetic as numpy's uniform-bin path, with numpy's edge
    corrections applied only to the few values within rounding of a bin edge
    (the only ones they can change): identical counts.
    """

    def __init__(self, bins: int, lo: float, hi: float):
        self.bins, self.lo, self.hi = bins, lo, hi
        self.counts = np.zeros(bins, dtype=np.int64)
        # how far from an integer rounding can put a bin index: a few ulps of the
        # values, in bin widths (large when the range is tiny next to |x|)
        self.slack = 16 * np.finfo(np.float64).eps * max(abs(lo), abs(hi)) * bins / (hi - lo) + 1e-12
        self.edges = np.linspace(lo, hi, bins + 1)
        self._f = np.empty(CHUNK)
        self._i = np.empty(CHUNK, dtype=np.intp)
        self._r = np.empty(CHUNK)

    def add(self, chunk: np.ndarray) -> None:
        if self.slack > 0.25:  # a badly conditioned range: let numpy do all of it
            self.counts += _numpy_histogram(chunk, self.bins, self.lo, self.hi)
            return
        m, bins = chunk.size, self.bins
        fb, ib, rb = self._f[:m], self._i[:m], self._r[:m]
        np.copyto(fb, chunk, casting="unsafe")
        fb -= self.lo
        fb /= self.hi - self.lo
        fb *= bins  # as numpy: ((x - lo) / (hi - lo)) * bins
        np.copyto(ib, fb, casting="unsafe")  # truncation == floor for x >= lo
        np.subtract(fb, ib, out=rb)
        near = np.flatnonzero((rb < self.slack) | (rb > 1 - self.slack) | (ib >= bins))
        if near.size:
            x = chunk[near].astype(np.float64)
            j = ib[near]
            j[j >= bins] = bins - 1
            j[x < self.edges[j]] -= 1
            j[(x >= self.edges[j + 1]) & (j != bins - 1)] += 1
            ib[near] = j
        self.counts += np.bincount(ib, minlength=bins)


def delta_stats(now, prev, *, exact: bool = True, total: int | None = None) -> np.ndarray:
    """The 6 DELTA_STATS of d = now - prev over the elements finite in both.

    With exact=False, `now` and `prev` are a tensor's sampled elements and
    `total` its full element count: norm is then scaled up to estimate the full
    tensor's, ratio is the sample's ratio, max_abs is a lower bound.
    """
    if exact:
        fast = _chunked_delta(now, prev, None)
        if fast is not None:
            return fast[0]
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


def delta_row(now, prev, bins: int | None = DEFAULT_BINS):
    """(DELTA_STATS, lo, hi, counts) of an exact delta: the statistics and the
    histogram of d = now - prev over the elements finite in both."""
    fast = _chunked_delta(now, prev, bins)
    if fast is not None:
        return fast
    row = delta_stats(now, prev)
    if not bins:
        return row, _NAN, _NAN, None
    a, b = as_float64(now), as_float64(prev)
    with np.errstate(invalid="ignore", over="ignore"):
        d = a - b
    lo, hi, counts = histogram(d[np.isfinite(a) & np.isfinite(b)], bins)
    return row, lo, hi, counts


def _chunked_delta(now, prev, bins):
    """delta_row for big, all-finite pairs, walked in chunks; None where it does not apply."""
    a, b = _flat_source(now), _flat_source(prev)
    if a.shape != b.shape:
        raise ValueError("delta of arrays with different shapes")
    n = a.size
    if n <= CHUNK:
        return None
    d_buf, b_buf, tmp = np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK)
    dsq = psq = abssum = 0.0
    dmin, dmax, changed = np.inf, -np.inf, 0

    def chunk_delta(start):
        m = min(CHUNK, n - start)
        db, bb = d_buf[:m], b_buf[:m]
        np.copyto(db, a[start:start + m], casting="unsafe")
        np.copyto(bb, b[start:start + m], casting="unsafe")
        db -= bb
        return db, bb

    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, n, CHUNK):
            db, bb = chunk_delta(start)
            dsq += np.einsum("i,i->", db, db)
            psq += np.einsum("i,i->", bb, bb)
            dmin, dmax = min(dmin, db.min()), max(dmax, db.max())
            abssum += np.abs(db, out=tmp[: db.size]).sum()
            changed += np.count_nonzero(db)
    if not (np.isfinite(dsq) and np.isfinite(psq) and np.isfinite(dmin) and np.isfinite(dmax)):
        return None  # NaN/Inf somewhere: the masked path
    dnorm, pnorm = np.sqrt(dsq), np.sqrt(psq)
    ratio = dnorm / pnorm if pnorm > 0 else (np.inf if dnorm > 0 else 0.0)
    row = np.array([dnorm, ratio, max(-dmin, dmax), abssum / n, changed / n, 1.0])
    if not bins:
        return row, _NAN, _NAN, None
    lo, hi = float(dmin), float(dmax)
    counts = np.zeros(bins, dtype=np.uint32)
    if lo == hi:
        counts[bins // 2] = n
        return row, lo, hi, counts
    binner = _Binner(bins, lo, hi)
    for start in range(0, n, CHUNK):
        binner.add(chunk_delta(start)[0])
    counts[:] = binner.counts
    return row, lo, hi, counts


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


def grad_block(names, grads: dict, bins: int = DEFAULT_BINS) -> Block | None:
    """A WEIGHT_STATS block over the rows `names`, from `grads` (name -> array) where
    a row has one; the others stay 'not covered'. None if no row has a gradient."""
    rows = [(i, grads[n]) for i, n in enumerate(names) if n in grads]
    if not rows:
        return None
    sub = weights_block([a for _i, a in rows], bins)
    block = empty_block(sub.names, len(names), bins)
    assert block.hist is not None and sub.hist is not None  # both made with histograms
    for j, (i, _a) in enumerate(rows):
        block.stats[i] = sub.stats[j]
        for part, src in zip(block.hist, sub.hist, strict=True):
            part[i] = src[j]
    return block


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
