"""The fused CPU kernel (weighttui._fastats, weighttui/record/native/fastats.c) for torch tensors.

On the CPU, torch_stats' eager ops read every tensor about 15 times per
snapshot (one pass per statistic, the delta, the copy for the next delta);
the kernel reads a tensor and its previous copy once for all statistics, then
once more to bin the values and the deltas (numpy.histogram's counts, every
element) while it copies the tensor into the previous copy. See docs/torch.md
for the measurements.

It takes contiguous float32, float64, float16 and bfloat16 CPU tensors whose values are
all finite; it hands back every other tensor (NaN/Inf, a bin range a few ulps
wide) untouched, previous copy included, and torch_stats computes those. Raw
rows have torch_stats' layout (RAW, then the histogram counts), so everything
downstream is shared.
"""

from __future__ import annotations

import numpy as np
import torch

from weighttui.record import kernel

UNAVAILABLE = kernel.UNAVAILABLE

_CODES = {torch.float32: kernel.F32, torch.float16: kernel.F16, torch.bfloat16: kernel.BF16,
          torch.float64: kernel.F64}


def available() -> bool:
    return kernel.available()


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_F64 = kernel.code_of(np.float64) is not None  # a stale build reads no float64


def takes(t: torch.Tensor) -> bool:
    """Whether the kernel can read t in place (a plain, contiguous CPU tensor of a float dtype it knows)."""
    # cheapest tests first: this runs for every tensor, gradient and optimizer state of every snapshot
    return (type(t) in _PLAIN and t.dtype in _CODES and t.is_cpu and t.layout == torch.strided
            and (_F64 or t.dtype != torch.float64) and t.is_contiguous() and t.numel() > 0)


def takes_pair(x: torch.Tensor, prev: torch.Tensor) -> bool:
    """Whether prev can be the kernel's previous copy of x (written in place)."""
    return takes(prev) and prev.dtype == x.dtype and prev.numel() == x.numel()


def has_extras() -> bool:
    """Whether the built kernel computes instruments in its passes (kernel.Extras)."""
    return kernel.has_extras()


def _flat(t: torch.Tensor) -> np.ndarray:
    """A numpy view of t's memory (16-bit floats as their raw bits)."""
    t = t.detach().reshape(-1)
    return t.view(torch.int16).numpy() if t.element_size() == 2 else t.numpy()


flat = _flat


def rows(xs, prevs, bins: int, copy: bool, threads: int | None = None, extras=None):
    """Raw rows of xs (and of x - prev where prevs[i] is not None): kernel.run's.

    threads: how many threads share the tensors (default: torch's intra-op
    thread count, what torch's own ops would use while the training thread waits).
    extras: None or one kernel.Extras (x0 and states as flat() views) or None per tensor.
    """
    codes = bytes(_CODES[x.dtype] for x in xs)
    return kernel.run([_flat(x) for x in xs], [None if p is None else _flat(p) for p in prevs], codes, bins, copy,
                      torch.get_num_threads() if threads is None else int(threads), extras)
