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


def run(xs, prevs, codes: bytes, bins: int, copy: bool, threads: int = 1):
    """Raw rows of the flat buffers xs (and of x - prev where prevs[i] is not None).

    xs/prevs: buffers as flat() makes them, codes one dtype code per tensor.
    Returns (raw_w [T, N_RAW + bins], raw_d [T, N_RAW + bins], w_done [T], d_done [T]):
    rows not done are garbage and must be computed elsewhere. With copy, every
    prev whose delta row was done now holds x (the others are untouched).
    """
    t = len(xs)
    raw_w = np.empty((t, N_RAW + bins))
    raw_d = np.empty((t, N_RAW + bins))
    if _fastats is None:
        raise RuntimeError(UNAVAILABLE)
    status = _fastats.snapshot(list(xs), list(prevs), codes, bins, raw_w, raw_d, bool(copy), int(threads))
    st = np.frombuffer(status, dtype=np.uint8)
    has_prev = np.array([p is not None for p in prevs], dtype=bool)
    return raw_w, raw_d, (st & W_NOT_DONE) == 0, has_prev & ((st & D_NOT_DONE) == 0)


def rows(arrays, prevs, bins: int, copy: bool, threads: int = 1):
    """run() for numpy arrays that takes() accepts; prevs[i] None or an array of arrays[i]'s dtype and size."""
    codes = bytes(code_of(a.dtype) for a in arrays)  # type: ignore[misc]
    return run([flat(a) for a in arrays], [None if p is None else flat(p) for p in prevs], codes, bins, copy,
               threads)
