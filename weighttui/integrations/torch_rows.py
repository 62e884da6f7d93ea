"""Who computes a snapshot's raw rows: the fused CPU kernel (torch_native) for the
tensors it takes, torch_stats' device ops for the others.

Raw rows have torch_stats' layout either way (RAW, then the histogram counts),
so everything downstream is shared and the numbers do not depend on the route.
"""

from __future__ import annotations

import numpy as np

from weighttui.integrations import torch_native
from weighttui.integrations.torch_stats import N_RAW, DeviceStats, Work, needs_redo


class Rows:
    """The raw rows of one Work while a snapshot is taken: those the fused kernel
    computed (already on the host, final) and torch_stats' device parts for the
    others, filled in from the snapshot's one host copy."""

    __slots__ = ("work", "raw", "final", "parts")

    def __init__(self, work: Work, raw: np.ndarray, final: np.ndarray, parts: list):
        self.work, self.raw, self.final, self.parts = work, raw, final, parts

    def fill(self, host: list, k: int) -> int:
        """Copy this Work's parts from host[k:]; returns the index after them."""
        for _p, idx in self.parts:
            self.raw[idx] = host[k]
            k += 1
        return k


class RowRouter:
    """Starts raw rows, each tensor on its route.

    The fused kernel computes what it can: not when sharded (the rows are
    reduced across ranks), nor with an explicit hist_sample (it bins every
    element), nor with cpu_kernel="torch" or without the built kernel.
    """

    def __init__(self, engine: DeviceStats, *, cpu_kernel: str, sharded: bool):
        self.engine = engine
        # "fused": CPU tensors go through weighttui._fastats when it is built
        self.cpu_kernel = "fused" if cpu_kernel == "fused" and torch_native.available() else "torch"
        self.uses_kernel = (self.cpu_kernel == "fused" and not sharded
                            and engine.hist_sample in (None, "auto"))

    def takes(self, x) -> bool:
        """Whether the fused kernel computes x's rows (and so the instruments it is given for x)."""
        return self.uses_kernel and torch_native.takes(x)

    def takes_pair(self, x, prev) -> bool:
        """Whether the kernel computes the delta x - prev (prev: its previous copy, written in place)."""
        return self.takes(x) and prev is not None and torch_native.takes_pair(x, prev)

    def rows(self, xs, prevs=None, extras=None) -> tuple[Rows, Rows | None, list[int]]:
        """Start the raw rows of xs and, where prevs[i] is not None, of the delta
        xs[i] - prevs[i]: (Rows of xs, Rows of the deltas in the order of their
        i or None without prevs, the indices i whose prev now holds x).

        The fused kernel takes the CPU tensors it can, and copies each x into its
        prev as it computes the delta; torch_stats takes the others (device parts,
        moved to the host with the snapshot's one copy). extras: None or per x a
        kernel.Extras (only where takes(x); filled in place) or None.
        """
        n = len(xs)
        d_at = [] if prevs is None else [i for i, p in enumerate(prevs) if p is not None]
        width = N_RAW + self.engine.bins
        raw_w, final_w = np.zeros((n, width)), np.zeros(n, dtype=bool)
        raw_d, final_d = np.zeros((len(d_at), width)), np.zeros(len(d_at), dtype=bool)
        copied = []
        if self.uses_kernel and n:
            mine = [i for i, x in enumerate(xs) if torch_native.takes(x)]
            if mine:
                mine_prevs = [None if prevs is None or prevs[i] is None
                              or not torch_native.takes_pair(xs[i], prevs[i]) else prevs[i] for i in mine]
                rw, rd, w_done, d_done = torch_native.rows([xs[i] for i in mine], mine_prevs,
                                                            self.engine.bins, copy=True,
                                                            extras=None if extras is None else
                                                            [extras[i] for i in mine])
                at = np.asarray(mine)
                raw_w[at[w_done]] = rw[w_done]
                final_w[at[w_done]] = True
                if d_at:
                    pos = {i: j for j, i in enumerate(d_at)}
                    for k in np.nonzero(d_done)[0]:
                        j = pos[int(at[k])]
                        raw_d[j] = rd[k]
                        final_d[j] = True
                        copied.append(int(at[k]))
        w = self._finish(Work(list(xs)), raw_w, final_w)
        d = None
        if prevs is not None:
            d = self._finish(Work([xs[i] for i in d_at], [prevs[i] for i in d_at]), raw_d, final_d)
        return w, d, copied

    def _finish(self, work: Work, raw: np.ndarray, final: np.ndarray) -> Rows:
        """torch_stats starts the rows the kernel did not do."""
        n = len(work.xs)
        rest = np.nonzero(~final)[0]
        parts = []
        if rest.size:
            sub = work if rest.size == n else Work([work.xs[i] for i in rest],
                                                   None if work.prevs is None else [work.prevs[i] for i in rest])
            parts = [(p, rest[np.asarray(idx, dtype=np.int64)]) for p, idx in self.engine.fast(sub)]
        return Rows(work, raw, final, parts)

    def redo(self, rows: Rows) -> None:
        """The rare masked pass: tensors holding NaN/Inf (or float32 overflow).

        Sharded, every rank holds the same reduced rows, so every rank picks the
        same ones and the masked pass's collectives match. The kernel's rows are
        final (it hands back what it cannot do exactly).
        """
        bad = np.nonzero(needs_redo(rows.raw) & ~rows.final)[0]
        if bad.size:
            rows.raw[bad] = self.engine.masked(rows.work, bad.tolist()).numpy()
