"""Tensor-major columns of one run: statistics, histograms and samples per tensor.

A run's snapshots arrive row by row (one row = one snapshot, covering some
tensors). They are kept as *entries* (row, tensor column, statistics, histogram,
samples): memory is proportional to what the log holds, never to declared
tensors x bins. New entries collect in a small in-memory tail; full tails are
sealed into `Segment`s whose entries are sorted by (column, row), so one tensor's
history in a segment is one contiguous slice of each array. Segments may be
in-memory arrays or arrays in an index file (read with pread): only the slices
a query touches are read. A sealed segment keeps what it can in a smaller exact
form (`compact`): tensor columns as runs, the row numbers of a grid once, a
constant statistic as one value, a statistic that float32 or uint8/16 holds
exactly in that dtype, histogram edges equal to min/max not at all.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from weighttui.log.format import crc32_blocks
from weighttui.log.schema import BASE_COLUMNS, COLUMNS, KINDS

# the row-to-tensor transposes in C (log/native/frames.c; setup.py, optional); None: numpy's
_gather_blocks: Any = None
_gather_columns: Any = None
_gather_counts: Any = None
try:
    from weighttui._frames import gather_blocks as _c_blocks
    from weighttui._frames import gather_columns as _c_columns
    from weighttui._frames import gather_counts as _c_counts
except ImportError:  # not built
    pass
else:
    _gather_blocks, _gather_columns, _gather_counts = _c_blocks, _c_columns, _c_counts

# A tail is sealed into a segment at this many entries (tensor-snapshots) or bytes,
# whichever comes first: bounded memory while building, few segments per GiB of log.
SEAL_ENTRIES = 131072
SEAL_BYTES = 32 * 1024 * 1024

_EMPTY_I4 = np.zeros(0, dtype=np.int32)
CRC_BLOCK = 1 << 16


class FileArray:
    """An array in an index file, read with pread when a query asks for part of it.

    Nothing is mapped into memory (a reader's RSS holds only what it asked for),
    and every read is checked against the CRCs the manifest keeps per CRC_BLOCK
    bytes of the array.
    """

    __slots__ = ("path", "offset", "dtype", "shape", "crcs")

    def __init__(self, path: str, offset: int, dtype: str, shape, crcs: list):
        self.path, self.offset, self.dtype, self.shape, self.crcs = path, offset, np.dtype(dtype), tuple(shape), crcs

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # (math.prod: called for every array of a manifest on reopen)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def read(self, lo: int, hi: int) -> bytes | None:
        """Bytes [lo, hi) of the array, or None if a CRC does not match (or the file is short)."""
        if hi <= lo:
            return b""
        b0, b1 = lo // CRC_BLOCK, -(-hi // CRC_BLOCK)
        start, end = b0 * CRC_BLOCK, min(b1 * CRC_BLOCK, self.nbytes)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            data = os.pread(fd, end - start, self.offset + start)
        finally:
            os.close(fd)
        if len(data) != end - start or b1 > len(self.crcs):
            return None
        if crc32_blocks(data, CRC_BLOCK) != self.crcs[b0:b1]:
            return None
        return data[lo - start:hi - start]


class _Damaged(Exception):
    """An index file read did not check out: the segment is derived from the log again."""


def _real(arr, a: int, b: int) -> np.ndarray:
    """Entries [a, b) (first axis) of a stored array: an ndarray or a FileArray."""
    if not isinstance(arr, FileArray):
        return np.asarray(arr[a:b])
    row = arr.itemsize * math.prod(arr.shape[1:])
    data = arr.read(a * row, b * row)
    if data is None:
        raise _Damaged
    return np.frombuffer(data, dtype=arr.dtype).reshape((b - a, *arr.shape[1:]))


class Const:
    """n copies of one float64, kept as its bits (a NaN's payload stays what it was)."""

    __slots__ = ("bits", "n")

    def __init__(self, bits: int, n: int):
        self.bits, self.n = int(bits), int(n)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        return np.full(b - a, self.bits, dtype=np.int64).view(np.float64)


class Tiled:
    """Row numbers of a grid segment: the same rows `base` [r] for each of n / r tensors."""

    __slots__ = ("base", "n")

    def __init__(self, base, n: int):
        self.base, self.n = base, int(n)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        base = seg.cached("base", lambda: _real(self.base, 0, self.base.shape[0]))
        if a == 0 and b == self.n and base.size:
            return np.tile(base, self.n // base.size)
        return base[np.arange(a, b) % max(1, base.size)] if b > a else base[:0]


class Runs:
    """Sorted tensor columns as runs: `cols` [u] each repeated up to the next of `starts` [u + 1]."""

    __slots__ = ("cols", "starts", "n")

    def __init__(self, cols, starts, n: int):
        self.cols, self.starts, self.n = cols, starts, int(n)

    def runs(self, seg) -> tuple[np.ndarray, np.ndarray]:
        return seg.cached("runs", lambda: (_real(self.cols, 0, self.cols.shape[0]),
                                           _real(self.starts, 0, self.starts.shape[0])))

    def values(self, seg, a: int, b: int) -> np.ndarray:
        cols, starts = self.runs(seg)
        return np.repeat(cols, np.diff(starts))[a:b]


class Uniform:
    """Sample offsets when every entry holds k samples: [0, k, 2k, ...] (n offsets)."""

    __slots__ = ("k", "n")

    def __init__(self, k: int, n: int):
        self.k, self.n = int(k), int(n)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        return np.arange(a, b, dtype=np.int64) * self.k


class Alias:
    """Histogram edges equal, bit for bit, to one statistic (lo = min, hi = max): not stored twice."""

    __slots__ = ("stat", "n")

    def __init__(self, stat: int, n: int):
        self.stat, self.n = int(stat), int(n)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        return seg._stat(self.stat, a, b)


_COUNT_DTYPES = (np.uint8, np.uint16, np.uint32)


class Split:
    """Histogram counts kept per tensor in the narrowest dtype its own largest count needs.

    parts[c]: the entries [k, B] of the runs (tensors) of class c (uint8, uint16, uint32; None
    when no run is of that class), in run order; cls [u]: each run's class; at [u]: where its
    entries start in its part. part() gives them as `dtype` (the widest class), as a segment
    without this stand-in holds them.
    """

    __slots__ = ("parts", "cls", "at", "n", "bins", "dtype")

    def __init__(self, parts: list, cls, at, n: int, bins: int, dtype):
        self.parts, self.cls, self.at, self.n, self.bins, self.dtype = parts, cls, at, int(n), int(bins), \
            np.dtype(dtype)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        cols, starts = seg._runs()
        u = cols.size
        cls, at = seg.cached("split", lambda: (_real(self.cls, 0, u), _real(self.at, 0, u)))
        out = np.empty((max(0, b - a), self.bins), dtype=self.dtype)
        if b <= a:
            return out
        if a == 0 and b == self.n:  # everything: each part read once, scattered to its runs
            lens = np.diff(starts)
            for c, part in enumerate(self.parts):
                runs = np.flatnonzero(cls == c)
                if part is None or not runs.size:
                    continue
                k = lens[runs]
                where = np.repeat(starts[runs] - np.concatenate(([0], np.cumsum(k)[:-1])), k)
                out[where + np.arange(int(k.sum()))] = _real(part, 0, int(k.sum()))
            return out
        i = max(0, int(np.searchsorted(starts, a, "right")) - 1)
        while i < u and starts[i] < b:  # (a tensor's entries: one run, one read)
            lo, hi = max(a, int(starts[i])), min(b, int(starts[i + 1]))
            if hi > lo:
                part = self.parts[int(cls[i])]
                if part is None:
                    raise _Damaged
                off = int(at[i]) + lo - int(starts[i])
                out[lo - a:hi - a] = _real(part, off, off + hi - lo)
            i += 1
        return out


def _split_counts(counts: np.ndarray, starts: np.ndarray, runmax: np.ndarray | None = None) -> Split | None:
    """counts [E, B] as a Split when some tensors' counts fit a narrower dtype than the segment's
    (runmax: each run's largest count, when known)."""
    u = starts.size - 1
    top = _COUNT_DTYPES.index(counts.dtype.type) if counts.dtype.type in _COUNT_DTYPES else -1
    if u < 2 or top < 1 or not counts.size:
        return None
    if runmax is None:
        runmax = np.maximum.reduceat(counts.max(axis=1), starts[:-1])
    cls = np.where(runmax < 2**8, 0, np.where(runmax < 2**16, 1, 2)).astype(np.int8)
    if not (cls < top).any():
        return None
    lens = np.diff(starts)
    at = np.zeros(u, np.int64)
    parts: list = []
    for c, dtype in enumerate(_COUNT_DTYPES):
        runs = np.flatnonzero(cls == c)
        if not runs.size:
            parts.append(None)
            continue
        k = lens[runs]
        at[runs] = np.concatenate(([0], np.cumsum(k)[:-1]))
        where = np.repeat(starts[runs] - at[runs], k) + np.arange(int(k.sum()))
        parts.append(counts[where].astype(dtype))
    return Split(parts, cls, at, counts.shape[0], counts.shape[1], counts.dtype)


class FromLog:
    """An array a segment does not hold: read back from the log's snapshot frames when asked for.

    For a store with no index to keep its sealed segments (fromlog.py): histograms
    (`lo`, `hi`, `counts` [n, bins] as `dtype`) and `samples` (n values, addressed
    through the segment's sample offsets) of the entries a query touches are
    re-read from their frames by `source`.
    """

    __slots__ = ("source", "field", "n", "bins", "dtype")

    def __init__(self, source, field: str, n: int, bins: int = 0, dtype=np.float64):
        self.source, self.field, self.n, self.bins, self.dtype = source, field, int(n), int(bins), np.dtype(dtype)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        return self.source.read(seg, self.field, a, b)

    def take(self, seg, idx: np.ndarray) -> np.ndarray:
        return self.source.take(seg, self.field, idx)


VIRTUAL = (Const, Tiled, Runs, Uniform, Alias, Split, FromLog)


def length(arr) -> int:
    """Entries of a stored array or a virtual one (first axis)."""
    return arr.n if isinstance(arr, VIRTUAL) else int(arr.shape[0])


class Segment:
    """Entries of one kind for rows [row0, row1), sorted by (col, row).

    rows, cols: [E] int32; stats: W columns of [E] (the kind's first W statistics,
    W <= S: columns no snapshot of the segment carried are not stored, and read as
    NaN); lo, hi: [E] float64 and counts: [E, B] (uint8/16/32) when the kind has
    histograms, else None; samples: flat float32 with soff [E + 1] offsets
    (weights only). Each is a numpy array, a FileArray, or (sealed segments,
    see `compact`) a smaller exact stand-in: Const, Tiled, Runs, Uniform, Alias,
    or a statistic column in a narrower dtype that holds it exactly. Read them
    with part(), which always gives the plain array.
    """

    __slots__ = ("row0", "row1", "rows", "cols", "stats", "lo", "hi", "counts", "samples", "soff", "on_damage",
                 "_cache", "__weakref__")

    def __init__(self, row0, row1, rows, cols, stats, lo=None, hi=None, counts=None, samples=None, soff=None):
        self.row0, self.row1 = int(row0), int(row1)
        self.rows, self.cols = rows, cols
        self.stats = list(stats)  # one [E] column per statistic (a [W, E] array gives its rows)
        self.lo, self.hi, self.counts = lo, hi, counts
        self.samples, self.soff = samples, soff
        self.on_damage = None  # for FileArrays: replaces them with arrays derived from the log
        self._cache: dict = {}

    @property
    def entries(self) -> int:
        return length(self.rows)

    @property
    def width(self) -> int:
        """Statistic columns stored (the kind's first `width`)."""
        return len(self.stats)

    def cached(self, key: str, make):
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = make()
        return hit

    def _get(self, arr, a: int, b: int) -> np.ndarray:
        return arr.values(self, a, b) if isinstance(arr, VIRTUAL) else _real(arr, a, b)

    def _stat(self, s: int, a: int, b: int) -> np.ndarray:
        if s >= len(self.stats):  # a column no snapshot of this segment carried
            return np.full(b - a, np.nan)
        return self._get(self.stats[s], a, b).astype(np.float64, copy=False)

    def part(self, name: str, a: int | None = None, b: int | None = None, s: int | None = None) -> np.ndarray:
        """array[a:b] (stats: statistic s, entries a:b) as a plain array, read from the index file if it lives
        there; a damaged file is replaced by arrays derived from the log again."""
        arr = None if name == "stats" else getattr(self, name)
        a, b = (0 if a is None else a), ((self.entries if arr is None else length(arr)) if b is None else b)
        try:
            if arr is None:
                assert s is not None
                return self._stat(s, a, b)
            return self._get(arr, a, b)
        except _Damaged:
            self.on_damage(self)
            return self.part(name, a, b, s)

    def take(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Entries `idx` (ascending; `name` lo, hi, counts or samples - for samples the samples of
        those entries, one after the other) as a plain array. Where the array is read back from the
        log (FromLog) only the frames of those entries are read, not every one between them."""
        arr = getattr(self, name)
        if isinstance(arr, FromLog):
            return arr.take(self, idx)
        a, b = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)
        if name != "samples":
            return self.part(name, a, b)[idx - a]
        soff = self.part("soff", a, b + 1)
        flat = self.part("samples", int(soff[0]), int(soff[-1]))
        starts, lens = soff[idx - a] - soff[0], soff[idx - a + 1] - soff[idx - a]
        first = np.cumsum(lens) - lens  # where each entry's samples go in the result
        return flat[np.repeat(starts - first, lens) + np.arange(int(lens.sum()))]

    def _runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(tensor columns, entry starts [u + 1]) of the segment's runs of equal columns."""
        if isinstance(self.cols, Runs):
            try:
                return self.cols.runs(self)
            except _Damaged:
                self.on_damage(self)
                return self._runs()
        return self.cached("runs", lambda: runs_of(self.part("cols")))

    def span(self, col: int) -> tuple[int, int]:
        """[a, b): the entries of tensor column `col`."""
        cols, starts = self._runs()
        i = int(np.searchsorted(cols, col, "left"))
        if i == cols.size or cols[i] != col:
            return 0, 0
        return int(starts[i]), int(starts[i + 1])

    def grid(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows [r], cols [u]) when the segment is every col x every row (value (c, r) at c * r + r's place)."""
        hit: tuple | None = self._cache.get("grid")
        if hit is None:
            hit = self._cache["grid"] = (False,)
            if isinstance(self.rows, Tiled):
                cols, starts = self._runs()
                base = self.part("rows", 0, self.rows.n // max(1, cols.size))
                if cols.size and self.rows.n == cols.size * base.size \
                        and np.array_equal(starts, np.arange(cols.size + 1) * base.size):
                    hit = self._cache["grid"] = (True, base, cols)
        return (hit[1], hit[2]) if hit[0] else None

    def replace_arrays(self, other: Segment) -> None:
        for name in ("rows", "cols", "stats", "lo", "hi", "counts", "samples", "soff"):
            setattr(self, name, getattr(other, name))
        self._cache = {}

    def arrays(self) -> dict:
        """name -> stored array or stand-in (stats: a list of them), for writing to an index file."""
        out = {"rows": self.rows, "cols": self.cols, "stats": self.stats}
        for name in ("lo", "hi", "counts", "samples", "soff"):
            arr = getattr(self, name)
            if arr is not None:
                out[name] = arr
        return out

    def file_arrays(self):
        """Every FileArray the segment reads from (also those inside stand-ins)."""
        for arr in [self.rows, self.cols, *self.stats, self.lo, self.hi, self.counts, self.samples, self.soff]:
            if isinstance(arr, FileArray):
                yield arr
            elif isinstance(arr, Tiled) and isinstance(arr.base, FileArray):
                yield arr.base
            elif isinstance(arr, Runs):
                yield from (x for x in (arr.cols, arr.starts) if isinstance(x, FileArray))
            elif isinstance(arr, Split):
                yield from (x for x in (*arr.parts, arr.cls, arr.at) if isinstance(x, FileArray))


def runs_of(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted columns as (distinct columns, starts [u + 1])."""
    if not cols.size:
        return cols.astype(np.int32), np.zeros(1, np.int64)
    cut = np.flatnonzero(cols[1:] != cols[:-1]) + 1
    starts = np.concatenate(([0], cut, [cols.size])).astype(np.int64)
    return cols[starts[:-1]].astype(np.int32), starts


def _narrow(col: np.ndarray):
    """One statistic column in the smallest exact form: Const, uint8/16, float32, or as it is."""
    n = col.size
    if not n:
        return col
    bits = col.view(np.int64)
    if (bits == bits[0]).all():
        return Const(int(bits[0]), n)
    head = col[:256]
    if not np.array_equal(head.astype(np.float32).astype(np.float64).view(np.int64), head.view(np.int64)):
        return col  # the usual float64 statistic: decided by its first values
    f32 = col.astype(np.float32)
    if not np.array_equal(f32.astype(np.float64).view(np.int64), bits):
        return col
    with np.errstate(invalid="ignore"):
        if (f32 >= 0).all() and f32.max() < 2**16:
            small = f32.astype(np.uint8 if f32.max() < 2**8 else np.uint16)
            if np.array_equal(small.astype(np.float64).view(np.int64), bits):  # (-0.0 and fractions fail)
                return small
    return f32


def compact(seg: Segment, edges: tuple[int | None, int | None] = (None, None)) -> Segment:
    """A sealed in-memory segment with the stand-ins that hold the same values in less space.

    edges: the statistics (min, max) that a histogram's lo and hi usually repeat.
    """
    e = seg.entries
    if not isinstance(seg.rows, np.ndarray) or any(not isinstance(c, np.ndarray) for c in seg.stats):
        return seg
    cols, starts = runs_of(seg.cols)
    rows: object = seg.rows
    if cols.size and e % cols.size == 0 and np.array_equal(starts, np.arange(cols.size + 1) * (e // cols.size)):
        r = e // cols.size
        block = seg.rows.reshape(cols.size, r)
        if (block == block[0]).all():
            rows = Tiled(block[0].astype(np.int32), e)
    out = Segment(seg.row0, seg.row1, rows, Runs(cols, starts, e), [_narrow(c) for c in seg.stats],
                  seg.lo, seg.hi, seg.counts, seg.samples, seg.soff)
    for name, s in zip(("lo", "hi"), edges, strict=True):
        arr = getattr(seg, name)
        if isinstance(arr, np.ndarray) and s is not None and s < seg.width \
                and np.array_equal(arr.view(np.int64), seg.stats[s].view(np.int64)):
            setattr(out, name, Alias(s, e))
    if isinstance(seg.counts, np.ndarray):
        runmax = seg._cache.get("runmax")
        split = _split_counts(seg.counts, starts, runmax if runmax is not None and runmax.size == cols.size else None)
        if split is not None:
            out.counts = split
    if isinstance(seg.soff, np.ndarray) and seg.soff.size > 1:
        k = int(seg.soff[1])
        if seg.soff[0] == 0 and (np.diff(seg.soff) == k).all():
            out.soff = Uniform(k, seg.soff.size)
    return out


def merge(parts: list[dict], row0: int, row1: int, nstats: int, bins: int | None, with_samples: bool,
          heavy: bool = True) -> Segment:
    """One Segment from pieces given in row order.

    Each piece: {"rows", "cols", "stats" [E, S] or [S, E] via "stats_t", "lo", "hi",
    "counts", "samples" (flat), "slen" [E]} - a snapshot or an existing segment.
    heavy=False: without the histograms and the samples (lo, hi, counts and samples
    None; the sample offsets are there): for a segment that reads them back from
    the log (fromlog.py).
    """
    grid = _grid(parts, row0, row1, nstats, bins, with_samples, heavy)
    if grid is not None:
        return grid
    rows = np.concatenate([p["rows"] for p in parts]) if parts else _EMPTY_I4
    cols = np.concatenate([p["cols"] for p in parts]) if parts else _EMPTY_I4
    order = np.argsort(cols, kind="stable")  # rows are in order already: (col, row) order
    if parts:
        width = max(p["stats_t"].shape[0] if "stats_t" in p else p["stats"].shape[1] for p in parts)
        stats = np.concatenate([_widened(p["stats_t"].T if "stats_t" in p else p["stats"], width) for p in parts])
        stats = np.ascontiguousarray(stats[order].T)
    else:
        stats = np.zeros((0, 0))
    lo = hi = counts = None
    if bins is not None and heavy:
        nan = np.full(0, np.nan)

        def field(p, name, shape, fill):
            v = p.get(name)
            return v if v is not None else np.full(shape, fill, dtype=np.uint32 if name == "counts" else np.float64)

        lo = np.concatenate([field(p, "lo", p["rows"].size, np.nan) for p in parts]) if parts else nan
        hi = np.concatenate([field(p, "hi", p["rows"].size, np.nan) for p in parts]) if parts else nan
        lo, hi = lo[order], hi[order]
        counts = np.concatenate([field(p, "counts", (p["rows"].size, bins), 0) for p in parts]) if parts \
            else np.zeros((0, bins), np.uint32)
        counts = counts[order].astype(count_dtype(counts), copy=False)
    samples = soff = None
    if with_samples:
        slen = np.concatenate([p["slen"] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
        starts = np.concatenate(([0], np.cumsum(slen)))
        lens = slen[order]
        soff = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        if heavy:
            flat = np.concatenate([p["samples"] for p in parts]).astype(np.float32, copy=False) if parts \
                else np.zeros(0, np.float32)
            gather = np.repeat(starts[:-1][order] - soff[:-1], lens) + np.arange(int(soff[-1]))
            samples = flat[gather]
    return Segment(row0, row1, rows[order].astype(np.int32), cols[order].astype(np.int32), stats,
                   lo, hi, counts, samples, soff)


def count_dtype(*counts: np.ndarray):
    """The narrowest of uint8/16/32 that holds every count (a segment's histogram counts are kept in it)."""
    cmax = max((int(c.max()) for c in counts if c.size), default=0)
    return np.uint8 if cmax < 2**8 else np.uint16 if cmax < 2**16 else np.uint32


def _widened(stats: np.ndarray, width: int) -> np.ndarray:
    """[n, w] statistics as [n, width], NaN in the columns it lacks."""
    if stats.shape[1] == width:
        return stats
    out = np.full((stats.shape[0], width), np.nan)
    out[:, : stats.shape[1]] = stats
    return out


def _grid(parts: list[dict], row0: int, row1: int, nstats: int, bins: int | None, with_samples: bool,
          heavy: bool = True):
    """merge() for the usual tail: snapshots that all cover the same tensors (the same cols object).

    Their entries form a [rows, tensors] grid, so (col, row) order is a transpose:
    each output array is written in one pass, without a concatenation and a gather.
    """
    if not parts or "stats_t" in parts[0]:
        return None
    c0 = parts[0]["cols"]
    width = parts[0]["stats"].shape[1]
    has_hist = parts[0].get("counts") is not None
    slen0 = parts[0].get("slen")
    for p in parts:
        if p["cols"] is not c0 or "stats_t" in p or (p.get("counts") is not None) != has_hist \
                or p.get("slen") is not slen0 or p["stats"].shape[1] != width:
            return None
    if (bins is not None) != has_hist or (with_samples and slen0 is None):
        return None
    t, r = c0.size, len(parts)
    perm = np.argsort(c0, kind="stable")
    ident = bool(np.array_equal(perm, np.arange(t)))
    rowvals = np.fromiter((p["rows"][0] for p in parts), dtype=np.int32, count=r)
    # (C: each piece read once, the tensor-major result written in place, without the GIL: _gathered)
    c_perm = None if ident else perm.astype(np.int64)
    stats = _gathered(parts, "stats", np.float64, lambda a: _gather_columns(a, t, width, c_perm))
    if stats is not None:
        stats = stats.reshape(width, t, r)
    else:
        grid = _stacked(parts, "stats")  # [rows, tensors, columns]: one contiguous copy
        stats = np.ascontiguousarray((grid if ident else grid[:, perm]).transpose(2, 1, 0))
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    counts: np.ndarray | None = None
    runmax = None  # each tensor's largest count, when the gather found it (for compact's Split)
    if has_hist and bins is not None and heavy:
        lo, hi = (_gathered(parts, name, np.float64, lambda a: _gather_blocks(a, t, 8, c_perm))
                  for name in ("lo", "hi"))  # [rows, tensors] -> (tensor, row)
        if lo is None or hi is None:
            lo, hi = (np.ascontiguousarray((e if ident else e[:, perm]).T).reshape(-1)
                      for e in (_stacked(parts, "lo"), _stacked(parts, "hi")))
    if has_hist and bins is not None and heavy:
        got = _gathered(parts, "counts", np.uint32, lambda a: _gather_counts(a, t, bins, c_perm), raw=True)
        if got is not None:
            data, size, maxima = got
            counts = np.frombuffer(data, dtype=_COUNT_DTYPES[(1, 2, 4).index(size)]).reshape(t * r, bins)
            runmax = np.array(maxima, dtype=np.int64)
        else:
            # whole-array copies (numpy runs them without the GIL: this may run on the spiller's thread)
            stacked = _stacked(parts, "counts")  # [rows, tensors, bins]
            grid_counts = np.empty((t, r, bins), dtype=count_dtype(stacked))
            grid_counts[...] = (stacked if ident else stacked[:, perm]).transpose(1, 0, 2)
            del stacked
            counts = grid_counts.reshape(t * r, bins)
    samples: np.ndarray | None = None
    soff: np.ndarray | None = None
    if with_samples and slen0 is not None:
        slen = np.asarray(slen0, dtype=np.int64)
        starts = np.concatenate((np.zeros(1, np.int64), np.cumsum(slen)))
        k = int(slen[0]) if t else 0
        if heavy and t and (slen == k).all():  # every tensor samples k values: a transpose again
            samples = _gathered(parts, "samples", np.float32, lambda a: _gather_blocks(a, t, 4 * k, c_perm))
        if heavy and samples is None:  # (heavy=False: only the offsets, below)
            table = _stacked(parts, "samples")  # [rows, all samples of a snapshot]
            if t and (slen == k).all():
                cube = table.reshape(r, t, k)
                samples = np.ascontiguousarray((cube if ident else cube[:, perm]).transpose(1, 0, 2)).reshape(-1)
            else:
                samples = np.concatenate([table[:, starts[j]:starts[j + 1]].reshape(-1) for j in perm.tolist()]) \
                    if t else np.zeros(0, np.float32)
        soff = np.concatenate((np.zeros(1, np.int64), np.cumsum(np.repeat(slen[perm], r)))).astype(np.int64)
    seg = Segment(row0, row1, np.tile(rowvals, t), np.repeat(c0[perm].astype(np.int32), r),
                  stats.reshape(width, t * r), lo, hi, counts,
                  None if samples is None else samples.astype(np.float32, copy=False), soff)
    if runmax is not None:
        seg._cache["runmax"] = runmax  # (the tensors are the segment's runs, in order)
    return seg


def _gathered(parts: list[dict], name: str, dtype, gather, raw: bool = False):
    """gather(the parts' arrays `name`) as a flat array of dtype (raw: what gather returned), or None
    when the C transposes are not built or an array is not C-contiguous of that dtype (then numpy)."""
    if _gather_blocks is None:
        return None
    arrays = [p[name] for p in parts]
    if not all(a.dtype == dtype and a.flags.c_contiguous for a in arrays):
        return None
    try:
        out = gather(arrays)
    except ValueError:  # (pieces of different sizes: numpy's path says what is wrong, or copes)
        return None
    return out if raw else np.frombuffer(out, dtype)


def _stacked(parts: list[dict], name: str) -> np.ndarray:
    """np.stack of every part's array `name` (all of one shape), read-only.

    Usually (one dtype, each array contiguous: views of the payloads) one bytes.join, which
    copies every part in one pass; np.concatenate takes 2x as long here and np.stack first makes
    a view of each part in Python, holding the GIL that the reader's thread wants."""
    arrays = [p[name] for p in parts]
    first = arrays[0]
    dt = first.dtype
    if all(a.dtype == dt and a.flags.c_contiguous for a in arrays):
        return np.frombuffer(b"".join(arrays), dtype=dt).reshape(len(arrays), *first.shape)
    return np.concatenate(arrays).reshape(len(arrays), *first.shape)


def segment_piece(seg: Segment) -> dict:
    """A segment as a merge() piece (to merge a small saved segment with new rows)."""
    stats = np.stack([seg.part("stats", s=s) for s in range(seg.width)]) if seg.width \
        else np.zeros((0, seg.entries))  # (a segment of a kind no snapshot carried)
    piece = {"rows": seg.part("rows"), "cols": seg.part("cols"), "stats_t": stats}
    if seg.counts is not None:
        piece.update(lo=seg.part("lo"), hi=seg.part("hi"), counts=seg.part("counts"))
    if seg.soff is not None:
        piece.update(samples=seg.part("samples"), slen=np.diff(seg.part("soff")))
    return piece


class KindColumns:
    """The entries of one kind (weights, delta or grad) of one run."""

    def __init__(self, kind: str):
        self.kind = kind
        self.columns = COLUMNS[kind]
        self.col_index = {c: i for i, c in enumerate(self.columns)}
        self.edges = (self.col_index.get("min"), self.col_index.get("max"))  # what lo and hi usually repeat
        # which columns some block carried: the optional ones (instruments) are
        # listed by RunData.columns() only once a snapshot had them
        self.filled = np.array([c in BASE_COLUMNS[kind] for c in self.columns], dtype=bool)
        self.segments: list[Segment] = []
        self.tail: list[dict] = []  # snapshots not sealed yet, in row order
        self.tail_entries = 0
        self.tail_bytes = 0
        self.bins: int | None = None
        self.seen = False
        self._tail_seg: Segment | None = None  # the tail sorted, built when a query needs it
        self._prefixes: dict[tuple, np.ndarray] = {}  # column lists that are a prefix -> the `filled` they marked

    def add(self, row: int, cols: np.ndarray, block, samples=None, slen=None, rows=None) -> None:
        """One snapshot's block (records.BlockRecord); cols are the tensor columns of its rows.

        rows: `row` once per entry, when the caller has it already (the kinds of one snapshot share
        it; pieces are never changed)."""
        self.seen = True
        n = cols.size
        names = tuple(block.names)
        if self._prefixes.get(names) is self.filled:  # marked in these very flags already
            stats = block.stats
        elif names == self.columns[: len(names)]:  # the usual case: the kind's first columns, in order
            stats = block.stats  # (stored as wide as it is: the columns after it read as NaN)
            self.filled[: len(names)] = True
            if len(self._prefixes) < 64:
                self._prefixes[names] = self.filled
        else:  # columns in another order or unknown ones: map by name, NaN where missing
            stats = np.full((n, len(self.columns)), np.nan)
            for src, name in enumerate(block.names):
                dst = self.col_index.get(name)
                if dst is not None:
                    stats[:, dst] = block.stats[:, src]
                    self.filled[dst] = True
        piece = {"rows": np.full(n, row, dtype=np.int32) if rows is None else rows, "cols": cols, "stats": stats}
        size = stats.nbytes
        if block.hist is not None:
            lo, hi, counts = block.hist
            if self.bins is None:
                self.bins = counts.shape[1]
            piece["lo"], piece["hi"], piece["counts"] = lo, hi, counts
            size += counts.nbytes + 16 * n
        if samples is not None:
            piece["samples"], piece["slen"] = samples, slen
            size += samples.nbytes
        self.tail.append(piece)
        self.tail_entries += n
        self.tail_bytes += size
        self._tail_seg = None

    def check_bins(self, block) -> str | None:
        """Why this block's histogram cannot join the run's, or None."""
        if block is not None and block.hist is not None and self.bins is not None \
                and block.hist[2].shape[1] != self.bins:
            return f"{self.kind} histogram has {block.hist[2].shape[1]} bins, the run {self.bins}"
        return None

    def full(self, seal_bytes: int | None = None) -> bool:
        """Whether the tail is due to be sealed (seal_bytes: a store's own bound instead of SEAL_BYTES)."""
        return self.tail_entries >= SEAL_ENTRIES or self.tail_bytes >= (seal_bytes or SEAL_BYTES)

    def _pieces_of_tail(self, with_samples: bool) -> list[dict]:
        if not with_samples:
            return self.tail
        # snapshots without samples still need lengths (zero) for the sample offsets
        out = []
        for p in self.tail:
            if "slen" not in p:
                p = dict(p, samples=np.zeros(0, np.float32), slen=np.zeros(p["rows"].size, np.int64))
            out.append(p)
        return out

    def tail_segment(self, row0: int, row1: int, with_samples: bool) -> Segment | None:
        if not self.tail:
            return None
        if self._tail_seg is None:
            self._tail_seg = merge(self._pieces_of_tail(with_samples), row0, row1, len(self.columns),
                                   self.bins, with_samples)
        return self._tail_seg

    def seal(self, row0: int, row1: int, with_samples: bool, base: Segment | None = None) -> Segment:
        """The tail (after `base`, a small segment being rewritten) as one sorted segment; empties the tail."""
        parts = ([segment_piece(base)] if base is not None else []) + self._pieces_of_tail(with_samples)
        self.tail, self.tail_entries, self.tail_bytes, self._tail_seg = [], 0, 0, None
        return sealed_segment(parts, base.row0 if base is not None else row0, row1, len(self.columns), self.bins,
                              with_samples, self.edges)

    def take(self, row0: int, row1: int, with_samples: bool):
        """The tail's pieces and how to seal them (sealed_segment's arguments); empties the tail.

        For sealing on another thread: the pieces are never changed once added."""
        parts = self._pieces_of_tail(with_samples)
        self.tail, self.tail_entries, self.tail_bytes, self._tail_seg = [], 0, 0, None
        return (parts, row0, row1, len(self.columns), self.bins, with_samples, self.edges)


def sealed_segment(parts, row0, row1, nstats, bins, with_samples, edges) -> Segment:
    return compact(merge(parts, row0, row1, nstats, bins, with_samples), edges)


def new_kinds() -> dict[str, KindColumns]:
    return {k: KindColumns(k) for k in KINDS}
