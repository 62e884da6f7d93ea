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

import bisect
import functools
import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

from weighttui.log.format import FrameType
from weighttui.log.reader import read_frame_at
from weighttui.log.records import InvalidRecord, Omitted, SnapshotRecord, parse_prepared, parse_snapshot

from .builder import Group, RunState
from .columns import Const, FromLog, KindColumns, Segment, _narrow, compact, count_dtype, merge

# Entries read back are kept (least recently used first out) up to this many bytes in all, for
# every store of the process (a viewer of 50 runs holds 32 MiB of them, not 50 x 32):
# histograms() asks for lo, hi and counts of the same entries one after the other, and a
# viewer redraws the same tensor's range several times.
CACHE_BYTES = 32 << 20
_CACHE: OrderedDict = OrderedDict()  # (id(seg), entries) -> (weakref to seg, arrays, bytes)
_CACHE_LOCK = threading.Lock()
_cached_bytes = 0

# Statistics of sealed segments held in memory, for every store of the process: the most recently
# sealed up to this many bytes (older ones leave first); the others are read back from their
# frames when a query asks for them, whole segments (every statistic of every kind of a group at
# once) into the read-back cache above. Without this bound a store with no index held every
# statistic of the log: ~190 MB for 1 GiB, ~1.9 GB for 10 GiB.
STATS_BYTES = 96 << 20
_RESIDENT: OrderedDict = OrderedDict()  # id(seg) -> (weakref to seg, [compact columns], bytes), seal order
_resident_bytes = 0
_DEAD: list = []  # ids of segments that died (weakref callbacks: dropped at the next insert)


def _nbytes(cols: list) -> int:
    return sum(c.nbytes if isinstance(c, np.ndarray) else 16 for c in cols) + 64


def _put(key, seg, arrays: dict, size: int) -> None:
    """Into the read-back cache, least recently used out past CACHE_BYTES (caller holds the lock)."""
    global _cached_bytes
    old = _CACHE.pop(key, None)
    if old is not None:
        _cached_bytes -= old[2]
    _CACHE[key] = (weakref.ref(seg), arrays, size)
    _cached_bytes += size
    while _cached_bytes > CACHE_BYTES and len(_CACHE) > 1:
        _k, (_s, _a, dropped) = _CACHE.popitem(last=False)
        _cached_bytes -= dropped


def _died(key: int, _ref: object = None) -> None:
    _DEAD.append(key)  # (a weakref callback may run while this thread holds the lock: no locking here)


def _keep_resident(seg: Segment, cols: list) -> None:
    """A newly sealed segment's statistic columns: held, the oldest sealed leaving past STATS_BYTES
    (into the read-back cache, where they are the first to go)."""
    global _resident_bytes
    with _CACHE_LOCK:
        while _DEAD:
            key = _DEAD.pop()
            hit = _RESIDENT.get(key)
            if hit is not None and hit[0]() is None:
                del _RESIDENT[key]
                _resident_bytes -= hit[2]
        old = _RESIDENT.pop(id(seg), None)
        if old is not None:
            _resident_bytes -= old[2]
        size = _nbytes(cols)
        key = id(seg)
        _RESIDENT[key] = (weakref.ref(seg, functools.partial(_died, key)), cols, size)
        _resident_bytes += size
        while _resident_bytes > STATS_BYTES and len(_RESIDENT) > 1:
            key, (ref, gone, dropped) = _RESIDENT.popitem(last=False)
            _resident_bytes -= dropped
            was = ref()
            if was is not None:
                _put((key, "stats"), was, {"stats": gone}, dropped)


def _stats_held(seg: Segment) -> list | None:
    """The statistic columns of a sealed segment if held (resident or read back lately), else None."""
    with _CACHE_LOCK:
        hit = _RESIDENT.get(id(seg))
        if hit is not None and hit[0]() is seg:
            return hit[1]
        hit = _CACHE.get((id(seg), "stats"))
        if hit is not None and hit[0]() is seg:
            _CACHE.move_to_end((id(seg), "stats"))
            return hit[1]["stats"]
    return None


def resident_bytes() -> int:
    """Bytes of statistics held for sealed segments now (tests, benchmarks)."""
    return _resident_bytes


