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
    if type(x) is np.ndarray and x.dtype.kind in "fiub" and x.dtype.itemsize <= 8:  # the common case, first
        return x
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
    if (arr.dtype.kind not in "biuf" and not is_bfloat16(arr)) or arr.dtype.itemsize > 8:
        # longdouble (float96/float128): the log stores no float wider than float64 (docs/FORMAT.md); it
        # stopped the whole recording when its complete values were written, now only it is left out
        raise TypeError(f"cannot record dtype {arr.dtype}")
    return arr


def is_bfloat16(arr: np.ndarray) -> bool:
    return arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2


def is_float(arr: np.ndarray) -> bool:
    """A floating array, ml_dtypes' bfloat16 included (its dtype.kind is 'V', not 'f')."""
    return arr.dtype.kind == "f" or is_bfloat16(arr)


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
        weights, delta, _grad = self.snapshot(infos, arrays)
        return weights, delta

    def snapshot(self, infos: list[TensorInfo], arrays: list[np.ndarray],
                 grads: list | None = None) -> tuple[Block, Block | None, Block | None]:
        """(weights, delta or None, grad or None) blocks of one snapshot, from one kernel call.

        grads: None, or per row of infos an array (its gradient) or None (that
        row is not covered). Deltas are against the previous call's values,
        which these replace.
        """
        t = len(arrays)
        exact = self.delta_policy == "exact"
        prevs = [self._prev.get(info.id) for info in infos] if exact else [None] * t
        at = [] if grads is None else [i for i, g in enumerate(grads) if g is not None]
        xs = list(arrays) + [grads[i] for i in at] if at else arrays  # type: ignore[index]
        w_all, delta, done = self._rows(xs, prevs + [None] * len(at), with_delta=exact, t_delta=t)
        weights, grad = _split(w_all, 0, t), None
        if at:
            tail = _split(w_all, t, len(xs))
            if len(at) == t:
                grad = tail
            else:  # rows without a gradient stay 'not covered'
                grad = empty_block(WEIGHT_STATS, t, self.bins)
                _put(grad, np.asarray(at, dtype=np.int64), tail.stats, tail.hist)
        if exact:
            if not done.all():
                self._reference_deltas(infos, arrays, prevs, delta, done)
        elif self.delta_policy == "sample":
            delta = self._sample_delta(infos, arrays)
        return weights, delta, grad

    def _reference_deltas(self, infos, arrays, prevs, delta, done) -> None:
        """The rows the kernel did not do: the reference's delta, and the previous copy kept."""
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

    def _rows(self, arrays, prevs, *, with_delta: bool, t_delta: int | None = None):
        """(weights Block over every array, delta Block over the first t_delta (default: all) or None,
        done [t_delta]: delta rows the kernel did, their previous copies updated).

        The common case (every array one the kernel reads, every row done) is one kernel call and
        one finishing of all rows at once, without per-row Python: a snapshot's fixed cost, which
        is what a small model pays."""
        t, bins = len(arrays), self.bins
        td = t if t_delta is None else t_delta
        codes = _codes(arrays)
        mine: list[int] | None = None  # arrays the kernel reads (None: all of them)
        ready = arrays
        if codes is None:
            # a strided view is copied once (cheaper than the reference's passes over it)
            ready = [a if a.flags.c_contiguous or not kernel.available() or kernel.code_of(a.dtype) is None
                     else np.ascontiguousarray(a) for a in arrays]
            mine = [i for i, a in enumerate(ready) if kernel.takes(a)]
        wd = dd = np.zeros(0, dtype=bool)
        raw_w = raw_d = np.zeros((0, 0))
        if mine is None or mine:
            xs = ready if mine is None else [ready[i] for i in mine]
            ps = prevs if mine is None else [prevs[i] for i in mine]
            ps = [p if p is not None and p.dtype == x.dtype and p.size == x.size and p.flags.c_contiguous else None
                  for x, p in zip(xs, ps, strict=True)]
            if codes is not None:  # every array the kernel's, dtype codes known: straight to it
                raw_w, raw_d, wd, dd = kernel.run([_flat(x) for x in xs], [None if p is None else _flat(p) for p in ps],
                                                  codes, bins, copy=True, threads=self.threads)
            else:
                raw_w, raw_d, wd, dd = kernel.rows(xs, ps, bins, copy=True, threads=self.threads)
        # weights rows
        w: Block | RawBlock
        if mine is None and wd.all():
            w = RawBlock(WEIGHT_STATS, raw_w, bins)
        else:
            w = wb = Block(WEIGHT_STATS, np.empty((t, len(WEIGHT_STATS))),
                           (np.empty(t), np.empty(t), np.zeros((t, bins), dtype=np.uint32)))
            at = np.arange(t, dtype=np.int64) if mine is None else np.asarray(mine, dtype=np.int64)
            w_done = np.zeros(t, dtype=bool)
            if wd.any():
                _put(wb, at[wd], weight_rows(raw_w[wd]), hist_parts(raw_w[wd], bins))
                w_done[at[wd]] = True
            assert wb.hist is not None
            for i in np.nonzero(~w_done)[0]:
                ref = reference_view(arrays[i])
                wb.stats[i] = weight_stats(ref)
                wb.hist[0][i], wb.hist[1][i], wb.hist[2][i] = histogram(ref, bins)
        # delta rows
        d_done = np.zeros(td, dtype=bool)
        if not with_delta:
            return w, None, d_done
        if mine is None and dd[:td].all():
            return w, RawBlock(DELTA_STATS, raw_d[:td], bins), dd[:td]
        d = empty_block(DELTA_STATS, td, bins)
        at = np.arange(len(dd), dtype=np.int64) if mine is None else np.asarray(mine, dtype=np.int64)
        dd = dd & (at < td)
        if dd.any():
            _put(d, at[dd], delta_rows(raw_d[dd], raw_d[dd][:, _PSQ]), hist_parts(raw_d[dd], bins))
            d_done[at[dd]] = True
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
        return np.concatenate(parts, dtype=np.float32, casting="unsafe")  # one copy, cast on the way


