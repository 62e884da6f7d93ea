"""Statistics blocks of numpy arrays (`Recorder.snapshot`), with the previous values their deltas compare against.

Arrays the fused kernel reads (record/kernel.py: float32, float64, float16,
bfloat16; C-contiguous, all finite) get their weights rows, exact delta rows
and histograms from one kernel call per snapshot, which also copies each value
into its previous copy; everything else (NaN/Inf, integers, bool, a kernel
that is not built) goes through the numpy reference (record/stats.py). Both
give the same numbers: counts equal numpy.histogram's, statistics within
float32 tolerance of the float64 reference.
"""

from __future__ import annotations

import numpy as np

from weighttui.log.records import TensorInfo
from weighttui.record import kernel
from weighttui.record.raw_rows import _PSQ, delta_rows, hist_parts, weight_rows
from weighttui.record.stats import (
    DELTA_STATS,
    WEIGHT_STATS,
    Block,
    delta_row,
    delta_stats,
    empty_block,
    histogram,
    weight_stats,
)


def to_numpy(x) -> np.ndarray:
    """Array-likes (numpy, TF eager tensors, CPU torch tensors, jax.Array ...) as numpy, without a copy where
    the source allows it.

    bfloat16 arrays (ml_dtypes) stay bfloat16 (the kernel reads them; the
    reference path widens them to float32, exactly).
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        # torch: leave autograd, come to the host, and widen bfloat16 (numpy has none)
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            x = x.detach().cpu()
            if str(getattr(x, "dtype", "")) == "torch.bfloat16":
                x = x.float()
        try:
            x = x.numpy()
        except Exception:  # not convertible this way: np.asarray below has its go
            pass
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf" and not is_bfloat16(arr):
        raise TypeError(f"cannot record dtype {arr.dtype}")
    return arr


def is_bfloat16(arr: np.ndarray) -> bool:
    return arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2


def reference_view(arr: np.ndarray) -> np.ndarray:
    """arr as the numpy reference reads it: bfloat16 widened to float32 (exact), the rest as is."""
    return arr.astype(np.float32) if is_bfloat16(arr) else arr


class NumpyStats:
    """Weights, delta, gradient blocks and samples of host arrays.

    delta_policy: "exact" (previous copies, delta histograms), "sample" (the
    sampled elements only) or "off". threads: how many threads the kernel
    shares a snapshot's tensors among (whole tensors each).
    """

    def __init__(self, bins: int, delta_policy: str, *, threads: int = 1):
        self.bins = bins
        self.delta_policy = delta_policy
        self.threads = int(threads)
        self._prev: dict[int, np.ndarray] = {}  # tensor id -> previous values (or samples)

    # ------------------------------------------------------------ blocks

    def blocks(self, infos: list[TensorInfo], arrays: list[np.ndarray]) -> tuple[Block, Block | None]:
        """(weights block, delta block or None) of one snapshot; deltas are against the
        previous call's values, which these replace."""
        exact = self.delta_policy == "exact"
        prevs = [self._prev.get(info.id) for info in infos] if exact else [None] * len(infos)
        weights, delta, done = self._rows(arrays, prevs, with_delta=exact)
        if exact:
            for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
                if done[i]:
                    continue  # the kernel copied arr into the previous copy
                prev = prevs[i]
                if prev is not None and prev.shape == arr.shape:  # NaN/Inf, ints ...: the reference
                    assert delta is not None and delta.hist is not None
                    row, lo, hi, counts = delta_row(reference_view(arr), reference_view(prev), self.bins)
                    delta.stats[i] = row
                    delta.hist[0][i], delta.hist[1][i], delta.hist[2][i] = lo, hi, counts
                if prev is not None and prev.shape == arr.shape and prev.dtype == arr.dtype:
                    np.copyto(prev, arr)
                else:  # the first snapshot of this tensor (or a new dtype): its previous copy from now on
                    self._prev[info.id] = np.array(arr, copy=True, order="C")
        elif self.delta_policy == "sample":
            delta = self._sample_delta(infos, arrays)
        return weights, delta

    def weights(self, arrays: list[np.ndarray]) -> Block:
        """A WEIGHT_STATS block of arrays (no deltas)."""
        return self._rows(arrays, [None] * len(arrays), with_delta=False)[0]

    def grads(self, names: list[str], grads: dict) -> Block | None:
        """The gradient block over `names` (grads: name -> array-like; missing rows uncovered)."""
        wanted = {str(k): v for k, v in grads.items()}
        rows = [(i, to_numpy(wanted[n])) for i, n in enumerate(names) if n in wanted]
        if not rows:
            return None
        sub = self.weights([a for _i, a in rows])
        block = empty_block(WEIGHT_STATS, len(names), self.bins)
        assert block.hist is not None and sub.hist is not None
        at = np.array([i for i, _a in rows], dtype=np.int64)
        block.stats[at] = sub.stats
        for part, src in zip(block.hist, sub.hist, strict=True):
            part[at] = src
        return block

    def previous(self, info: TensorInfo) -> np.ndarray | None:
        """The exact previous values of a tensor, if kept (read them before blocks() or delta() replaces them)."""
        return self._prev.get(info.id) if self.delta_policy == "exact" else None

    def delta(self, infos: list[TensorInfo], arrays: list[np.ndarray]) -> Block | None:
        """Update statistics against the previous call's values, which these replace."""
        return self.blocks(infos, arrays)[1]

    # ------------------------------------------------------------ engines

    def _rows(self, arrays, prevs, *, with_delta: bool):
        """(weights Block, delta Block or None, done [T]: delta rows the kernel did, prev updated)."""
        t, bins = len(arrays), self.bins
        w = Block(WEIGHT_STATS, np.empty((t, len(WEIGHT_STATS))),
                  (np.empty(t), np.empty(t), np.zeros((t, bins), dtype=np.uint32)))
        d = empty_block(DELTA_STATS, t, bins) if with_delta else None
        w_done = np.zeros(t, dtype=bool)
        d_done = np.zeros(t, dtype=bool)
        # a strided view is copied once (cheaper than the reference's passes over it)
        ready = [a if a.flags.c_contiguous or not kernel.available() or kernel.code_of(a.dtype) is None
                 else np.ascontiguousarray(a) for a in arrays]
        mine = [i for i, a in enumerate(ready) if kernel.takes(a)]
        if mine:
            ps = [prevs[i] if prevs[i] is not None and prevs[i].dtype == arrays[i].dtype
                  and prevs[i].size == arrays[i].size and prevs[i].flags.c_contiguous else None for i in mine]
            raw_w, raw_d, wd, dd = kernel.rows([ready[i] for i in mine], ps, bins, copy=True,
                                               threads=self.threads)
            at = np.asarray(mine, dtype=np.int64)
            if wd.any():
                _put(w, at[wd], weight_rows(raw_w[wd]), hist_parts(raw_w[wd], bins))
                w_done[at[wd]] = True
            if d is not None and dd.any():
                _put(d, at[dd], delta_rows(raw_d[dd], raw_d[dd][:, _PSQ]), hist_parts(raw_d[dd], bins))
                d_done[at[dd]] = True
        assert w.hist is not None
        for i in np.nonzero(~w_done)[0]:
            ref = reference_view(arrays[i])
            w.stats[i] = weight_stats(ref)
            w.hist[0][i], w.hist[1][i], w.hist[2][i] = histogram(ref, bins)
        return w, d, d_done

    def _sample_delta(self, infos, arrays) -> Block:
        """delta="sample": update statistics from the sampled elements only."""
        block = empty_block(DELTA_STATS, len(infos), None)
        for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
            if info.sample_index is None:
                continue
            now = reference_view(arr.reshape(-1)[info.sample_index])
            prev = self._prev.get(info.id)
            if prev is not None:
                block.stats[i] = delta_stats(now, prev, exact=False, total=info.size)
            self._prev[info.id] = np.array(now, copy=True)
        return block

    @staticmethod
    def samples(infos: list[TensorInfo], arrays: list[np.ndarray]) -> np.ndarray | None:
        """The sampled elements of every tensor, concatenated in infos order (float32)."""
        parts = [a.reshape(-1)[i.sample_index] for i, a in zip(infos, arrays, strict=True)
                 if i.sample_index is not None]
        if not parts:
            return None
        return np.concatenate([p.astype(np.float32) for p in parts])


def value_copy(arr: np.ndarray):
    """A copy of arr for a values record: a numpy array, or ("bf16", uint16 bits) for bfloat16."""
    if is_bfloat16(arr):
        return ("bf16", np.array(arr.view(np.uint16), copy=True))
    return np.array(arr, copy=True)


def _put(block: Block, at: np.ndarray, stats: np.ndarray, hist) -> None:
    """Rows `at` of block from kernel rows."""
    assert block.hist is not None
    block.stats[at] = stats
    lo, hi, counts = hist
    block.hist[0][at], block.hist[1][at], block.hist[2][at] = lo, hi, counts