def stat_take(seg: Segment, s: int, idx: np.ndarray) -> np.ndarray:
    """Statistic s of entries `idx` (ascending) of any segment, as float64. A segment whose statistics
    are read back from the log (not held) reads only the frames of those entries' rows when they
    are few of its rows (a thinned row view: a viewer's 2,048 rows of 124,000), else all of it."""
    stand = seg.stats[s] if s < seg.width else None
    if not isinstance(stand, _Stat) or not idx.size or _stats_held(seg) is not None:
        a, b = (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)
        return seg.part("stats", a, b, s)[idx - a]
    back = stand.source
    rows = seg.part("rows", int(idx[0]), int(idx[-1]) + 1)[idx - int(idx[0])]
    if 2 * np.unique(rows).size >= seg.row1 - seg.row0:
        return stand.values(seg, 0, seg.entries)[idx].astype(np.float64, copy=False)
    return back.source.take_stats(back, seg, idx, rows)[s]


def stat_grid(seg: Segment, s: int, sel: np.ndarray, u: int) -> np.ndarray:
    """[len(sel), u] statistic s of a grid segment (u tensors x its rows) at its rows `sel`."""
    if not isinstance(seg.stats[s] if s < seg.width else None, _Stat):
        return seg.part("stats", s=s).reshape(u, -1)[:, sel].T
    r = seg.entries // max(1, u)
    return stat_take(seg, s, (np.arange(u, dtype=np.int64)[:, None] * r + sel[None, :]).ravel()).reshape(u, -1).T


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
    return s if holds_row(run, row, s) else None


def restore_tail(fd: int, run: RunState) -> None:
    """The histograms and samples a light scan left in the log (records.Omitted in the tail's pieces),
    read back from their frames (`fd`): for a merge that keeps them (a small last group rewritten with
    its histograms, a query of the tail). Where a frame no longer reads back as its row's snapshot
    (or no longer has them) they are absent - NaN edges and no counts, NaN samples - as FromLog reads
    them, never another snapshot's."""
    again: dict[int, SnapshotRecord | None] = {}  # row -> its snapshot read again (None: not readable as it)
    for kind, kc in run.kinds.items():
        tail = []
        for p in kc.tail:
            counts, samples = p.get("counts"), p.get("samples")
            if type(counts) is not Omitted and type(samples) is not Omitted:
                tail.append(p)
                continue
            row = int(p["rows"][0])
            if row not in again:
                again[row] = snapshot_at(fd, run, row)
            got = again[row]
            s = got if got is not None and np.array_equal(run.cols_of(got.ids)[0], p["cols"]) else None
            p = dict(p)  # (pieces are never changed in place)
            if type(counts) is Omitted:
                block = None if s is None else getattr(s, kind)
                hist = None if block is None else block.hist
                del p["lo"], p["hi"], p["counts"]
                if hist is not None and hist[2].shape == counts.shape:
                    p["lo"], p["hi"], p["counts"] = hist
            if type(samples) is Omitted:
                sample = None if s is None else s.sample
                p["samples"] = sample if sample is not None and sample.size == samples.size \
                    else np.full(samples.size, np.nan, np.float32)
            tail.append(p)
        kc.tail = tail
        kc._tail_seg = None
    run.omits = False


def holds_row(run: RunState, row: int, s) -> bool:
    """Whether a snapshot record read again is the one row `row` of `run` was read from (same step and
    time: a log rewritten in place under an index gives no other snapshot's values)."""
    t = float(run.times.a[row])
    return s.step == int(run.steps.a[row]) and (s.time == t or (s.time != s.time and t != t))


def read_back(seg: Segment, back: _Back, bins: int | None, with_samples: bool, dtype=np.uint32) -> Segment:
    """A segment sealed without its histograms and samples (merge(heavy=False)) with FromLog stand-ins
    for them: read back from the log through `back` (dtype: what its counts read as)."""
    n = seg.entries
    if bins is not None:
        seg.counts = FromLog(back, "counts", n, bins, dtype)
        # the edges too, even where they repeat min/max (an Alias would give them without a read):
        # an entry whose frame no longer reads back is then absent (NaN edges, no counts), as
        # histograms() leaves out a snapshot without one, not an empty histogram
        seg.lo, seg.hi = FromLog(back, "lo", n), FromLog(back, "hi", n)
    if with_samples and seg.soff is not None:
        seg.samples = FromLog(back, "samples", int(seg.part("soff", n, n + 1)[0]), 0, np.float32)
    return seg


