"""FORMAT.md statistics of torch tensors, computed on the tensors' device.

The numpy functions in weighttui.record.stats are the reference; this module computes
the same numbers with torch ops where the tensors live, batched, and hands back
*raw aggregates* that are additive (or min/max) so that shards of one tensor
(FSDP, DTensor) can be combined by a collective before they are finalised:

    RAW row = n, m (finite count), lo, hi (finite extrema), c (shift),
              s1 = sum(x - c), s2 = sum((x - c)^2), asum = sum|x|,
              zeros, nan, inf, psq (delta only: sum prev^2) | hist counts [B]

The shift c (a value of the tensor) keeps the variance well conditioned
(sum((x-c)^2) does not cancel when |mean| >> std, e.g. LayerNorm weights near 1).

Fast path (all values finite, the usual case): per tensor (or per stack of
equally sized small tensors, one [k, L] matrix) a handful of reductions with
preallocated scratch buffers, results stacked on the device; the caller moves
every row to the host with one copy. Rows whose extrema or sums come back
non-finite are recomputed by the masked float64 slow path (a second copy, only
in a snapshot where some tensor holds NaN/Inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The raw row layout and its host-side finishing live in the framework-free core
# (the fused kernel's numpy interface uses them too); re-exported for the torch modules.
from weighttui.record.raw_rows import (  # noqa: F401
    _C,
    _HI,
    _LO,
    _PSQ,
    N_RAW,
    RAW,
    UNSHIFTED_LIMIT,
    cancelled,
    delta_rows,
    exact_delta_rows,
    hist_parts,
    needs_redo,
    needs_slow_path,
    remember_sumsq,
    sumsq,
    weight_rows,
)

# Tensors with fewer elements than this are stacked with others of the same size
# and reduced together (one op for k tensors instead of k ops each).
SMALL = 1 << 16
# Larger tensors are processed in slices of this many elements, so the scratch
# buffers stay bounded on a model with huge embeddings.
SLICE = 1 << 24
# hist_sample="auto" on the CPU: histogram at most about this many elements per tensor.
CPU_HIST_SAMPLE = 1 << 16
# A sampled histogram bins contiguous chunks of this many elements spread evenly
# over the tensor: a strided sample touches nearly every cache line of the tensor
# (measured on the CPU: as costly as a full read pass per tensor), chunks only
# the sampled bytes.
HIST_CHUNK = 256
# Sums of squares of one big tensor: float32 norms of rows of this many elements,
# combined in float64 (one read pass, no temporary; worst relative error measured
# 3e-8 against float64, where one float32 norm of millions of values is off by 4e-5).
NORM_ROW = 256


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32; float64 for float64, integers and bool."""
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    return torch.float64


def supported(t: torch.Tensor) -> bool:
    """Real numbers torch can reduce (not complex, not float8 storage types)."""
    return not t.is_complex() and "float8" not in str(t.dtype)


