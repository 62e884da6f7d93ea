"""torch.distributed for the torch integration: who writes, and sharded tensors.

Replicated training (DDP): every rank holds the same parameters, so rank 0
records and the others do nothing. Sharded training (FSDP2 `fully_shard`,
DTensor parameters): every rank computes raw aggregates of its local shard and
they are reduced over the mesh's process group (extrema with MIN/MAX, the rest
with SUM, the histogram range agreed before binning); rank 0 writes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from weighttui.integrations.torch_stats import _C, _HI, _LO, Reducer

try:  # torch >= 2.4 (public); DTensor support is off without it
    from torch.distributed.tensor import DTensor, Shard
    HAS_DTENSOR = True
except ImportError:  # pragma: no cover - old torch
    HAS_DTENSOR = False


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def is_dtensor(t) -> bool:
    return HAS_DTENSOR and isinstance(t, DTensor)


def shardable(t) -> bool:
    """A DTensor whose shards this module reduces itself: a 1-D mesh, Shard placement.

    Other layouts (Replicate on some mesh dimension, 2-D meshes) are gathered
    with full_tensor() instead, which is correct but costs the memory of the tensor.
    """
    if not is_dtensor(t):
        return False
    placements = t.placements
    return t.device_mesh.ndim == 1 and len(placements) == 1 and isinstance(placements[0], Shard)


def local(t):
    """The part of t this rank holds (the tensor itself unless it is a DTensor)."""
    if is_dtensor(t):
        return t.to_local() if shardable(t) else t.full_tensor()
    return t


def full(t):
    """The whole tensor (a collective for DTensors: every rank must call it)."""
    return t.full_tensor() if is_dtensor(t) else t


def local_sample_positions(t, flat_index: np.ndarray):
    """For a sharded DTensor: (positions in the sample that this rank holds, their
    flat indices in the local shard). For any other tensor: all of them, unchanged."""
    if not shardable(t):
        return np.arange(flat_index.size), flat_index
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape = tuple(t.shape)
    lshape, offset = compute_local_shape_and_global_offset(shape, t.device_mesh, t.placements)
    coords = np.stack(np.unravel_index(flat_index, shape), axis=0) if shape else np.zeros((0, flat_index.size), int)
    lo = np.asarray(offset, dtype=np.int64)[:, None]
    hi = lo + np.asarray(lshape, dtype=np.int64)[:, None]
    inside = np.all((coords >= lo) & (coords < hi), axis=0) if shape else np.ones(flat_index.size, bool)
    pos = np.nonzero(inside)[0]
    if pos.size == 0:
        return pos, np.zeros(0, dtype=np.int64)
    local_flat = np.ravel_multi_index(tuple(coords[:, pos] - lo), tuple(lshape))
    return pos, local_flat.astype(np.int64)


class ShardReducer(Reducer):
    """Reduces raw aggregates over a process group (the sharded parameters' mesh)."""

    sharded = True

    def __init__(self, group=None):
        self.group = group
        self.rank = dist.get_rank(group)

    def ranges(self, lo, hi, total, count):
        ext = torch.cat([-lo.to(torch.float64), hi.to(torch.float64)])
        # NaN must win (it marks a row for the masked path on every rank); MAX
        # in gloo/NCCL does not promise that, so NaN is carried as a flag.
        bad = torch.isnan(ext)
        ext = torch.where(bad, torch.full_like(ext, float("inf")), ext)
        sums = torch.cat([total.to(torch.float64), count.to(torch.float64), bad.to(torch.float64)])
        dist.all_reduce(ext, op=dist.ReduceOp.MAX, group=self.group)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.group)
        r = lo.numel()
        glo, ghi = -ext[:r], ext[r:]
        t, c, nbad = sums[:r], sums[r:2 * r], sums[2 * r:]
        nan = torch.full_like(glo, float("nan"))
        glo = torch.where(nbad[:r] > 0, nan, glo)
        ghi = torch.where(nbad[r:] > 0, nan, ghi)
        shift = torch.where(c > 0, t / c.clamp_min(1), torch.zeros_like(t))
        return glo, ghi, shift

    def sums(self, raw):
        raw = raw.clone()
        if self.rank != 0:  # lo/hi/c are already global: count them once
            raw[:, [_LO, _HI, _C]] = 0
        dist.all_reduce(raw, op=dist.ReduceOp.SUM, group=self.group)
        return raw

    def sum_vector(self, v: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(v, op=dist.ReduceOp.SUM, group=self.group)
        return v
