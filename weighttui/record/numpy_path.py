"""Statistics blocks of numpy arrays (`Recorder.snapshot`), with the previous values their deltas compare against."""

from __future__ import annotations

import numpy as np

from weighttui.log.records import TensorInfo
from weighttui.record.stats import DELTA_STATS, Block, delta_row, delta_stats, empty_block, grad_block, weights_block


def to_numpy(x) -> np.ndarray:
    """Array-likes (numpy, TF eager tensors, CPU torch tensors ...) as numpy.

    bfloat16 arrays (ml_dtypes) become float32; stats are taken in float64 anyway.
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
    if arr.dtype.kind not in "biuf":
        if "bfloat16" in str(arr.dtype):
            arr = arr.astype(np.float32)
        else:
            raise TypeError(f"cannot record dtype {arr.dtype}")
    return arr


class NumpyStats:
    """Weights, delta, gradient blocks and samples of host arrays.

    delta_policy: "exact" (previous copies, delta histograms), "sample" (the
    sampled elements only) or "off".
    """

    def __init__(self, bins: int, delta_policy: str):
        self.bins = bins
        self.delta_policy = delta_policy
        self._prev: dict[int, np.ndarray] = {}  # tensor id -> previous values (or samples)

    def weights(self, arrays: list[np.ndarray]) -> Block:
        return weights_block(arrays, self.bins)

    def grads(self, names: list[str], grads: dict) -> Block | None:
        """The gradient block over `names` (grads: name -> array-like; missing rows uncovered)."""
        wanted = {str(k): v for k, v in grads.items()}
        return grad_block(names, {n: to_numpy(wanted[n]) for n in names if n in wanted}, self.bins)

    def previous(self, info: TensorInfo) -> np.ndarray | None:
        """The exact previous values of a tensor, if kept (before delta() replaces them)."""
        return self._prev.get(info.id) if self.delta_policy == "exact" else None

    def delta(self, infos: list[TensorInfo], arrays: list[np.ndarray]) -> Block | None:
        """Update statistics against the previous call's values, which these replace."""
        if self.delta_policy == "off":
            return None
        exact = self.delta_policy == "exact"
        block = empty_block(DELTA_STATS, len(infos), self.bins if exact else None)
        for i, (info, arr) in enumerate(zip(infos, arrays)):
            if exact:
                prev = self._prev.get(info.id)
                if prev is not None:
                    row, lo, hi, counts = delta_row(arr, prev, self.bins)
                    block.stats[i] = row
                    assert block.hist is not None
                    block.hist[0][i], block.hist[1][i], block.hist[2][i] = lo, hi, counts
                self._prev[info.id] = np.array(arr, copy=True)
            elif info.sample_index is not None:
                now = arr.reshape(-1)[info.sample_index]
                prev = self._prev.get(info.id)
                if prev is not None:
                    block.stats[i] = delta_stats(now, prev, exact=False, total=info.size)
                self._prev[info.id] = np.array(now, copy=True)
        return block

    @staticmethod
    def samples(infos: list[TensorInfo], arrays: list[np.ndarray]) -> np.ndarray | None:
        """The sampled elements of every tensor, concatenated in infos order (float32)."""
        parts = [a.reshape(-1)[i.sample_index] for i, a in zip(infos, arrays) if i.sample_index is not None]
        if not parts:
            return None
        return np.concatenate(parts).astype(np.float32)