class Reducer:
    """Combines raw aggregates of the shards of each tensor; the identity when unsharded."""

    sharded = False

    def ranges(self, lo: torch.Tensor, hi: torch.Tensor, total: torch.Tensor, count: torch.Tensor):
        """Global (lo, hi, shift) per row from local extrema, sums and counts."""
        return lo, hi, None

    def sums(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw rows [R, N_RAW + B] summed over shards (lo/hi/c are already global)."""
        return raw

    def sum_vector(self, v: torch.Tensor) -> torch.Tensor:
        """A vector summed over shards (each rank filled in its own positions)."""
        return v


class Scratch:
    """Reusable flat buffers per (device, dtype): no allocation (and, on CPU, no
    page faults on fresh memory) per snapshot."""

    def __init__(self) -> None:
        self._bufs: dict = {}

    def get(self, slot: str, device, dtype, n: int) -> torch.Tensor:
        key = (slot, str(device), dtype)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(max(n, 1), dtype=dtype, device=device)
            self._bufs[key] = buf
        return buf[:n]

    def clear(self) -> None:
        self._bufs.clear()


@dataclass
class Work:
    """Rows of one kind to compute: weights/grads (x) or deltas (x - prev)."""

    xs: list  # tensors (local shards), any shape
    prevs: list | None = None  # for deltas: previous values, same shapes


class DeviceStats:
    """Raw aggregates of many tensors, batched, on their device(s)."""

    def __init__(self, bins: int, *, hist_sample: int | str | None = None, reducer: Reducer | None = None):
        self.bins = int(bins)
        self.hist_sample = hist_sample
        self.reducer = reducer or Reducer()
        self.scratch = Scratch()
        self._plans: dict = {}

    def hist_cap(self, device) -> int | None:
        """Most elements of one tensor that go into its histogram (None: all).

        "auto": all on accelerators; on the CPU, where counting into bins costs
        several reduction passes' worth per element, a strided sample of about
        CPU_HIST_SAMPLE elements of larger tensors (the format allows it; the
        counts then sum to less than the element count, shown as "sampled").
        """
        if isinstance(self.hist_sample, str):  # "auto", the one word watch() takes
            return CPU_HIST_SAMPLE if device.type == "cpu" else None
        return self.hist_sample

    # ------------------------------------------------------------ fast path

    def fast(self, work: Work) -> list:
        """Raw rows of every input on its device: [(rows [k, N_RAW + B] float64, input indices)].

        Unsharded, zero-size tensors are left out (the caller fills them from the
        reference). Sharded, every input gets a row (an empty local shard is a
        neutral row) and all rows come back as one group, reduced across ranks.
        """
        sharded = self.reducer.sharded
        keyed: dict[tuple, list[int]] = {}
        empties = []
        for i, x in enumerate(work.xs):
            n = x.numel()
            if n == 0:
                empties.append(i)
                continue
            cdt = compute_dtype(x.dtype)
            # Small tensors go into one [k, L] matrix per size class (L a power of 4,
            # shorter rows padded). Sharded: local shard sizes differ across ranks,
            # so no stacking (every rank must run the same collectives on the same rows).
            key = (x.device, cdt, _bucket(n)) if n < SMALL and not sharded else (x.device, cdt, n, i)
            keyed.setdefault(key, []).append(i)
        groups = [_Group(self, work, idx, key[0], key[1], key[2]) for key, idx in keyed.items()]
        if not work.xs:
            return []
        with torch.no_grad():
            if not sharded:
                sizes: dict = {}
                for g in groups:
                    key = g.batch_key()
                    if key is not None:
                        sizes[key] = sizes.get(key, 0) + 1
                # a batch key exists only where hist_cap() gave a cap (batch_key)
                batches = {key: _HistBatch(self, torch.device(key[0]), key[1], key[2],
                                           _sample_size(self.hist_cap(torch.device(key[0])) or 0), count)
                           for key, count in sizes.items()}
                out = []
                for g in groups:
                    r = g.rows(g.ranges(), batches)
                    if r is not None:
                        out.append((r, g.idx))
                return out + [b.finish() for b in batches.values()]
            return [self._sharded(work, groups, empties)]

    def _sharded(self, work, groups, empties):
        device = work.xs[0].device if work.xs else torch.device("cpu")
        r = len(work.xs)
        order = [i for g in groups for i in g.idx] + empties
        phase = [g.ranges(local_sums=True) for g in groups]
        for g in groups:
            g._whole = None  # later groups reused the scratch: recompute in rows()
        inf = torch.full((len(empties),), math.inf, dtype=torch.float64, device=device)
        zero = torch.zeros(len(empties), dtype=torch.float64, device=device)
        cols = [torch.cat([p[j].to(torch.float64).to(device) for p in phase] + [extra])
                for j, extra in ((0, inf), (1, -inf), (3, zero), (4, zero))]
        perm = torch.empty(r, dtype=torch.int64, device=device)
        perm[torch.tensor(order, dtype=torch.int64, device=device)] = torch.arange(r, device=device)
        lo, hi, total, count = (col[perm] for col in cols)
        lo, hi, c = self.reducer.ranges(lo, hi, total, count)
        rows = torch.zeros(r, N_RAW + self.bins, dtype=torch.float64, device=device)
        for g in groups:
            at = torch.tensor(g.idx, dtype=torch.int64, device=device)
            rows[at] = g.rows((lo[at].to(g.cdt), hi[at].to(g.cdt), c[at].to(g.cdt))).to(device)
        if empties:
            at = torch.tensor(empties, dtype=torch.int64, device=device)
            rows[at, _LO], rows[at, _HI], rows[at, _C] = lo[at], hi[at], c[at]
        return self.reducer.sums(rows), list(range(r))

    def _matrix(self, ts, cdt, slot, n, device) -> torch.Tensor:
        """[k, n] in the compute dtype: a view when possible, else into scratch."""
        if len(ts) == 1 and ts[0].dtype == cdt and ts[0].is_contiguous():
            return ts[0].reshape(1, n)
        buf = self.scratch.get(slot, device, cdt, len(ts) * n).view(len(ts), n)
        if len(ts) == 1:
            buf[0].copy_(ts[0].reshape(-1))
        elif all(t.dtype == cdt for t in ts):
            torch.stack([t.reshape(-1) for t in ts], out=buf)
        else:
            buf.copy_(torch.stack([t.reshape(-1) for t in ts]))
        return buf

    def _moments(self, m, lo, hi, c, device, cdt, stride, start, exact_edges=False,
                 with_hist=True, unshifted=False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([k, 4 + B] float64: s1, s2, asum, nonzero count, hist counts of m [k, L]
        (only the first 4 columns without with_hist), each row's first element's bin or None).

        c None (deltas: no mean or std to report): s1 = 0 and s2 = sum(m^2),
        two passes fewer than the shifted sums. unshifted (one row, c == 0):
        s1 = sum(m), s2 = sum(m^2), no temporary (see UNSHIFTED_LIMIT).
        """
        k, L = m.shape
        tmp = self.scratch.get("tmp", device, cdt, k * L).view(k, L)
        # k == 1: whole-tensor reductions (the dim=1 kernels are slower on CPU)
        red = (lambda t: t.sum().view(1)) if k == 1 else (lambda t: t.sum(1))
        # torch's CPU sum is pairwise: ~1e-7 relative in float32
        if k == 1:
            # one tensor: the sum of squares without a squared temporary (see NORM_ROW)
            if c is None or unshifted:
                s2 = _sumsq(m.reshape(-1)).view(1)
                s1 = red(m).to(s2.dtype) if unshifted else torch.zeros_like(s2)
            else:
                torch.sub(m, _operand(c, k, cdt), out=tmp)
                s1 = red(tmp)
                s2 = _sumsq(tmp.reshape(-1)).view(1)
        elif c is None:
            torch.mul(m, m, out=tmp)
            s2 = red(tmp)
            s1 = torch.zeros_like(s2)
        else:
            torch.sub(m, _operand(c, k, cdt), out=tmp)
            s1 = red(tmp)
            torch.mul(tmp, tmp, out=tmp)
            s2 = red(tmp)
        torch.abs(m, out=tmp)
        asum = red(tmp)
        # sign(|x|) is 1 where x != 0: the count as a sum (count_nonzero is several
        # times slower on the CPU); exact, since a slice has at most SLICE < 2^24
        # elements (NaN stays NaN, and its row is redone by the masked path)
        tmp.sign_()
        nz = red(tmp)
        head = torch.stack([s1.double(), s2.double(), asum.double(), nz.double()], 1)
        if not with_hist:
            return head, None
        counts, first = self._hist(m, lo, hi, device, cdt, stride, start, exact_edges)
        return torch.cat([head, counts.double()], 1), first

    def _hist(self, m, lo, hi, device, cdt, stride, start,
              exact_edges=False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Counts [k, B] of m's rows in B equal bins over [lo, hi] (numpy.histogram's
        bins, last one closed; every value in bin B // 2 when lo == hi). With a stride,
        every stride-th element (counted from the tensor's start) is binned.

        The bin is (x - lo) * B / (hi - lo) in the compute dtype. numpy compares
        with float64 edges instead; with exact_edges the same comparison is made
        here (edges rounded up to the compute dtype, which for values of that dtype
        is the same test), so the counts equal numpy's. That matters for quantised
        values (bfloat16, float16, integers) where many equal values sit on one
        edge; for float32 values a value lands one bin over only when it is within
        float32 rounding of an edge, so the cheaper plain binning is used.
        """
        bins = self.bins
        if stride > 1:
            m = m[:, (-start) % stride::stride]
        k, L = m.shape
        if L == 0:
            return torch.zeros(k, bins, dtype=torch.int64, device=device), None
        span = (hi - lo).to(cdt)
        pos = span > 0
        scale = torch.where(pos, bins / span, torch.zeros_like(span))  # lo == hi: all in bin 0, moved below
        t = self.scratch.get("tmp2", device, cdt, k * L).view(k, L)
        it = self.scratch.get("idx", device, torch.int32, k * L).view(k, L)
        torch.sub(m, _operand(lo, k, cdt), out=t)
        t.mul_(_operand(scale, k, cdt))
        it.copy_(t)  # truncation toward zero: floor for these non-negative values
        # x == hi gives index B: one overflow column per row, folded into the last
        # bin after counting (cheaper than clamping every index). A NaN converts to
        # a negative index: an error for bincount (recovered from below; its row is
        # redone by the masked path), undefined for gathers and atomics, so those
        # paths clamp first.
        width = bins + 1
        careful = exact_edges or device.type != "cpu"
        if careful:
            it.clamp_(0, bins - 1)
        if exact_edges:
            rows = torch.arange(k, device=device, dtype=torch.int32)
            self._snap_to_edges(m, it, lo, hi, rows, cdt, device)
        base = (torch.arange(k, device=device, dtype=torch.int32) * width)[:, None]
        if k > 1:
            it.add_(base)
        try:
            counts = _count(it.view(-1), k * width)
        except RuntimeError:
            if careful:
                raise
            if k > 1:
                it.sub_(base)
            it.clamp_(0, bins)
            if k > 1:
                it.add_(base)
            counts = _count(it.view(-1), k * width)
        counts = counts.view(k, width)
        counts = counts[:, :bins] + torch.nn.functional.pad(counts[:, bins:], (bins - 1, 0))
        centred = torch.zeros_like(counts)
        centred[:, bins // 2] = counts.sum(1)
        # the final bin of each row's first element (padding repeats it: see _Group)
        first = (it[:, 0] - base[:, 0] if k > 1 else it[:, 0]).long().clamp(0, bins - 1)
        first = torch.where(pos, first, bins // 2)
        return torch.where(pos[:, None], counts, centred), first

    def _snap_to_edges(self, m, it, lo, hi, rows, cdt, device) -> None:
        """numpy.histogram's correction: move a bin index down if x < its lower
        edge, up if x >= its upper edge (edges as np.linspace(lo, hi, B + 1))."""
        bins = self.bins
        lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
        step = (hi64 - lo64) / bins
        e64 = torch.arange(bins + 1, dtype=torch.float64, device=device)[None, :] * step[:, None] + lo64[:, None]
        e64[:, -1] = hi64
        e = e64.to(cdt)
        if cdt != torch.float64:  # round up: x < e64 <=> x < e for x of this dtype
            e = torch.where(e < e64, torch.nextafter(e, torch.full_like(e, float("inf"))), e)
        table = e.reshape(-1)
        base = (rows * (bins + 1))[:, None]
        it.add_(base)
        lower = table.index_select(0, it.view(-1)).view_as(m)
        it.sub_((m < lower).to(torch.int32))
        upper = table.index_select(0, (it + 1).view(-1)).view_as(m)
        it.sub_(base)
        it.add_(((m >= upper) & (it != bins - 1)).to(torch.int32))
        it.clamp_(0, bins - 1)

    # ------------------------------------------------------------ slow path

    def masked(self, work: Work, rows) -> torch.Tensor:
        """Raw rows of the chosen inputs, finite elements only, in float64.

        For tensors holding NaN/Inf (or sums that overflowed float32). Returns a
        [len(rows), N_RAW + B] float64 tensor on the CPU.
        """
        out = []
        with torch.no_grad():
            parts = []
            for i in rows:
                x = work.xs[i].detach().reshape(-1).to(torch.float64)
                if work.prevs is None:
                    nan = torch.isnan(x).sum()
                    inf = torch.isinf(x).sum()
                    zeros = (x == 0).sum()
                    fin = x[torch.isfinite(x)]
                    psq = torch.zeros((), dtype=torch.float64, device=x.device)
                else:
                    p = work.prevs[i].detach().reshape(-1).to(torch.float64)
                    both = torch.isfinite(x) & torch.isfinite(p)
                    fin = (x - p)[both]
                    pb = p[both]
                    psq = (pb * pb).sum()
                    nan = torch.zeros((), dtype=torch.int64, device=x.device)
                    inf = nan
                    zeros = (fin == 0).sum()
                parts.append((x.numel(), fin, zeros, nan, inf, psq))
            # ranges first (all of them, so a sharded reducer can agree on them)
            mins_: list[torch.Tensor] = []
            maxs_: list[torch.Tensor] = []
            sums: list[torch.Tensor] = []
            counts: list[torch.Tensor] = []
            for _n, fin, *_ in parts:
                if fin.numel():
                    mn, mx = torch.aminmax(fin)
                else:
                    mn = torch.tensor(math.inf, dtype=torch.float64, device=fin.device)
                    mx = -mn
                mins_.append(mn)
                maxs_.append(mx)
                sums.append(fin.sum())
                counts.append(torch.tensor(float(fin.numel()), dtype=torch.float64, device=fin.device))
            if not parts:
                return torch.zeros(0, N_RAW + self.bins, dtype=torch.float64)
            dev = parts[0][1].device
            mins = torch.stack([t.to(dev) for t in mins_])
            maxs = torch.stack([t.to(dev) for t in maxs_])
            shift = None
            if self.reducer.sharded:
                mins, maxs, shift = self.reducer.ranges(mins, maxs, torch.stack([t.to(dev) for t in sums]),
                                                        torch.stack([t.to(dev) for t in counts]))
            for j, (n, fin, zeros, nan, inf, psq) in enumerate(parts):
                lo, hi = mins[j].to(fin.device), maxs[j].to(fin.device)
                if shift is not None:
                    c = shift[j].to(fin.device)
                elif fin.numel():
                    c = fin[0]
                else:
                    c = torch.zeros((), dtype=torch.float64, device=fin.device)
                if fin.numel():
                    t = fin - c
                    s1, s2, asum = t.sum(), (t * t).sum(), fin.abs().sum()
                    counts_ = self._hist(fin.view(1, -1), lo.view(1), hi.view(1), fin.device,
                                         torch.float64, 1, 0, exact_edges=True)[0][0]
                else:
                    s1 = s2 = asum = torch.zeros((), dtype=torch.float64, device=fin.device)
                    counts_ = torch.zeros(self.bins, dtype=torch.int64, device=fin.device)
                head = torch.stack([
                    torch.tensor(float(n), dtype=torch.float64, device=fin.device),
                    torch.tensor(float(fin.numel()), dtype=torch.float64, device=fin.device),
                    lo, hi, c.to(torch.float64), s1, s2, asum,
                    zeros.to(torch.float64), nan.to(torch.float64), inf.to(torch.float64), psq])
                out.append(torch.cat([head, counts_.to(torch.float64)]).to(dev))
        raw = torch.stack(out)
        if self.reducer.sharded:
            raw = self.reducer.sums(raw)
        return raw.cpu()


def _sumsq(v: torch.Tensor) -> torch.Tensor:
    """sum(v^2) of a flat tensor as a 0-d float64: float32 (or float64) norms of
    NORM_ROW-element rows, squared and added in float64; the rest added exactly."""
    n = v.numel()
    r = n // NORM_ROW
    tail = v[r * NORM_ROW:]
    s = torch.linalg.vector_norm(v[:r * NORM_ROW].view(r, NORM_ROW), dim=1).double().square().sum()
    if tail.numel():
        s = s + tail.double().square().sum()
    return s


def _sample_size(cap: int) -> int:
    chunk, starts = _chunk_plan(cap + 1, cap)
    return chunk * len(starts)


def _chunk_plan(n: int, cap: int):
    """(chunk length, chunk starts) of a sampled histogram: about cap elements of a
    tensor of n > cap elements, as contiguous chunks spread evenly from its start
    to its end (every tensor over the cap yields the same number of elements)."""
    chunk = HIST_CHUNK if cap >= 16 * HIST_CHUNK else max(1, cap // 16)
    count = max(1, cap // chunk)
    if count == 1:
        return chunk, [0]
    return chunk, [j * (n - chunk) // (count - 1) for j in range(count)]


class _HistBatch:
    """Sampled histograms of many big tensors, binned together as one [T, S] matrix.

    Each tensor's chunk sample is copied into a row as soon as its moments are
    taken (deltas live in scratch that the next tensor reuses); finish() bins all
    rows with one index computation and one count, and returns the raw rows of
    those tensors as one group.
    """

    def __init__(self, eng: DeviceStats, device, cdt, exact_edges: bool, size: int, total: int):
        self.eng, self.device, self.cdt, self.exact_edges = eng, device, cdt, exact_edges
        self.size = size  # sample elements per tensor
        self.mat = eng.scratch.get(f"hist-batch-{exact_edges}", device, cdt, total * size).view(total, size)
        self.heads: list[torch.Tensor] = []
        self.los: list[torch.Tensor] = []
        self.his: list[torch.Tensor] = []
        self.idx: list[int] = []

    def add(self, m: torch.Tensor, gather: torch.Tensor, head, lo, hi, idx) -> None:
        torch.index_select(m.reshape(-1), 0, gather, out=self.mat[len(self.heads)])
        self.heads.append(head)
        self.los.append(lo.reshape(1))
        self.his.append(hi.reshape(1))
        self.idx.extend(idx)

    def finish(self):
        t = len(self.heads)
        lo, hi = torch.cat(self.los), torch.cat(self.his)
        counts, _ = self.eng._hist(self.mat[:t], lo, hi, self.device, self.cdt, 1, 0, self.exact_edges)
        return torch.cat([torch.cat(self.heads), counts.double()], 1), self.idx


def _operand(v: torch.Tensor, k: int, cdt) -> torch.Tensor | float:
    """A per-row value for an elementwise op over [k, L]: a Python number when
    there is one row on the CPU (torch's scalar kernels are several times faster
    than broadcasting a tensor, and reading a CPU value costs no synchronisation),
    else a [k, 1] tensor."""
    if k == 1 and v.device.type == "cpu":
        return v.reshape(-1)[0].item()
    return v.to(cdt)[:, None]


def _bucket(n: int) -> int:
    """The row length for a small tensor of n elements: the power of 4 >= n."""
    b = 1
    while b < n:
        b *= 4
    return b


def _odd_prime_at_least(n: int) -> int:
    """A prime stride: a strided sample of a [rows, cols] matrix then visits every
    column (unless cols is a multiple of it), instead of the same few columns."""
    n = max(3, n)
    while any(n % d == 0 for d in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


def _count(index: torch.Tensor, size: int) -> torch.Tensor:
    """Occurrences of each value in 0..size-1. bincount on the CPU; on an
    accelerator scatter_add_, since bincount there reads its maximum back to
    the host (a synchronisation per call)."""
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=size)
    out = torch.zeros(size, dtype=torch.int64, device=index.device)
    ones = torch.ones(1, dtype=torch.int64, device=index.device).expand(index.numel())
    return out.scatter_add_(0, index.long(), ones)


class _Group:
    """k small tensors as the rows of one [k, L] matrix, or one big tensor as [1, n]
    processed in slices.

    Rows shorter than L are padded with copies of their first element v: that
    changes no extremum, adds nothing to the shifted sums (the shift is v), and
    its contributions to sum|x|, the nonzero count, sum(d^2) and v's bin are
    taken back out per row (npad * ...), exactly.
    """

    def __init__(self, eng: DeviceStats, work: Work, idx, device, cdt, n):
        self.eng, self.idx, self.device, self.cdt, self.n = eng, idx, device, cdt, n
        self.k = len(idx)
        self.xs = [work.xs[i].detach() for i in idx]
        self.prevs = None if work.prevs is None else [work.prevs[i] for i in idx]
        self.sizes = [t.numel() for t in self.xs]
        self.padded = any(size != n for size in self.sizes)
        self.slices = [(a, min(n, a + SLICE)) for a in range(0, n, SLICE)]
        self._whole: torch.Tensor | None = None
        # quantised values (and anything computed in float64): numpy's exact bin edges
        self.exact_edges = cdt == torch.float64 or any(t.dtype in (torch.float16, torch.bfloat16) for t in self.xs)

    def _pad_plan(self):
        """(gather index [k * L] into the concatenated tensors, npad [k]), cached."""
        key = ("pad", self.device, self.n, tuple(self.sizes))
        plan = self.eng._plans.get(key)
        if plan is None:
            L = self.n
            sizes = torch.tensor(self.sizes, dtype=torch.int64)
            starts = torch.cumsum(sizes, 0) - sizes
            j = torch.arange(L, dtype=torch.int64)[None, :]
            gidx = starts[:, None] + torch.where(j < sizes[:, None], j, torch.zeros_like(j))
            plan = (gidx.reshape(-1).to(self.device), (L - sizes).to(torch.float64).to(self.device))
            if len(self.eng._plans) > 256:
                self.eng._plans.clear()
            self.eng._plans[key] = plan
        return plan

    def _matrix(self, ts, slot):
        if not self.padded:
            return self.eng._matrix(ts, self.cdt, slot, self.n, self.device)
        gidx, _ = self._pad_plan()
        flat = torch.cat([t.reshape(-1) for t in ts]).to(self.cdt)
        out = self.eng.scratch.get(slot, self.device, self.cdt, self.k * self.n)
        return torch.index_select(flat, 0, gidx, out=out).view(self.k, self.n)

    def part(self, a: int, b: int) -> torch.Tensor:
        """Columns a:b of the matrix: the values, or the differences for deltas."""
        eng, cdt, n, dev = self.eng, self.cdt, self.n, self.device
        if self.prevs is None:
            if len(self.slices) == 1:
                return self._matrix(self.xs, "x")
            return self.xs[0].reshape(1, n)[:, a:b].to(cdt)
        if len(self.slices) == 1:
            x = self._matrix(self.xs, "x")
            p = self._matrix(self.prevs, "p")
            d = eng.scratch.get("d", dev, cdt, self.k * n).view(self.k, n)
            return torch.sub(x, p, out=d)
        d = eng.scratch.get("d", dev, cdt, b - a).view(1, b - a)
        d.copy_(self.xs[0].reshape(1, n)[:, a:b])
        return d.sub_(self.prevs[0].reshape(1, n)[:, a:b])

    def ranges(self, *, local_sums: bool = False):
        """(lo, hi, c, sum, count) per row; sum/count only when asked (sharded shift)."""
        los, his, sums = [], [], []
        for a, b in self.slices:
            m = self.part(a, b)
            if len(self.slices) == 1:
                self._whole = m  # reused by rows() when nothing ran in between
            if self.k == 1:
                mn, mx = torch.aminmax(m)
                mn, mx = mn.view(1), mx.view(1)
            else:
                mn, mx = torch.aminmax(m, dim=1)
            los.append(mn)
            his.append(mx)
            if local_sums:  # sharded: never padded (see fast())
                sums.append(m.sum(1, dtype=torch.float64))
        lo = los[0] if len(los) == 1 else torch.stack(los).amin(0)
        hi = his[0] if len(his) == 1 else torch.stack(his).amax(0)
        c = self.part(0, 1)[:, 0].clone() if self._whole is None else self._whole[:, 0].clone()
        total = torch.stack(sums).sum(0) if sums else None
        count = torch.tensor(self.sizes, dtype=torch.float64, device=self.device)
        return lo, hi, c, total, count

    def batch_key(self):
        """The _HistBatch this group's sampled histogram joins, or None (binned here):
        single tensors over the histogram cap, reduced in one slice."""
        cap = self.eng.hist_cap(self.device)
        if cap and self.k == 1 and not self.padded and self.n > cap and len(self.slices) == 1:
            return (str(self.device), self.cdt, self.exact_edges)
        return None

    def _gather(self, cap: int) -> torch.Tensor:
        """Flat indices of the chunk sample (see _chunk_plan), cached per size."""
        key = ("chunks", str(self.device), self.n, cap)
        plan = self.eng._plans.get(key)
        if plan is None:
            chunk, starts = _chunk_plan(self.n, cap)
            plan = (torch.tensor(starts, dtype=torch.int64)[:, None]
                    + torch.arange(chunk, dtype=torch.int64)[None, :]).reshape(-1).to(self.device)
            if len(self.eng._plans) > 256:
                self.eng._plans.clear()
            self.eng._plans[key] = plan
        return plan

    def rows(self, rng, batches=None) -> torch.Tensor | None:
        """Raw rows [k, N_RAW + B]; None when the histogram went to a _HistBatch
        (in `batches`, keyed by batch_key()), which then returns the rows."""
        lo, hi, c = rng[0], rng[1], rng[2]
        if self.prevs is not None:
            c = None  # deltas: unshifted sums of squares (see _moments)
        eng = self.eng
        # one big CPU tensor, unsharded (batches given): sums about 0, see
        # UNSHIFTED_LIMIT (small ones are cheap, and scalars or constants would
        # always be recomputed)
        unshifted = (batches is not None and c is not None and self.k == 1 and self.n >= SMALL
                     and not self.padded and self.device.type == "cpu")
        if unshifted:
            c = torch.zeros_like(c)
        key = self.batch_key() if batches is not None else None
        if key is not None:
            m = self._whole if self._whole is not None else self.part(0, self.n)
            acc, _ = eng._moments(m, lo, hi, c, self.device, self.cdt, 1, 0, with_hist=False,
                                  unshifted=unshifted)
            self._whole = None
            batch = batches[key]
            batch_cap = eng.hist_cap(self.device) or 0  # batch_key() gave a key: there is a cap
            batch.add(m, self._gather(batch_cap), self._head(lo, hi, c, acc), lo, hi, self.idx)
            return None
        stride = 1
        cap = eng.hist_cap(self.device)
        if cap and self.k == 1 and not self.padded and self.n > cap:
            # (a padded row is a small tensor: binned whole) several slices (or a shard):
            # a strided sample, counted from the tensor's start
            stride = _odd_prime_at_least(-(-self.n // cap))
        summed: torch.Tensor | None = None
        for a, b in self.slices:
            m = self._whole if self._whole is not None else self.part(a, b)
            r, first = eng._moments(m, lo, hi, c, self.device, self.cdt, stride, a, self.exact_edges,
                                    unshifted=unshifted)
            summed = r if summed is None else summed + r
        assert summed is not None  # a group's tensors are not empty: at least one slice
        acc = summed
        counts = acc[:, 4:]
        if self.padded:
            _, npad = self._pad_plan()
            v = m[:, 0].to(torch.float64)  # the padding value of each row
            acc = acc[:, :4].clone()
            if c is None:
                acc[:, 1] -= npad * v * v
            acc[:, 2] -= npad * v.abs()
            acc[:, 3] -= npad * (v != 0)
            counts = counts.clone()
            counts[torch.arange(self.k, device=self.device), first] -= npad
        self._whole = None
        return torch.cat([self._head(lo, hi, c, acc), counts], dim=1)

    def _head(self, lo, hi, c, acc) -> torch.Tensor:
        """The N_RAW head columns [k, N_RAW] from the extrema, shift and moments."""
        s1, s2, asum, nz = acc[:, 0], acc[:, 1], acc[:, 2], acc[:, 3]
        z = torch.zeros_like(s1)
        nn = torch.tensor(self.sizes, dtype=torch.float64, device=self.device)
        cc = z if c is None else c.to(torch.float64)
        return torch.stack([nn, nn, lo.to(torch.float64), hi.to(torch.float64), cc,
                            s1, s2, asum, nn - nz, z, z, z], dim=1)