def lagging_segment(back: _Back, parts, row0, row1, nstats, bins, with_samples, edges) -> Segment:
    """columns.sealed_segment without the histograms and samples, which are read back from the log
    (an index whose histogram part lags its statistics: `weighttui info`, docs/store.md). Their
    counts read as uint32, as RunData.histograms gives them."""
    return read_back(compact(merge(parts, row0, row1, nstats, bins, with_samples, heavy=False), edges), back,
                     bins, with_samples)


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
        dtype = count_dtype(*(p["counts"] for p in parts if p.get("counts") is not None)) if bins is not None \
            else None
        # a column kept as it is would be a view holding the whole [statistics, entries] array
        # (constant columns included): each is copied out
        seg.stats = [c.copy() if isinstance(c, np.ndarray) and c.base is not None else c for c in seg.stats]
        n = seg.entries
        back = _Back(self, run, kind)
        _keep_resident(seg, seg.stats)
        seg.stats = [_Stat(back, s, n) for s in range(len(seg.stats))]
        return read_back(seg, back, bins, with_samples, dtype)

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
        key = (id(seg), idx.tobytes())
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0]() is seg:  # (a dead segment's id may be another's now)
                _CACHE.move_to_end(key)
                return hit[1][field]
        arrays = self._read_back(back, seg, idx)
        with _CACHE_LOCK:
            _put(key, seg, arrays, sum(v.nbytes for v in arrays.values()) + len(key[1]))
        return arrays[field]

    def take_stats(self, back: _Back, seg: Segment, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """[width, entries idx] of a segment's statistics read back from the frames of their rows only
        (rows: each entry's row), kept in the read-back cache."""
        key = (id(seg), idx.tobytes(), "stats")
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0]() is seg:
                _CACHE.move_to_end(key)
                return hit[1]["stats"]
        run, kind = back.run, back.kind
        out = np.full((seg.width, idx.size), np.nan)
        cols = seg.part("cols", int(idx[0]), int(idx[-1]) + 1)[idx - int(idx[0])]
        by_row: dict[int, list[int]] = {}
        for e, r in enumerate(rows.tolist()):
            by_row.setdefault(r, []).append(e)
        kc = KindColumns(kind)
        fd = self._log()
        for r in sorted(by_row):
            snap = snapshot_at(fd, run, r)
            self.reads += 1
            block = None if snap is None else getattr(snap, kind)
            if snap is None or block is None:
                continue
            scols, _slen = run.cols_of(snap.ids)
            kc.add(r, scols, _StatsOnly(block))
            stats = kc.tail.pop()["stats"]
            kc.tail_entries = kc.tail_bytes = 0
            inv = self._positions(scols)[1]
            ents = np.array(by_row[r])
            want = cols[ents]
            ok = want < inv.size
            pos = np.where(ok, inv[np.minimum(want, max(0, inv.size - 1))], -1) if inv.size \
                else np.full(want.size, -1)
            ok &= pos >= 0
            w = min(stats.shape[1], out.shape[0])
            out[:w, ents[ok]] = stats[pos[ok], :w].T
        with _CACHE_LOCK:
            _put(key, seg, {"stats": out}, out.nbytes + len(key[1]))
        return out

    def stat(self, back: _Back, seg: Segment, s: int, a: int, b: int) -> np.ndarray:
        """Entries [a, b) of statistic s of a sealed segment: held, or read back from its frames."""
        if b <= a:
            return np.zeros(0)
        cols = _stats_held(seg)
        if cols is None:
            cols = self._stats_back(back, seg)
        col = cols[s]
        return col.values(seg, a, b) if isinstance(col, Const) else col[a:b]

    def _stats_back(self, back: _Back, seg: Segment) -> list:
        """Every statistic of `seg` read back from its frames, with those of the other kinds of its
        group not held either (one frame read per snapshot for all of them), into the read-back cache."""
        run, kind = back.run, back.kind
        groups = run.groups
        i = bisect.bisect_right(groups, seg.row0, key=lambda g: g.row0) - 1
        group = groups[i] if 0 <= i < len(groups) and groups[i].kinds.get(kind) is seg else None
        todo = {kind: seg}
        if group is not None:
            for k, other in group.kinds.items():
                if k != kind and other.stats and isinstance(other.stats[0], _Stat) and _stats_held(other) is None:
                    todo[k] = other
        span = max(1, seg.row1 - seg.row0)
        want: dict[str, _Refill] = {k: _Refill(k, sg, span) for k, sg in todo.items()}
        rows = np.unique(np.concatenate([w.rows for w in want.values()])) if want else np.zeros(0, np.int64)
        fd = self._log()
        for r in rows.tolist():
            snap = snapshot_at(fd, run, r)
            self.reads += 1
            if snap is None:  # left out (NaN), never guessed
                continue
            cols, _slen = run.cols_of(snap.ids)
            for k, w in want.items():
                block = getattr(snap, k)
                if block is not None:
                    w.add(r, cols, block)
        got = {k: [_narrow(np.ascontiguousarray(c)) for c in want[k].columns()] for k in todo}
        with _CACHE_LOCK:
            for k, sg in todo.items():
                _put((id(sg), "stats"), sg, {"stats": got[k]}, _nbytes(got[k]))
        return got[kind]

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