def value_copy(arr: np.ndarray):
    """A copy of arr for a values record: a numpy array, or ("bf16", uint16 bits) for bfloat16."""
    if is_bfloat16(arr):
        return ("bf16", np.array(arr.view(np.uint16), copy=True))
    return np.array(arr, copy=True)


_CODE: dict = {}  # numpy dtype -> the kernel's code (None: not read), memoised: asked per tensor per snapshot


def _codes(arrays) -> bytes | None:
    """The kernel's dtype codes of arrays when it reads every one in place (C-contiguous, non-empty), else None."""
    if not kernel.available():
        return None
    out = bytearray()
    for a in arrays:
        if not isinstance(a, np.ndarray) or not a.size or not a.flags.c_contiguous:
            return None
        dt = a.dtype
        code = _CODE.get(dt, -1)
        if code == -1:
            code = _CODE[dt] = kernel.code_of(dt)
        if code is None:
            return None
        out.append(code)
    return bytes(out)


def _flat(arr: np.ndarray) -> np.ndarray:
    """kernel.flat(arr), skipped where it changes nothing the kernel reads: it takes any C-contiguous
    buffer of 4- or 8-byte floats as is; 16-bit floats go as their raw bits."""
    return kernel.flat(arr) if arr.itemsize == 2 else arr


class RawBlock:
    """A weights or delta Block whose rows the kernel computed, kept as raw rows and finished
    (raw_rows.py: some fifty small numpy operations) when first read: by the writer thread when
    it encodes the snapshot, so the training thread does not pay for it. Reads like a Block.
    Row ranges of one (rows(): a snapshot's weights and gradients) are finished together, once.

    Every row is of a tensor the kernel took whole, so none holds NaN or Inf (the kernel hands
    those back to the reference path): `finite` says so without finishing the rows."""

    finite = True

    def __init__(self, names: tuple[str, ...], raw: np.ndarray, bins: int):
        self.names = names
        self._raw: np.ndarray | None = raw
        self._bins = bins
        self._block: Block | None = None
        self._of: tuple[RawBlock, int, int | None] | None = None  # (whole, start, stop) of rows()

    def block(self) -> Block:
        if self._block is None:
            if self._of is not None:
                whole, start, stop = self._of
                self._block = _split(whole.block(), start, stop)
            else:
                raw = self._raw
                assert raw is not None
                if kernel.can_finish():  # the same numbers in one C call (the writer thread's main cost)
                    rows, hist = kernel.finish(raw, self.names != WEIGHT_STATS, self._bins)
                    self._block = Block(self.names, rows, hist)
                else:
                    rows = weight_rows(raw) if self.names == WEIGHT_STATS else delta_rows(raw, raw[:, _PSQ])
                    self._block = Block(self.names, rows, hist_parts(raw, self._bins))
            self._raw = self._of = None
        return self._block

    @property
    def stats(self) -> np.ndarray:
        return self.block().stats

    @property
    def hist(self):
        return self.block().hist

    def to_payload(self, encode_array) -> dict:
        return self.block().to_payload(encode_array)

    def rows(self, start: int, stop: int | None = None) -> RawBlock:
        """Rows start:stop, finished with the others when one of them is read."""
        part = RawBlock(self.names, np.zeros((0, 0)), self._bins)
        part._raw, part._of = None, (self, start, stop)
        return part


def _split(block, start: int, stop: int | None = None):
    """Rows start:stop of a block (views; of a RawBlock: finished with the others)."""
    if isinstance(block, RawBlock):
        return block.rows(start, stop)
    hist = None if block.hist is None else tuple(part[start:stop] for part in block.hist)
    return Block(block.names, block.stats[start:stop], hist)


def _put(block: Block, at: np.ndarray, stats: np.ndarray, hist) -> None:
    """Rows `at` of block from kernel rows."""
    assert block.hist is not None
    block.stats[at] = stats
    lo, hi, counts = hist
    block.hist[0][at], block.hist[1][at], block.hist[2][at] = lo, hi, counts
