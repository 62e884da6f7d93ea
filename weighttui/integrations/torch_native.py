"""The fused CPU kernel (weighttui._fastats, weighttui/record/native/fastats.c) for torch tensors.

On the CPU, torch_stats' eager ops read every tensor about 15 times per
snapshot (one pass per statistic, the delta, the copy for the next delta);
the kernel reads a tensor and its previous copy once for all statistics, then
once more to bin the values and the deltas (numpy.histogram's counts, every
element) while it copies the tensor into the previous copy. See docs/torch.md
for the measurements.

It takes contiguous float32, float16 and bfloat16 CPU tensors whose values are
all finite; it hands back every other tensor (NaN/Inf, a bin range a few ulps
wide) untouched, previous copy included, and torch_stats computes those. Raw
rows have torch_stats' layout (RAW, then the histogram counts), so everything
downstream is shared.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from weighttui.integrations.torch_stats import N_RAW

_fastats: ModuleType | None
UNAVAILABLE: str | None
try:
    import weighttui._fastats as _fastats  # the C extension (setup.py); a module of its own, not the package root
except ImportError as exc:  # built by `pip install` (setup.py) when a C compiler is there
    _fastats = None
    UNAVAILABLE = (f"the fused CPU kernel weighttui._fastats is not built ({exc}); CPU statistics use "
                   "torch ops (same numbers, slower): reinstall weighttui with a C compiler present")
else:
    UNAVAILABLE = None

_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_W_NOT_DONE, _D_NOT_DONE = 1, 2


def available() -> bool:
    return _fastats is not None


def takes(t: torch.Tensor) -> bool:
    """Whether the kernel can read t in place (a plain, contiguous CPU tensor of a float dtype it knows)."""
    return (t.device.type == "cpu" and t.dtype in _CODES and t.layout == torch.strided
            and t.numel() > 0 and t.is_contiguous() and type(t) in (torch.Tensor, torch.nn.Parameter))


def takes_pair(x: torch.Tensor, prev: torch.Tensor) -> bool:
    """Whether prev can be the kernel's previous copy of x (written in place)."""
    return takes(prev) and prev.dtype == x.dtype and prev.numel() == x.numel()


def _flat(t: torch.Tensor) -> np.ndarray:
    """A numpy view of t's memory (16-bit floats as their raw bits)."""
    t = t.detach().reshape(-1)
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy()


def rows(xs, prevs, bins: int, copy: bool, threads: int | None = None):
    """Raw rows of xs (and of x - prev where prevs[i] is not None).

    threads: how many threads share the tensors (default: torch's intra-op
    thread count, what torch's own ops would use while the training thread waits).

    Returns (raw_w [T, N_RAW + bins], raw_d [T, N_RAW + bins], w_done [T], d_done [T]):
    rows not done are garbage and must be computed elsewhere. With copy, every
    prev whose delta row was done now holds x (the others are untouched).
    """
    if _fastats is None:
        raise RuntimeError(UNAVAILABLE)  # callers check available() first
    t = len(xs)
    raw_w = np.empty((t, N_RAW + bins))
    raw_d = np.empty((t, N_RAW + bins))
    codes = bytes(_CODES[x.dtype] for x in xs)
    status = _fastats.snapshot([_flat(x) for x in xs], [None if p is None else _flat(p) for p in prevs],
                               codes, bins, raw_w, raw_d, copy,
                               torch.get_num_threads() if threads is None else int(threads))
    st = np.frombuffer(status, dtype=np.uint8)
    has_prev = np.array([p is not None for p in prevs], dtype=bool)
    return raw_w, raw_d, (st & _W_NOT_DONE) == 0, has_prev & ((st & _D_NOT_DONE) == 0)