class _Refill:
    """The statistic columns [width, entries] of one sealed segment, filled again snapshot by snapshot
    (entries not filled - a frame left out - stay NaN)."""

    def __init__(self, kind: str, seg: Segment, span: int):
        self.seg, self.span = seg, span
        self.kc = KindColumns(kind)  # (its add() maps a block's columns as the builder did)
        self.buf: np.ndarray | None
        grid = seg.grid()
        if grid is not None:  # every tensor x every row: [rows, tensors, width], transposed at the end
            self.rows, self.ucols = grid[0].astype(np.int64), grid[1]
            self.at_row = {r: i for i, r in enumerate(self.rows.tolist())}
            self.buf = np.full((self.rows.size, self.ucols.size, seg.width), np.nan)
            self._perm: dict = {}
        else:
            rows_e = seg.part("rows").astype(np.int64)
            # entries are sorted by (column, row): this key is ascending
            self.keys = seg.part("cols").astype(np.int64) * span + (rows_e - seg.row0)
            self.rows = np.unique(rows_e)
            self.out = np.full((seg.width, seg.entries), np.nan)
            self.buf = None

    def add(self, r: int, cols: np.ndarray, block) -> None:
        kc = self.kc
        kc.add(r, cols, _StatsOnly(block))
        stats = kc.tail.pop()["stats"]
        kc.tail_entries = kc.tail_bytes = 0
        if self.buf is not None:
            i = self.at_row.get(r)
            if i is None:
                return
            hit = self._perm.get(id(cols))
            if hit is None or hit[0] is not cols:
                pos = np.searchsorted(self.ucols, cols)
                ok = pos < self.ucols.size
                ok[ok] = self.ucols[pos[ok]] == cols[ok]
                ident = bool(ok.all()) and pos.size == self.ucols.size and bool((pos == np.arange(pos.size)).all())
                hit = self._perm[id(cols)] = (cols, ident, pos[ok], ok)
            _c, ident, pos, ok = hit
            w = min(stats.shape[1], self.buf.shape[2])
            if ident:
                self.buf[i, :, :w] = stats[:, :w]
            else:
                self.buf[i, pos, :w] = stats[ok, :w]
            return
        key = cols.astype(np.int64) * self.span + (r - self.seg.row0)
        keys = self.keys
        if not keys.size:
            return
        pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
        ok = keys[pos] == key
        w = min(stats.shape[1], self.out.shape[0])
        self.out[:w, pos[ok]] = stats[ok, :w].T

    def columns(self) -> np.ndarray:
        """[width, entries] in the segment's (column, row) order."""
        if self.buf is None:
            return self.out
        return self.buf.transpose(2, 1, 0).reshape(self.buf.shape[2], -1)


class _StatsOnly:
    """A block's statistics without its histogram (for KindColumns.add when reading back)."""

    __slots__ = ("names", "stats", "hist")

    def __init__(self, block):
        self.names, self.stats, self.hist = block.names, block.stats, None


class _Stat(FromLog):
    """Statistic `s` of a sealed segment: held in memory up to STATS_BYTES for the process, else
    read back from the segment's frames (LogSource.stat)."""

    __slots__ = ("s",)

    def __init__(self, back: _Back, s: int, n: int):
        super().__init__(back, "stats", n)
        self.s = int(s)

    def values(self, seg, a: int, b: int) -> np.ndarray:
        return self.source.source.stat(self.source, seg, self.s, a, b)


class _Back:
    """What a FromLog stand-in reads back through: the source, the run and the kind of its segment."""

    __slots__ = ("source", "run", "kind")

    def __init__(self, source: LogSource, run: RunState, kind: str):
        self.source, self.run, self.kind = source, run, kind

    def read(self, seg: Segment, field: str, a: int, b: int) -> np.ndarray:
        return self.source.read(self, seg, field, a, b)

    def take(self, seg: Segment, field: str, idx: np.ndarray) -> np.ndarray:
        return self.source.take(self, seg, field, idx)
