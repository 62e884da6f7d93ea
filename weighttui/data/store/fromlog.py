"""A store with no index: statistics in memory, histograms and samples read back from the log.

Sealed segments normally live in the log's index on disk. Where there is none
(`weighttui.open(path, cache=False)`, `weighttui info --no-cache`, a log whose
directory and user cache are both unwritable) they would stay in memory whole,
and most of a segment is histogram counts and samples (on the 1 GiB benchmark log
302 + 76 MiB of the 569 MiB an index holds). `LogSource` seals a run's segments
without them: a segment keeps its statistics (in the compact forms of
columns.compact), rows, columns and sample offsets; histogram edges and counts and
samples become `columns.FromLog` stand-ins. A query reads the entries it touches back from their
snapshot frames, whose offsets the row table keeps (the log is the truth; full
weight values are read the same way). Nothing is written anywhere.

Every frame read back is checked as it was when first read (`snapshot_at`: the
frame verifies, is a snapshot of this run's tensors, with the step and time the
row table holds); one that does not (the log rewritten in place under a reader)
is left out - its histogram reads as absent, its samples as NaN - never guessed.
The source keeps the log open (a descriptor of the file first read), so a log
replaced at its path is still read from the file the store describes.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

from weighttui.log.format import FrameType
from weighttui.log.reader import read_frame_at
from weighttui.log.records import InvalidRecord, parse_prepared, parse_snapshot

from .builder import Group, RunState
from .columns import FromLog, Segment, compact, count_dtype, merge

# Entries read back are kept (least recently used first out) up to this many bytes in all, for
# every store of the process (a viewer of 50 runs holds 32 MiB of them, not 50 x 32):
# histograms() asks for lo, hi and counts of the same entries one after the other, and a
# viewer redraws the same tensor's range several times.
CACHE_BYTES = 32 << 20
_CACHE: OrderedDict = OrderedDict()  # (id(seg), entries) -> (weakref to seg, arrays, bytes)
_CACHE_LOCK = threading.Lock()
_cached_bytes = 0


def snapshot_at(fd: int, run: RunState, row: int):
    """The snapshot record of row `row` of `run`, read again from the log (`fd`), or None when its
    frame no longer verifies or no longer holds that snapshot (same step and time)."""
    got = read_frame_at(fd, int(run.offsets.a[row]), prepared=True)
    if got is None or got[0] != FrameType.SNAPSHOT:
        return None
    try:
        parse = parse_prepared if type(got[1]) is tuple else parse_snapshot  # (the C decoder's, or a dict)
        s = parse(got[1], run.by_id, run._ids_checked)
    except (InvalidRecord, ValueError, TypeError, OverflowError):
        return None
    t = float(run.times.a[row])
    if s.step != int(run.steps.a[row]) or not (s.time == t or (s.time != s.time and t != t)):
        return None
    return s


class LogSource:
    """The `spill` of a store with no index (builder.RunState.seal): seals groups without their
    histograms and samples, and reads those back from the log when a query asks for them."""

    # the tail (every array of its snapshots, as decoded) is sealed at this many bytes rather
    # than columns.SEAL_BYTES: what stays of a sealed group is a fraction of it, so the tail and
    # its sealing are most of what a read holds beyond the statistics
    seal_bytes = 8 << 20

    def __init__(self, path: str):
        self.path = path
        # the log as it is being read (refresh() sets it while it scans): duplicated when the first
        # group is sealed, so groups are read back from the file they were read from
        self.reading: int | None = None
        self._fd: int | None = None
        self._inverse: dict[int, tuple] = {}  # id(cols) -> (cols, {col: position}, col -> position)
        self._sample_starts: dict[int, tuple] = {}  # id(sample lengths) -> (them, starts)
        self.reads = 0  # frames read back (for tests and benchmarks)

    def _adopt(self, fd: int) -> None:
        self._fd = fd
        weakref.finalize(self, os.close, fd)

    def _log(self) -> int:
        if self._fd is None:  # (a reader never writes to the log)
            self._adopt(os.dup(self.reading) if self.reading is not None else os.open(self.path, os.O_RDONLY))
        assert self._fd is not None
        return self._fd

    # ------------------------------------------------------------ sealing

    def __call__(self, run: RunState, row0: int, row1: int, jobs: dict) -> Group:
        """A group for rows [row0, row1) (jobs: columns.sealed_segment's arguments per kind)."""
        try:
            self._log()  # the file being read now is the one the rows point into
        except OSError:
            pass  # (read back later from the path, each frame checked)
        return Group(row0, row1, {kind: self._seal(run, kind, *job) for kind, job in jobs.items()})

    def _seal(self, run, kind, parts, row0, row1, nstats, bins, with_samples, edges) -> Segment:
        seg = compact(merge(parts, row0, row1, nstats, bins, with_samples, heavy=False), edges)
        # a column kept as it is would be a view holding the whole [statistics, entries] array
        # (constant columns included): each is copied out
        seg.stats = [c.copy() if isinstance(c, np.ndarray) and c.base is not None else c for c in seg.stats]
        n = seg.entries
        back = _Back(self, run, kind)
        if bins is not None:
            dtype = count_dtype(*(p["counts"] for p in parts if p.get("counts") is not None))
            seg.counts = FromLog(back, "counts", n, bins, dtype)
            # the edges too, even where they repeat min/max (an Alias would give them without a read):
            # an entry whose frame no longer reads back is then absent (NaN edges, no counts), as
            # histograms() leaves out a snapshot without one, not an empty histogram
            seg.lo, seg.hi = FromLog(back, "lo", n), FromLog(back, "hi", n)
        if with_samples and seg.soff is not None:
            seg.samples = FromLog(back, "samples", int(seg.part("soff", n, n + 1)[0]), 0, np.float32)
        return seg

    # ------------------------------------------------------------ reading back

    def read(self, back: _Back, seg: Segment, field: str, a: int, b: int) -> np.ndarray:
        """Entries [a, b) of a field (samples: values [a, b) of the flat array)."""
        if field != "samples":
            return self.take(back, seg, field, np.arange(a, max(a, b), dtype=np.int64))
        if b <= a:
            return np.zeros(0, np.float32)
        # samples [a, b) of the flat array: the entries that hold them, then the slice
        soff = seg.part("soff")
        ea = max(0, int(np.searchsorted(soff, a, "right")) - 1)
        eb = min(max(ea, int(np.searchsorted(soff, b, "left"))), seg.entries)
        flat = self.take(back, seg, "samples", np.arange(ea, eb, dtype=np.int64))
        base = int(soff[ea])
        return flat[a - base:b - base]

    def take(self, back: _Back, seg: Segment, field: str, idx: np.ndarray) -> np.ndarray:
        """Entries `idx` (ascending) of a field; samples: those entries' samples, one after the other.
        Only their frames are read (a thinned row view or one step need not read every row)."""
        global _cached_bytes
        key = (id(seg), idx.tobytes())
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0]() is seg:  # (a dead segment's id may be another's now)
                _CACHE.move_to_end(key)
                return hit[1][field]
        arrays = self._read_back(back, seg, idx)
        size = sum(v.nbytes for v in arrays.values()) + len(key[1])
        with _CACHE_LOCK:
            old = _CACHE.pop(key, None)
            if old is not None:
                _cached_bytes -= old[2]
            _CACHE[key] = (weakref.ref(seg), arrays, size)
            _cached_bytes += size
            while _cached_bytes > CACHE_BYTES and len(_CACHE) > 1:
                _k, (_s, _a, dropped) = _CACHE.popitem(last=False)
                _cached_bytes -= dropped
        return arrays[field]

    def _positions(self, cols: np.ndarray) -> tuple[dict, np.ndarray]:
        """Where each tensor column is in a snapshot covering `cols`: {column: position}, and as an
        array indexed by column (-1: not covered). Snapshots mostly repeat one `cols` object."""
        hit = self._inverse.get(id(cols))
        if hit is None or hit[0] is not cols:
            inv = np.full(int(cols.max()) + 1 if cols.size else 0, -1, np.int64)
            inv[cols] = np.arange(cols.size)
            hit = self._inverse[id(cols)] = (cols, {c: p for p, c in enumerate(cols.tolist())}, inv)
        return hit[1], hit[2]

    def _read_back(self, back: _Back, seg: Segment, idx: np.ndarray) -> dict:
        """The histogram edges, counts and samples of entries `idx`, from their frames."""
        run, kind, n = back.run, back.kind, idx.size
        out: dict[str, np.ndarray] = {}
        counts = seg.counts if isinstance(seg.counts, FromLog) else None
        if counts is not None:
            out["lo"], out["hi"] = np.full(n, np.nan), np.full(n, np.nan)
            out["counts"] = np.zeros((n, counts.bins), counts.dtype)
        flat = at_sample = lens = None
        a, b = (int(idx[0]), int(idx[-1]) + 1) if n else (0, 0)
        if isinstance(seg.samples, FromLog):
            soff = seg.part("soff", a, b + 1)
            lens = (soff[1:] - soff[:-1])[idx - a]
            at_sample = np.concatenate(([0], np.cumsum(lens)))
            flat = out["samples"] = np.full(int(at_sample[-1]), np.nan, np.float32)
        if not n or not out:
            return out
        rows = seg.part("rows", a, b)[idx - a]
        cols = seg.part("cols", a, b)[idx - a]
        by_row: dict[int, list[int]] = {}
        for e, r in enumerate(rows.tolist()):
            by_row.setdefault(r, []).append(e)
        col_list = cols.tolist()
        fd = self._log()
        for r in sorted(by_row):  # one frame read per snapshot
            s = snapshot_at(fd, run, r)
            self.reads += 1
            if s is None:
                continue
            scols, slen = run.cols_of(s.ids)
            block = getattr(s, kind)
            hist = block.hist if counts is not None and block is not None else None
            sampled = s.sample if flat is not None and slen is not None else None
            ents = by_row[r]
            if len(ents) > 8:  # many tensors of one snapshot: whole arrays at once
                inv = self._positions(scols)[1]
                ent = np.array(ents)
                want = cols[ent]
                pos = inv[np.minimum(want, inv.size - 1)] if inv.size else np.full(want.size, -1)
                ok = (pos >= 0) & (want < inv.size)
                ent, pos = ent[ok], pos[ok]
                found = list(zip(ent.tolist(), pos.tolist(), strict=True))
                if hist is not None:
                    out["lo"][ent], out["hi"][ent], out["counts"][ent] = hist[0][pos], hist[1][pos], hist[2][pos]
                    hist = None
            else:  # one tensor of each snapshot (a series of histograms): no array operations per row
                where = self._positions(scols)[0]
                found = [(e, p) for e in ents if (p := where.get(col_list[e])) is not None]
            if hist is not None:
                lo, hi, c = hist
                for e, p in found:
                    out["lo"][e], out["hi"][e], out["counts"][e] = lo[p], hi[p], c[p]
            if sampled is not None and flat is not None and at_sample is not None and lens is not None \
                    and slen is not None:
                starts = self._starts(slen)
                for e, p in found:
                    k = int(lens[e])
                    if k == int(slen[p]):
                        flat[at_sample[e]:at_sample[e] + k] = sampled[starts[p]:starts[p] + k]
        return out

    def _starts(self, slen: np.ndarray) -> list:
        """Where each tensor's samples start in a snapshot's sample array (slen: their lengths)."""
        hit = self._sample_starts.get(id(slen))
        if hit is None or hit[0] is not slen:
            hit = self._sample_starts[id(slen)] = (slen, np.concatenate(([0], np.cumsum(slen))).tolist())
        return hit[1]


class _Back:
    """What a FromLog stand-in reads back through: the source, the run and the kind of its segment."""

    __slots__ = ("source", "run", "kind")

    def __init__(self, source: LogSource, run: RunState, kind: str):
        self.source, self.run, self.kind = source, run, kind

    def read(self, seg: Segment, field: str, a: int, b: int) -> np.ndarray:
        return self.source.read(self, seg, field, a, b)

    def take(self, seg: Segment, field: str, idx: np.ndarray) -> np.ndarray:
        return self.source.take(self, seg, field, idx)
