"""The fused CPU statistics kernel (weighttui._fastats, record/native/fastats.c) for numpy arrays.

One call computes, for many tensors at once, the raw rows (record/raw_rows.py)
of each tensor and of its exact delta from a previous copy, in two passes over
memory: pass A reads a tensor and its previous copy once for every statistic,
pass B bins values and deltas (numpy.histogram's counts against float64 edges,
every element) while it copies the tensor into the previous copy.

It reads C-contiguous float32, float64, float16 and bfloat16 (ml_dtypes)
arrays in place. Tensors holding NaN/Inf, ranges a few ulps wide and float64
sums that overflow are handed back (status bits) with their previous copy
untouched: the numpy reference (record/stats.py) computes those. Every
framework's CPU path (numpy Recorder, torch, Keras, JAX) goes through here.

`Extras` asks the same two passes for the instruments that read every element
(docs/instruments.md): the distance from an initial copy, the norms of
optimizer state buffers, per-row (unit) norms, one step of the power iteration
(W v in pass A, W^T u in pass B, for the tensor and for its update) and the
values at fixed coordinates, so that memory is read once for all of them.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from weighttui.record.raw_rows import N_RAW

_fastats: ModuleType | None
UNAVAILABLE: str | None
try:
    import weighttui._fastats as _fastats  # the C extension (setup.py); a module of its own, not the package root
except ImportError as exc:  # built by `pip install` (setup.py) when a C compiler is there
    _fastats = None
    UNAVAILABLE = (
        f"the fused CPU kernel weighttui._fastats is not built ({exc}); statistics use the "
        "numpy reference path (same numbers, slower): reinstall weighttui with a C compiler present")
else:
    UNAVAILABLE = None

F32, F16, BF16, F64 = 0, 1, 2, 3
W_NOT_DONE, D_NOT_DONE = 1, 2
# a build from before float64 support (a checkout that was not rebuilt) reads codes 0..2 only
_CODES_READ = getattr(_fastats, "DTYPES", 3) if _fastats is not None else 0
HEAD = 8  # the header of an Extras' output: dist, |W v|, |dW vd|, state norms 0 and 1, 3 spare


def has_extras() -> bool:
    """Whether the built kernel computes Extras (a build from before them does not: a stale checkout)."""
    return _fastats is not None and getattr(_fastats, "EXTRAS", 0) >= 1


class Extras:
    """The instruments the kernel computes for one tensor in its two passes (snapshot()'s extras).

    Inputs (flat buffers as flat() makes them; x0 and states of the tensor's dtype and size):
    x0 (-> dist = ||x - x0||), rows (x as a [rows, cols] matrix; 0: none), units (-> unit_norms,
    one L2 norm per row), v / vd (float64 [cols]: one power iteration step of W and of the update
    W - prev: u = W v / |W v|, b = W^T u; |b| is the Ritz estimate of sigma_max when v is not 0),
    idx (int64 flat indices -> gathered, float64) and states (up to 2 buffers -> state_norms).
    After run(): w_done / d_done say whether the values (everything but vd's) and the update's
    (vd's) are valid: a tensor the kernel hands back (NaN/Inf, ...) gets neither.
    """

    __slots__ = ("x0", "rows", "units", "v", "vd", "idx", "states", "out", "w_done", "d_done",
                 "unit_norms", "b", "bd", "gathered")

    def __init__(self, x0=None, rows: int = 0, units: bool = False, v=None, vd=None, idx=None, states=()):
        self.x0, self.rows, self.units, self.v, self.vd, self.idx = x0, rows, units, v, vd, idx
        self.states = states
        self.out = np.zeros(0)
        self.w_done = self.d_done = False
        # the outputs: views into out once run() placed them (None where not asked)
        self.unit_norms: np.ndarray | None = None
        self.b: np.ndarray | None = None
        self.bd: np.ndarray | None = None
        self.gathered: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"Extras(rows={self.rows}, units={self.units}, x0={self.x0 is not None}, v={self.v is not None}, "
                f"vd={self.vd is not None}, idx={None if self.idx is None else self.idx.size}, "
                f"states={len(self.states)}, w_done={self.w_done}, d_done={self.d_done})")

    def _arg(self, n: int) -> tuple:
        rows = self.rows
        cols = n // rows if rows else 0
        k = 0 if self.idx is None else int(self.idx.size)
        has_v, has_vd = self.v is not None, self.vd is not None
        size = HEAD + (rows if self.units else 0) + (rows + cols) * (has_v + has_vd) + k
        out = self.out = np.zeros(size)
        at = HEAD
        self.unit_norms = self.b = self.bd = self.gathered = None
        if self.units:
            self.unit_norms = out[at:at + rows]
            at += rows
        if has_v:
            self.b = out[at + rows:at + rows + cols]
            at += rows + cols
        if has_vd:
            self.bd = out[at + rows:at + rows + cols]
            at += rows + cols
        if k:
            self.gathered = out[at:at + k]
        self.w_done = self.d_done = False
        return (self.x0, int(rows), bool(self.units), self.v, self.vd, self.idx,
                tuple(self.states) if self.states else None, out)

    @property
    def dist(self) -> float:
        return float(self.out[0])

    @property
    def y_norm(self) -> float:
        return float(self.out[1])

    @property
    def yd_norm(self) -> float:
        return float(self.out[2])

    @property
    def state_norms(self) -> tuple[float, float]:
        return float(self.out[3]), float(self.out[4])


def available() -> bool:
    return _fastats is not None


def code_of(dtype) -> int | None:
    """The kernel's dtype code for a numpy dtype, or None if it cannot read it."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return F32
    if dtype == np.float64:
        return F64 if _CODES_READ > F64 else None
    if dtype == np.float16:
        return F16
    if dtype.name == "bfloat16" and dtype.itemsize == 2:  # ml_dtypes (TF, JAX)
        return BF16
    return None


def takes(arr) -> bool:
    """Whether the kernel can read arr in place: a non-empty, C-contiguous numpy array of a dtype it knows."""
    return (_fastats is not None and isinstance(arr, np.ndarray) and arr.size > 0
            and arr.flags.c_contiguous and code_of(arr.dtype) is not None)


def flat(arr: np.ndarray) -> np.ndarray:
    """The 1-D buffer the kernel reads (16-bit floats as their raw bits)."""
    a = arr.reshape(-1)
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a


def run(xs, prevs, codes: bytes, bins: int, copy: bool, threads: int = 1, extras=None):
    """Raw rows of the flat buffers xs (and of x - prev where prevs[i] is not None).

    xs/prevs: buffers as flat() makes them, codes one dtype code per tensor.
    extras: None or one Extras (or None) per tensor, filled in place (has_extras() builds only).
    Returns (raw_w [T, N_RAW + bins], raw_d [T, N_RAW + bins], w_done [T], d_done [T]):
    rows not done are garbage and must be computed elsewhere. With copy, every
    prev whose delta row was done now holds x (the others are untouched).
    """
    t = len(xs)
    raw_w = np.empty((t, N_RAW + bins))
    raw_d = np.empty((t, N_RAW + bins))
    if _fastats is None:
        raise RuntimeError(UNAVAILABLE)
    args = [list(xs), list(prevs), codes, bins, raw_w, raw_d, bool(copy), int(threads)]
    if extras is not None and any(e is not None for e in extras):
        if not has_extras():
            raise RuntimeError("the built kernel weighttui._fastats computes no instruments (a stale build): "
                               "rebuild it (python setup.py build_ext --inplace)")
        args.append([None if e is None else e._arg(x.size)
                     for e, x in zip(extras, xs, strict=True)])
    status = _fastats.snapshot(*args)
    st = np.frombuffer(status, dtype=np.uint8)
    has_prev = np.array([p is not None for p in prevs], dtype=bool)
    w_done, d_done = (st & W_NOT_DONE) == 0, has_prev & ((st & D_NOT_DONE) == 0)
    for i, e in enumerate(extras or ()):
        if e is not None:
            e.w_done, e.d_done = bool(w_done[i]), bool(d_done[i])
    return raw_w, raw_d, w_done, d_done


def has_chain() -> bool:
    """Whether the built kernel has chain() (a build from before it does not: a stale checkout)."""
    return _fastats is not None and hasattr(_fastats, "chain")


NSTATE = getattr(_fastats, "NSTATE", 16)


def chain(bx, bp, bstate, ax, ap, code: int, bins: int, drop: bool = False):
    """One step along the versions of one tensor (_fastats.chain): pass B of bx against bp with the ranges
    of bstate (what pass A of bx wrote in the step before) together with pass A of ax against ap, reading
    memory once for both. Buffers as flat() makes them (any None; all of dtype code and one size); drop:
    bp is a view of a file mapping whose pages are given back as pass B reads them.
    Returns (raw_w [1, N_RAW + bins], raw_d [1, N_RAW + bins], w_done, d_done, ax's state or None):
    rows not done (or with no bx) are garbage, as run()'s."""
    if _fastats is None:
        raise RuntimeError(UNAVAILABLE)
    raw_w = np.empty((1, N_RAW + bins))
    raw_d = np.empty((1, N_RAW + bins))
    state = np.zeros(NSTATE) if ax is not None else None
    st = _fastats.chain(bx, bp, bstate, ax, ap, int(code), int(bins), raw_w, raw_d, state, bool(drop))
    w_done = bx is not None and not st & W_NOT_DONE
    d_done = bp is not None and w_done and not st & D_NOT_DONE
    return raw_w, raw_d, w_done, d_done, state


def can_finish() -> bool:
    """Whether the built kernel finishes raw rows (finish(); a build from before it does not: a stale checkout)."""
    return _fastats is not None and hasattr(_fastats, "finish")


def finish(raw: np.ndarray, delta: bool, bins: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(stats, (lo, hi, counts)) of raw rows [R, N_RAW + bins], bit for bit raw_rows.weight_rows (delta:
    delta_rows against the rows' psq) and hist_parts, in one C call instead of some fifty numpy operations.
    can_finish() builds only."""
    r = raw.shape[0]
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    stats = np.empty((r, 6 if delta else 9))
    lo, hi = np.empty(r), np.empty(r)
    counts = np.empty((r, bins), dtype=np.uint32)
    _fastats.finish(raw, int(delta), bins, stats, lo, hi, counts)  # type: ignore[union-attr]
    return stats, (lo, hi, counts)


def rows(arrays, prevs, bins: int, copy: bool, threads: int = 1, extras=None):
    """run() for numpy arrays that takes() accepts; prevs[i] None or an array of arrays[i]'s dtype and size.
    extras: as run()'s, with x0 and states as arrays of arrays[i]'s dtype and size (flattened here)."""
    codes = bytes(code_of(a.dtype) for a in arrays)  # type: ignore[misc]
    for e in extras or ():
        if e is not None:
            e.x0 = None if e.x0 is None else flat(e.x0)
            e.states = tuple(None if s is None else flat(s) for s in e.states)
    return run([flat(a) for a in arrays], [None if p is None else flat(p) for p in prevs], codes, bins, copy,
               threads, extras)
