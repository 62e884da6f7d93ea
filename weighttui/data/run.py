"""RunData: one run of a log, read through the run store (weighttui/data/store).

The store keeps every snapshot of every run in tensor-major columns (entries per
tensor, histograms per tensor, sealed into segments that live in an index file
beside the log or in memory); RunData is a view of one run on top of it:

- `series()`, `histograms()`, `samples()` read one tensor's columns: every
  snapshot, or those of a step range (`start=`, `stop=`) at full resolution.
- `steps`, `stat_matrix()`, `present` (the dense [rows, tensors] matrices the
  viewer and diagnose use) hold the *row view*: every snapshot, or with
  `max_rows` at most that many rows spread over the run (the first and latest
  always), so a viewer's memory is bounded on any log; the rows left out stay
  reachable through the range reads. Dense matrices are built on first use and
  extended as rows arrive.
- `weights()` reads full tensor values from their frames on demand.

`weighttui.open(path)` builds (or reuses, or extends) the log's index and returns
a RunData; `refresh()` reads what was appended since. The TUI feeds a RunData
from a follower thread with `ingest(poll)`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from weighttui.data.liveness import writer_running
from weighttui.data.malloc import release_freed_memory
from weighttui.data.store import index as store_index
from weighttui.data.store.builder import LogIndex, RunState
from weighttui.data.store.columns import Const
from weighttui.data.store.fromlog import LogSource, stat_grid, stat_take
from weighttui.log.format import HEADER_SIZE
from weighttui.log.reader import ScanState, read_frame_at, scan_frames
from weighttui.log.records import InvalidRecord, RunRecord, TensorInfo, parse_values
from weighttui.log.schema import BASE_COLUMNS, COLUMNS, EXPORT_NAMES, KINDS
from weighttui.log.sniff import open_readonly
from weighttui.log.tail import Poll

STATUSES = ("finished", "failed", "interrupted", "running", "unfinished")
_FIRST_BYTES = 65536  # header + first frame kept to notice a log rewritten in place


@dataclass
class RunSummary:
    """One run in a log (a log opened in append mode holds several)."""

    index: int
    record: RunRecord
    offset: int
    snapshots: int = 0
    first_step: int | None = None
    last_step: int | None = None
    status: str = "unfinished"


class _Thinning:
    """Which rows the row view keeps with max_rows: halve the history when full, keep the newest.

    Works on snapshot indices alone, so the rows kept depend only on how many
    snapshots the run has, whatever order they were read in.
    """

    def __init__(self, max_rows: int | None):
        self.max_rows = max_rows
        self.rows: list[int] = []
        self.stride = 1
        self.provisional = False  # the newest row is kept only because it is the newest
        self.count = 0

    def add(self, upto: int) -> None:
        while self.count < upto:
            self._add_one()

    def _add_one(self) -> None:
        g = self.count
        self.count += 1
        if self.provisional:
            self.rows[-1] = g
        else:
            if self.max_rows is not None and len(self.rows) >= self.max_rows:
                self.stride *= 2
                newest = self.rows[-1]
                self.rows = [r for r in self.rows if r % self.stride == 0]
                if not self.rows or self.rows[-1] != newest:
                    self.rows.append(newest)
                if newest % self.stride != 0:
                    self.rows[-1] = g
                    self.provisional = g % self.stride != 0
                    return
            self.rows.append(g)
        self.provisional = g % self.stride != 0


class _Dense:
    """A [rows, tensors] matrix of the row view, kept with spare capacity and extended in place."""

    __slots__ = ("rows", "buf", "run")

    def __init__(self, rows, buf, run):
        self.rows, self.buf, self.run = rows, buf, run



def _directory(store: LogIndex) -> str | None:
    """The index directory the store's Spiller writes to (None: no Spiller)."""
    return store.spill.directory if isinstance(store.spill, store_index.Spiller) else None


def _read_marks(store) -> tuple:
    """What a save checks the log still holds: the last frame applied (offset, type), the first run's
    frame (offset, run id; None for a run without one) and how far the store reaches."""
    first = store.runs[0]
    return (store.last_frame, (first.offset, first.record.run_id) if first.run_offset_valid else None,
            store.scan.offset + store.scan.pending)


def _still_holds(fd: int, st, marks: tuple) -> bool:
    """The log (fd) holds what was read: a log replaced meanwhile is not indexed."""
    (off, ftype), first, end = marks
    got = read_frame_at(fd, off)
    if got is None or got[0] != ftype or st.st_size < end:
        return False
    if first is not None:
        head = read_frame_at(fd, first[0])
        if head is None or head[1].get("run_id") != first[1]:
            return False
    return True


class IndexSave:
    """One save of a viewer's index off its UI thread (RunData.index_save)."""

    def __init__(self, data: RunData, plan, marks: tuple):
        self.data, self.plan, self.marks = data, plan, marks
        self.where: str | None = None

    def write(self) -> str | None:
        """On any thread; never raises. The directory written, or None."""
        try:
            with self.data._log_for_index(self.plan.path) as fd:
                if fd is not None:
                    st = os.fstat(fd)
                    if _still_holds(fd, st, self.marks):
                        self.where = self.plan.write(fd, st)
        except Exception:  # the index is only a cache
            self.where = None
        return self.where

    def commit(self) -> None:
        """On the thread that ingests, after write()."""
        self.plan.commit()
        self.data.index_path = self.where or self.data.index_path


class RunData:
    """The latest run of a log (or the run at `run_index`), as time series.

    Steps, epochs and times are per row of the row view (a snapshot);
    `series()` and friends return only the rows that covered the tensor asked for.
    """

    def __init__(self, path=None, *, max_rows: int | None = None, run_index: int | None = None,
                 cache: bool = True, index_histograms: bool = True):
        if max_rows is not None and max_rows < 4:
            raise ValueError("max_rows must be at least 4")
        self.path = None if path is None else os.fspath(path)
        self.max_rows = max_rows
        self.run_index = run_index
        self.cache = cache
        self.index_histograms = index_histograms  # False: what this reader indexes leaves them in the log
        self.torn_tail = 0
        self.resets = 0  # times the file was truncated or replaced under us
        self.file_size = 0
        self.last_growth: float | None = None  # monotonic time the file last grew
        self.index_path: str | None = None  # where the index was read or written, if anywhere
        self._store = LogIndex()
        self._ident: tuple | None = None  # (dev, inode, first bytes) of the file read
        self._loaded = False
        self._said_not_recorded: set[tuple[str, str]] = set()  # (kind, stat) warned of: _say_not_recorded
        self._reset_view()

    def _reset_view(self) -> None:
        self._thin = _Thinning(self.max_rows)
        self._view_run: RunState | None = None
        self._shown_cache: tuple | None = None
        self._dense: dict = {}
        self._fill_maps: dict = {}  # id(segment) -> where its entries go in the row view (_fill)
        self._members_cache: tuple | None = None  # (shown, lookup) of _members
        self._nonfinite: dict = {}  # kind -> (run, snapshots scanned, first [T], nan [T], inf [T]): first_nonfinite

    # ------------------------------------------------------------- reading

    def ingest(self, poll: Poll) -> bool:
        """Apply one LogTail poll's results; True if anything visible changed."""
        changed = False
        if poll.reset:
            self._reset()
            changed = True
        if self.path is not None and self._store.spill is None:
            self._set_spill(self._store, poll.size)
        if poll.size > self.file_size:
            self.last_growth = time.monotonic()
        self.file_size = poll.size or self.file_size
        items = [(f.offset, f) for f in poll.frames] + [(c.offset, c) for c in poll.corruptions]
        items.sort(key=lambda x: x[0])
        for _off, item in items:
            self._store.apply(item)
            changed = True
        if poll.offset > 0:  # past the file's start: how far the store covers the log, for save_index()
            pending = getattr(poll, "pending", None)
            pending = max(0, poll.size - poll.offset) if pending is None else pending
            self._store.scan = ScanState(poll.offset, poll.resyncing, pending)
            # as refresh() says it: what is left after the last complete frame once the whole file has
            # been read (a poll that stopped short of the end, reading a big log in parts, has none yet)
            self.torn_tail = self._store.scan.torn_tail if poll.offset + pending >= poll.size else 0
        return changed

    def _reset(self) -> None:
        self.resets += 1
        self.torn_tail = 0
        self._store = LogIndex()
        self._ident = None
        self._reset_view()

    def refresh(self) -> bool:
        """Read what was appended to the file since the last read (all of it the first time).

        Uses and extends the log's index unless cache=False. A file truncated or
        replaced meanwhile is read again from its start (counted in `resets`).
        Raises FileNotFoundError for a missing file and LogFormatError for a file
        that is not a log or is too new. True if anything changed.
        """
        if self.path is None:
            raise ValueError("this RunData has no path to read")
        fd = open_readonly(self.path)  # a reader never writes to the log; a FIFO is refused
        try:
            st = os.fstat(fd)
            store = self._store
            if self._ident is not None and not self._same_file(fd, st):
                self._reset()
                store = self._store
            if st.st_size > self.file_size:
                self.last_growth = time.monotonic()
            self.file_size = st.st_size
            if st.st_size < HEADER_SIZE:
                # not started yet (empty, a header prefix); anything else that short is not a log
                for _item in scan_frames(fd, ScanState(), st.st_size):
                    pass
                return False
            if self._ident is None:  # the file header (or a damaged start) is checked by the scan
                self._ident = (st.st_dev, st.st_ino, os.pread(fd, _FIRST_BYTES, 0))
                if not self._loaded and self.cache:
                    self._loaded = True
                    got = store_index.load_index(self.path, fd, st, fill=self.index_histograms)
                    if got is not None:
                        self._store, self.index_path = got
                        store = self._store
            before = store.version
            start = store.scan.offset
            if store.spill is None:
                self._set_spill(store, st.st_size - start)
            if isinstance(store.spill, LogSource):
                store.spill.reading = fd
            # (no cyclic GC while frames are applied: a big log makes millions of small objects, none in
            # a cycle, and the collector kept walking the store's growing tail)
            # (a Spiller that leaves histograms and samples in the log: the scan does not copy them out of
            # the frames - records.Omitted; the tail reads them back if it is ever sealed with them)
            light = isinstance(store.spill, store_index.Spiller) and not store.spill.histograms
            gc_on = gc.isenabled()
            gc.disable()
            try:
                for item in scan_frames(fd, store.scan, st.st_size, prepared=True, light=light):
                    store.apply(item)
            finally:
                if gc_on:
                    gc.enable()
                if isinstance(store.spill, LogSource):
                    store.spill.reading = None
            if isinstance(store.spill, LogSource) and store.scan.offset - start >= store_index.MIN_LOG_BYTES:
                # the chunks and tails of a long read, freed, back to the system: what this store keeps
                # stays in memory, and would otherwise sit on top of them
                release_freed_memory()
            store.size = st.st_size
            self.torn_tail = store.scan.torn_tail
            if len(self._ident[2]) < min(_FIRST_BYTES, store.scan.offset):  # keep what was read as the identity
                self._ident = (st.st_dev, st.st_ino, os.pread(fd, _FIRST_BYTES, 0))
            if self.cache and store.scan.offset != start and not isinstance(store.spill, LogSource):
                where = store_index.save_index(self.path, fd, st, store, _directory(store))
                self.index_path = where or self.index_path
            return store.version != before
        finally:
            os.close(fd)

    def _set_spill(self, store: LogIndex, new_bytes: int) -> None:
        """Where the store's sealed segments go. A big log read with a cache: the index directory
        (a Spiller). With no index to hold them (cache=False, or nowhere to write one): a LogSource
        (statistics in memory, histograms and samples read back from the log). Small logs read with
        a cache keep them in memory until the index is saved."""
        assert self.path is not None
        big = new_bytes >= store_index.MIN_LOG_BYTES
        spill: store_index.Spiller | LogSource | None = \
            store_index.spiller_for(self.path, new_bytes, self.index_histograms) if self.cache and big else None
        if spill is None and (big or not self.cache):
            spill = LogSource(self.path)
        store.spill = spill
        for r in store.runs:
            r.spill = spill

    def load_index(self):
        """Take the run as far as the log's index covers it (a viewer's start); the ScanState to
        read on from, or None when there is no usable index (then read the log from its start)."""
        if not self.cache or self.path is None or self._store.runs or self._store.corruptions:
            return None
        with self._log_for_index(self.path) as fd:
            if fd is None:
                return None
            try:
                st = os.fstat(fd)
                if st.st_size < HEADER_SIZE:
                    return None
                # (only an index of these very bytes)
                got = store_index.load_index(self.path, fd, st, fill=self.index_histograms)
            except (OSError, ValueError):
                return None
        if got is None:
            return None
        self._store, self.index_path = got
        self._loaded = True
        self.file_size = self._store.size
        self.torn_tail = self._store.scan.torn_tail
        self._reset_view()
        return self._store.scan

    def save_index(self) -> str | None:
        """Write what a viewer has read (via ingest) to the log's index; never raises.

        Written only if the file still holds what was read: its first frame and the
        last frame applied read back the same (a log replaced meanwhile is not indexed).
        """
        store = self._store
        if not self.cache or self.path is None or not store.runs or store.last_frame is None \
                or isinstance(store.spill, LogSource):
            return None
        with self._log_for_index(self.path) as fd:
            if fd is None:
                return None
            where = self._save_index_from(self.path, fd)
        self.index_path = where or self.index_path
        return where

    def _save_index_from(self, path: str, fd: int) -> str | None:
        store = self._store
        if store.last_frame is None:
            return None
        try:
            st = os.fstat(fd)
            if not _still_holds(fd, st, _read_marks(store)):
                return None
            store.size = st.st_size
            return store_index.save_index(path, fd, st, store, _directory(store))
        except OSError:
            return None

    def index_save(self) -> IndexSave | None:
        """save_index() for a viewer that must not wait for it: taken now (cheap, on the thread that
        ingests), written by IndexSave.write() on another thread, then IndexSave.commit() here again.
        None when there is nothing to save."""
        store = self._store
        if not self.cache or self.path is None or not store.runs or store.last_frame is None \
                or isinstance(store.spill, LogSource):
            return None
        plan = store_index.prepare_save(self.path, self.file_size, store, _directory(store))
        return None if plan is None else IndexSave(self, plan, _read_marks(store))

    def derived(self, key: str, compute):
        """compute(), or the value it gave for the same key on this log as read so far.

        For summaries that are costly to compute and depend only on what the log
        holds (`weighttui info`'s alerts and latest values): kept as JSON beside
        the log's index and valid while the log's identity and the point read up
        to are the same (a cache with the index's rules; any save of the index
        drops them). The key must name everything else the value depends on
        (code version, options, row view). Without an index (cache=False, a
        small log, no writable place) compute() is called every time.
        """
        directory, covered = self.index_path, self._store.scan.offset
        if not self.cache or self.path is None or directory is None:
            return compute()
        got = store_index.load_derived(directory, self.path, covered, key)
        if got is not None:
            return got[0]
        value = compute()
        store_index.save_derived(directory, self.path, covered, key, value)
        return value

    @contextlib.contextmanager
    def _log_for_index(self, path: str) -> Iterator[int | None]:
        """The log opened read-only (never blocking: log/sniff.py) for the index's checks, or
        None when it cannot be opened: the index is a cache, so no index then, never an error."""
        try:
            fd = open_readonly(path)
        except (OSError, ValueError):
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _same_file(self, fd: int, st) -> bool:
        assert self._ident is not None
        dev, ino, first = self._ident
        if (st.st_dev, st.st_ino) != (dev, ino) or st.st_size < self._store.scan.offset + self._store.scan.pending:
            return False
        return os.pread(fd, len(first), 0) == first

    # -------------------------------------------------------- file level

    @property
    def corruptions(self) -> list[int]:
        """Byte offsets of damaged or invalid frames, whole file."""
        return [off for off, _r in self._store.corruptions]

    @property
    def corruption_reasons(self) -> list[str]:
        return [r for _o, r in self._store.corruptions]

    @property
    def unknown_frames(self) -> int:
        return self._store.unknown_frames

    @property
    def runs(self) -> list[RunSummary]:
        out = []
        for i, r in enumerate(self._store.runs):
            out.append(RunSummary(i, r.record, r.offset, r.rows, r.first_step, r.last_step, r.status))
        return out

    # --------------------------------------------------------- the run

    @property
    def _run(self) -> RunState | None:
        runs = self._store.runs
        if self.run_index is None:
            return runs[-1] if runs else None
        return runs[self.run_index] if 0 <= self.run_index < len(runs) else None

    @property
    def _r(self) -> RunState:
        """The run, where a tensor of it was already found (so it exists)."""
        run = self._run
        if run is None:
            raise KeyError("this log holds no run yet")
        return run

    @property
    def run(self) -> RunRecord | None:
        r = self._run
        return None if r is None else r.record

    @property
    def end(self):
        r = self._run
        return None if r is None else r.end

    @property
    def tensors(self) -> list[TensorInfo]:
        r = self._run
        return [] if r is None else r.tensors

    @property
    def events(self) -> list:
        r = self._run
        return [] if r is None else r.events

    @property
    def record_counts(self) -> dict:
        r = self._run
        if r is None:
            return {n: 0 for n in ("run", "tensors", "snapshot", "scalars", "event", "end", "values")}
        return r.record_counts

    @property
    def snapshot_count(self) -> int:
        """Every snapshot of the run (the row view may show fewer with max_rows)."""
        r = self._run
        return 0 if r is None else r.rows

    @property
    def last_time(self) -> float | None:
        """When the run last wrote a record; for an imported run, its latest snapshot's time (when that
        checkpoint was written: the training's time, not the import's; docs/import.md "Times")."""
        r = self._run
        if r is None:
            return None
        if self.import_meta is not None and self.n:
            times = self.times
            times = times[np.isfinite(times)]
            if times.size:
                return float(times.max())
        return r.last_time

    # ------------------------------------------------------- the row view

    def _shown(self) -> np.ndarray:
        """Snapshot indices of the rows in the row view."""
        run = self._run
        if run is not self._view_run:
            self._thin = _Thinning(self.max_rows)
            self._view_run = run
            self._dense = {}
            self._shown_cache = None
        count = 0 if run is None else run.rows
        hit = self._shown_cache
        if hit is not None and hit[0] == count:
            return hit[1]
        if self.max_rows is None:
            rows = np.arange(count, dtype=np.int64)
        else:
            self._thin.add(count)
            rows = np.array(self._thin.rows, dtype=np.int64)
        self._shown_cache = (count, rows)
        self._fill_maps = {}
        return rows

    @property
    def n(self) -> int:
        """Rows in the row view."""
        return int(self._shown().size)

    def _row_table(self, name: str) -> np.ndarray:
        run = self._run
        shown = self._shown()
        if run is None:
            return np.zeros(0, dtype=np.float64 if name == "times" else np.int64)
        return getattr(run, name).view[shown]

    @property
    def steps(self) -> np.ndarray:
        """Steps of the rows in the row view (every snapshot unless max_rows thins them)."""
        return self._row_table("steps")

    @property
    def epochs(self) -> np.ndarray:
        """Epoch per row, -1 where unknown."""
        return self._row_table("epochs")

    @property
    def times(self) -> np.ndarray:
        return self._row_table("times")

    @property
    def snapshot_index(self) -> np.ndarray:
        """Index of each row among all the run's snapshots (0, 1, 2 ... unless thinned).

        A delta spans one writer snapshot interval, while rows may lie several
        snapshots apart after thinning; dividing the step gap of two rows by
        their index gap gives the writer's interval (diagnose uses it).
        """
        return self._shown().copy()

    @property
    def row_count(self) -> int:
        """Every snapshot of the run: what range reads (start/stop) can reach."""
        return self.snapshot_count

    def rows_for_steps(self, start: int | None = None, stop: int | None = None) -> tuple[int, int]:
        """[lo, hi): the snapshot indices whose steps lie in [start, stop)."""
        run = self._run
        if run is None:
            return 0, 0
        steps = run.steps.view
        lo = 0 if start is None else int(np.searchsorted(steps, start, "left"))
        hi = steps.size if stop is None else int(np.searchsorted(steps, stop, "left"))
        return lo, max(lo, hi)

    def snapshot_rows(self, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, frame offsets) of the run's snapshots [lo, hi) at full resolution (snapshot
        indices, as rows_for_steps gives them): what the row view leaves out, and where each
        snapshot's frame lies for what the store does not keep (data/units.py)."""
        run = self._run
        if run is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        n = run.rows
        hi = n if hi is None else min(max(hi, 0), n)
        lo = min(max(lo, 0), hi)
        return run.steps.view[lo:hi].copy(), run.offsets.view[lo:hi].copy()

    def snapshot_meta(self, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, epochs (-1 where unknown), times) of the run's snapshots [lo, hi) at full
        resolution (snapshot indices, as snapshot_rows): the row view's `steps/epochs/times`
        for the snapshots it leaves out (the viewer's replay cursor walks every one)."""
        run = self._run
        if run is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        n = run.rows
        hi = n if hi is None else min(max(hi, 0), n)
        lo = min(max(lo, 0), hi)
        return run.steps.view[lo:hi].copy(), run.epochs.view[lo:hi].copy(), run.times.view[lo:hi].copy()

    def snapshot_stats(self, index: int, keys: list[tuple[str, str | None]]) -> list[np.ndarray]:
        """One snapshot's values for every tensor column, by its index among all the run's
        snapshots (whether or not the row view has it): per (kind, stat) a [tensor columns] array
        as a row of stat_matrix (NaN where not covered), and for (kind, None) as a row of
        `present`. Read from the store, nothing kept."""
        return [block[0] for block in self._snapshots_stats(np.array([index], dtype=np.int64), keys)]

    def snapshots_stats(self, rows: np.ndarray, keys: list[tuple[str, str | None]]) -> list[np.ndarray]:
        """snapshot_stats for several snapshots (ascending indices): per key a [len(rows), tensor
        columns] array, as the rows of stat_matrix / `present` would hold them for those snapshots; a
        row outside the run is NaN (False). Read from the store, nothing kept."""
        return self._snapshots_stats(np.asarray(rows, dtype=np.int64), keys)

    def _snapshots_stats(self, rows: np.ndarray, keys: list[tuple[str, str | None]]) -> list[np.ndarray]:
        """snapshot_stats for several snapshots (ascending indices): per key a [len(rows), tensor
        columns] array; a row outside the run is NaN (False)."""
        run = self._run
        t = 0 if run is None else len(run.tensors)
        count = 0 if run is None else run.rows
        inside = (rows >= 0) & (rows < count)
        dest = np.flatnonzero(inside)
        rows = rows[inside]
        out = []
        maps, self._fill_maps = self._fill_maps, {}  # the row view's fill maps stay as they are
        try:
            for kind, stat in keys:
                self._kind(kind)
                if stat is None:
                    buf = np.zeros((inside.size, t), dtype=np.bool_)
                    key: tuple = ("weights", None)
                else:
                    cols = COLUMNS[kind]
                    if stat not in cols:
                        raise ValueError(f"{kind} statistics are {self.columns(kind)}, not {stat!r}")
                    buf = np.full((inside.size, t), np.nan)
                    key = (kind, cols.index(stat))
                if rows.size:
                    self._fill(buf, dest, rows, key)
                out.append(buf)
        finally:
            self._fill_maps = maps
        return out

    def snapshot_block(self, kind: str, stat: str | None, lo: int, hi: int,
                       cols: list[int] | np.ndarray | None = None) -> np.ndarray:
        """[hi - lo, tensor columns] of one statistic (stat None: which tensors each snapshot covered,
        as `present`) over the run's snapshots [lo, hi) at full resolution, whatever the row view
        holds; only `cols` (tensor columns) when given. Read from the store, nothing kept: the alert
        rules read the history this way, a block at a time, so memory stays bounded on any run."""
        run = self._run
        count = 0 if run is None else run.rows
        hi = min(max(int(hi), 0), count)
        lo = min(max(int(lo), 0), hi)
        t = 0 if run is None else len(run.tensors)
        # a few tensors of sealed snapshots: their own slices (tensor-major store); the unsealed tail
        # is read as the row view's matrices read it (a per-tensor read would merge it first)
        if cols is not None and len(cols) * 8 <= t and run is not None and hi <= run.sealed_rows:
            shape = (hi - lo, len(cols))
            out = np.zeros(shape, dtype=np.bool_) if stat is None else np.full(shape, np.nan)
            if hi > lo:
                want = np.arange(lo, hi, dtype=np.int64)
                if stat is not None:
                    self._kind(kind)
                    if stat not in COLUMNS[kind]:
                        raise ValueError(f"{kind} statistics are {self.columns(kind)}, not {stat!r}")
                    s = COLUMNS[kind].index(stat)
                for j, col in enumerate(cols):
                    # (the kind's own entries, as the row view's matrices are filled)
                    got = self._entries("weights" if stat is None else kind, int(col), want)
                    if not got:
                        continue
                    rows = np.concatenate([e[4] for e in got]) - lo
                    if stat is None:
                        out[rows, j] = True
                    else:
                        out[rows, j] = np.concatenate([stat_take(seg, s, a + np.flatnonzero(mask))
                                                       for seg, a, _b, mask, _r in got])
            return out
        block = self._snapshots_stats(np.arange(lo, hi, dtype=np.int64), [(kind, stat)])[0]
        return block if cols is None else block[:, cols]

    NONFINITE_BLOCK = 4096

    def first_nonfinite(self, kind: str, upto: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tensor column, the first of the run's snapshots 0..`upto` (default: all), at full
        resolution, whose `kind` statistics count a NaN or Inf (-1 where none), and its NaN and
        Inf counts there. A thinned row view (max_rows) may leave out the one snapshot that held
        a NaN; the alerts read this so that it is never lost. Scanned once, extended as the run
        grows (the result for a snapshot never changes)."""
        run = self._run
        t = 0 if run is None else len(run.tensors)
        count = 0 if run is None else run.rows
        upto = count - 1 if upto is None else min(int(upto), count - 1)
        hit = self._nonfinite.get(kind)
        if hit is None or hit[0] is not run:
            hit = (run, 0, np.full(0, -1, dtype=np.int64), np.zeros(0), np.zeros(0))
        _run, done, first, nan, inf = hit
        if first.size < t:  # tensors declared since
            grow = t - first.size
            first = np.concatenate((first, np.full(grow, -1, dtype=np.int64)))
            nan, inf = np.concatenate((nan, np.zeros(grow))), np.concatenate((inf, np.zeros(grow)))
        if run is not None and self.has_kind(kind):
            step = self.NONFINITE_BLOCK  # snapshots per read: memory bounded on any run
            for lo in range(done, upto + 1, step):
                if self._no_nonfinite(run, kind, lo, min(lo + step, upto + 1)):
                    continue
                rows = np.arange(lo, min(lo + step, upto + 1), dtype=np.int64)
                n_m, i_m = self._snapshots_stats(rows, [(kind, "nan"), (kind, "inf")])
                with np.errstate(invalid="ignore"):
                    bad = ((n_m > 0) | (i_m > 0)) & (first[: n_m.shape[1]] < 0)[None, :]
                cols = np.flatnonzero(bad.any(axis=0))
                at = np.argmax(bad[:, cols], axis=0)
                first[cols], nan[cols], inf[cols] = rows[at], n_m[at, cols], i_m[at, cols]
            done = max(done, upto + 1)
        self._nonfinite[kind] = (run, done, first, nan, inf)
        keep = (first >= 0) & (first <= upto)
        return np.where(keep, first, -1)[:t], nan[:t], inf[:t]

    @staticmethod
    def _no_nonfinite(run: RunState, kind: str, lo: int, hi: int) -> bool:
        """Whether snapshots [lo, hi) surely count no NaN or Inf of `kind`: every sealed segment over
        them keeps its nan and inf columns as one value that is not above 0 (a Const - the usual
        case - or a column no block carried: NaN), so nothing need be read."""
        if hi > run.sealed_rows:
            return False
        cols = COLUMNS[kind]
        at = [cols.index("nan"), cols.index("inf")]
        for seg in run.sealed(kind):
            if seg.row1 <= lo or seg.row0 >= hi:
                continue
            for s in at:
                col = seg.stats[s] if s < seg.width else None
                if col is not None and (not isinstance(col, Const) or col.values(seg, 0, 1)[0] > 0):
                    return False
        return True

    def upto_snapshot(self, index: int) -> RunData | RowsUpTo:
        """The rows as of the run's snapshot `index`, at full resolution near it: what is computed
        *at* a position the replay cursor reached (alerts, a sort, the change table) reads this.

        A row view that holds every snapshot (not thinned): this RunData (its rows 0..index are
        the history). A thinned one (max_rows): a `RowsUpTo`, the row view's rows before the last
        `UPTO_TAIL` snapshots up to `index`, then those snapshots, every one, read from the store."""
        shown = self._shown()
        if shown.size == self.snapshot_count:
            return self  # (also with no snapshots yet)
        return RowsUpTo(self, index)

    @property
    def tensor_names(self) -> list[str]:
        """Names of the run's tensors, in declaration order, each once."""
        run = self._run
        if run is None:
            return []
        return [t.name for i, t in enumerate(run.tensors) if run.col_of_name.get(t.name) == i]

    def tensor(self, name: str) -> TensorInfo:
        return self.tensors[self._col(name)]

    def column(self, name: str) -> int:
        """The tensor's column in stat_matrix() and present."""
        return self._col(name)

    def _col(self, name: str) -> int:
        run = self._run
        try:
            return run.col_of_name[name]  # type: ignore[union-attr]
        except (KeyError, AttributeError):
            raise KeyError(f"no tensor named {name!r} in this run") from None

    def _cols_named(self, name: str) -> list[int]:
        """Every declaration's column of a name, oldest first: a tensor that changed shape
        (a model rebuilt, a layer resized) is declared again under a new id, and a statistic
        or histogram of it reads across all of them."""
        latest = self._col(name)
        run = self._r
        if len(run.col_of_name) == len(run.tensors):  # no name declared twice
            return [latest]
        return [i for i, t in enumerate(run.tensors) if t.name == name]

    def _kind(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        run = self._run
        return None if run is None else run.kinds[kind]

    def has_kind(self, kind: str) -> bool:
        kc = self._kind(kind)
        return bool(kc is not None and kc.seen)

    def columns(self, kind: str = "weights") -> tuple[str, ...]:
        """The statistics of this kind the run has: the format's base columns, and
        the optional ones (instruments, docs/instruments.md) that some snapshot carried."""
        kc = self._kind(kind)
        if kc is None:
            return BASE_COLUMNS[kind]
        return tuple(c for c, f in zip(kc.columns, kc.filled, strict=True) if f)

    def release_views(self) -> None:
        """Drop the row view's dense matrices built so far; they are built again from the store
        when asked for. A viewer holding many runs (the multi-run app, after a run's alerts)
        keeps only what it shows."""
        self._dense = {}
        self._fill_maps = {}

    def stat_matrix(self, kind: str, stat: str, *, keep: bool = True) -> np.ndarray:
        """[rows, tensor columns] of one statistic over the row view (NaN where not covered;
        every statistic of log/schema.COLUMNS can be asked for, NaN where the log has none).

        Kept and extended as rows arrive; keep=False: a matrix not kept already is built for
        this call only (a caller that reads every statistic once holds one at a time)."""
        self._kind(kind)
        cols = COLUMNS[kind]
        if stat not in cols:
            raise ValueError(f"{kind} statistics are {self.columns(kind)}, not {stat!r}")
        key = (kind, cols.index(stat))
        if keep or key in self._dense:
            return self._dense_matrix(key, np.nan, np.float64)
        out = self._dense_matrix(key, np.nan, np.float64)
        del self._dense[key]
        return out

    @property
    def present(self) -> np.ndarray:
        """[rows, tensor columns]: which tensors each row's snapshot covered."""
        return self._dense_matrix(("weights", None), False, np.bool_)

    def _dense_matrix(self, key, fill, dtype) -> np.ndarray:
        shown = self._shown()
        run = self._run
        t = 0 if run is None else len(run.tensors)
        n = shown.size
        hit = self._dense.get(key)
        if hit is not None and hit.run is run and hit.buf.shape[1] >= t:
            old = hit.rows
            k = min(old.size, n)
            same = int(np.argmin(old[:k] == shown[:k])) if k and not np.array_equal(old[:k], shown[:k]) else k
            if same == old.size and n <= hit.buf.shape[0] and same == n:
                return hit.buf[:n, :t]
            if same >= old.size - 1:  # appended rows (and perhaps the newest replaced): extend in place
                buf = hit.buf
                if n > buf.shape[0]:
                    buf = np.concatenate((buf, np.full((max(n, 2 * buf.shape[0]) - buf.shape[0], buf.shape[1]),
                                                       fill, dtype=dtype)))
                buf[same:n] = fill
                self._fill(buf, np.arange(same, n), shown[same:], key)
                hit.rows, hit.buf = shown, buf
                return buf[:n, :t]
        cap_t = max(t, 8) if self.max_rows is None else t
        buf = np.full((max(n, 16), max(cap_t, t)), fill, dtype=dtype)
        if run is not None:
            # carry rows over from the old matrix where the row set only shrank (thinning)
            if hit is not None and hit.run is run and hit.rows.size:
                keep = np.isin(shown, hit.rows)
                src = np.searchsorted(hit.rows, shown[keep])
                width = min(hit.buf.shape[1], buf.shape[1])
                buf[np.nonzero(keep)[0], :width] = hit.buf[src, :width]
                need = np.nonzero(~keep)[0]
                self._fill(buf, need, shown[need], key)
            else:
                self._fill(buf, np.arange(n), shown, key)
        self._dense[key] = _Dense(shown, buf, run)
        return buf[:n, :t]

    def _fill(self, buf: np.ndarray, dest: np.ndarray, rows: np.ndarray, key) -> None:
        """buf[dest[i], col] = value of (snapshot rows[i], col) for every entry of those rows."""
        if rows.size == 0:
            return
        if buf.shape[1] < len(self._r.tensors):
            raise AssertionError("dense buffer narrower than the tensors")
        kind, s = key
        run = self._r
        lo, hi = int(rows[0]), int(rows[-1])
        dense_rows = rows.size == hi - lo + 1  # contiguous: position = row - lo
        tail_start = run.sealed_rows
        posmap = None
        for seg in run.sealed(kind):
            if seg.row1 <= lo or seg.row0 > hi:
                continue
            # which entries of the segment are wanted and where they go: the same for every statistic
            hit = self._fill_maps.get(id(seg))
            if hit is not None and hit[0] is seg and hit[1] is rows and np.array_equal(hit[2], dest):
                where = hit[3]
            else:
                if not dense_rows and posmap is None:  # snapshot index -> destination row, -1 where not wanted
                    posmap = np.full(hi + 1, -1, dtype=np.int64)
                    posmap[rows] = dest
                where = self._fill_map(seg, dest, lo, hi, posmap)
                self._fill_maps[id(seg)] = (seg, rows, dest, where)
            if where[0] == "grid":  # every tensor x every row: a 2-D gather
                _g, sel, to, ucols = where
                if sel.size:
                    block = True if s is None else \
                        stat_grid(seg, s, sel, ucols.size)
                    if _runs_on(to) and _runs_on(ucols):  # (the usual case: a slice, 20x a 2-D gather)
                        buf[int(to[0]) : int(to[-1]) + 1, int(ucols[0]) : int(ucols[-1]) + 1] = block
                    else:
                        buf[np.ix_(to, ucols)] = block
            else:
                _g, mask, pos, cols = where
                buf[pos, cols] = True if s is None else stat_take(seg, s, np.flatnonzero(mask))
        if hi < tail_start:
            return
        lookup = {} if dense_rows else dict(zip(rows.tolist(), dest.tolist(), strict=True))
        for piece in reversed(run.kinds[kind].tail):
            r = int(piece["rows"][0]) if piece["rows"].size else -1
            if r < lo:
                break
            if dense_rows:
                if r > hi:
                    continue
                d = dest[r - lo]
            else:
                d = lookup.get(r)
                if d is None:
                    continue
            if s is None:
                buf[d, piece["cols"]] = True
            elif s < piece["stats"].shape[1]:  # (a narrower block: the columns after it stay NaN)
                buf[d, piece["cols"]] = piece["stats"][:, s]

    @staticmethod
    def _fill_map(seg, dest: np.ndarray, lo: int, hi: int, posmap: np.ndarray | None) -> tuple:
        """Where a sealed segment's entries go in a dense matrix: ("grid", rows wanted, their
        destinations, tensor columns) or ("entries", mask, destinations, tensor columns)."""
        grid = seg.grid()
        srows = grid[0] if grid is not None else seg.part("rows")
        if posmap is None:
            mask = (srows >= lo) & (srows <= hi)
            pos = dest[srows[mask] - lo]
        else:
            at = posmap[np.minimum(srows, hi)]
            mask = (at >= 0) & (srows <= hi)
            pos = at[mask]
        if grid is not None:
            return ("grid", np.nonzero(mask)[0], pos, grid[1])
        return ("entries", mask, pos, seg.part("cols")[mask])

    # ----------------------------------------------------- per-tensor reads

    def _range(self, start, stop) -> np.ndarray | None:
        """Snapshot indices wanted: those of the row view (None) or of a step range."""
        if start is None and stop is None:
            return None
        lo, hi = self.rows_for_steps(start, stop)
        return np.arange(lo, hi, dtype=np.int64)

    def _entries(self, kind: str, col: int, want: np.ndarray | None):
        """[(segment, a, b, mask)] of one tensor's entries whose rows are wanted."""
        run = self._r
        shown = self._shown() if want is None else want
        out: list = []
        if not shown.size:
            return out
        lo, hi = int(shown[0]), int(shown[-1])
        contiguous = shown.size == hi - lo + 1
        member = None if contiguous else self._members(shown, hi)
        for seg in run.segment_list(kind):
            if seg.row1 <= lo or seg.row0 > hi:
                continue
            a, b = seg.span(col)
            if a == b:
                continue
            rows = seg.part("rows", a, b)
            mask = (rows >= lo) & (rows <= hi) if member is None else member[np.minimum(rows, hi + 1)]
            out.append((seg, a, b, mask, rows[mask]))
        return out

    def _members(self, shown: np.ndarray, hi: int) -> np.ndarray:
        """[hi + 2] booleans: which snapshot indices are in `shown` (the last one, hi + 1, never):
        a lookup instead of np.isin per segment (a thinned row view: each series() read of the
        detail screen went through ~30 segments, np.isin sorting both sides every time)."""
        hit = self._members_cache
        if hit is not None and hit[0] is shown:
            return hit[1]
        member = np.zeros(hi + 2, dtype=np.bool_)
        member[shown] = True
        self._members_cache = (shown, member)
        return member

    def series(self, name: str, stat: str, kind: str | None = None, *, start: int | None = None,
               stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one statistic of one tensor over the snapshots covering it.

        kind: the block (weights, delta, grad, optim); left out, "weights", or the one block whose
        statistic this is (`cos_prev` is the delta block's). The exports' names `nan_count` and
        `inf_count` read `nan` and `inf`.
        Without start/stop: the rows of the row view; with them: every snapshot
        whose step lies in [start, stop), at full resolution.
        """
        cols = self._cols_named(name)
        stat = {v: k for k, v in EXPORT_NAMES.items()}.get(stat, stat)
        if kind is None:
            owners = [k for k in KINDS if stat in COLUMNS[k]]
            kind = "weights" if "weights" in owners or len(owners) != 1 else owners[0]
        self._kind(kind)
        if stat not in COLUMNS[kind]:
            raise ValueError(f"{kind} statistics are {self.columns(kind)}, not {stat!r}")
        if stat not in BASE_COLUMNS[kind] and stat not in self.columns(kind):
            self._say_not_recorded(kind, stat)
        s = COLUMNS[kind].index(stat)
        want = self._range(start, stop)
        rows, values = _in_row_order([self._stat_rows(col, kind, s, want) for col in cols])
        return self._r.steps.view[rows], values

    def _say_not_recorded(self, kind: str, stat: str) -> None:
        """An instrument's column no snapshot of this run carried reads NaN: said once (a warning), so
        that NaN is not taken for a value."""
        if (kind, stat) not in self._said_not_recorded:
            self._said_not_recorded.add((kind, stat))
            warnings.warn(f"{stat!r} ({kind}) is not in this run: it was recorded without that instrument "
                          "(docs/instruments.md: instruments=True or a list naming it); its values read NaN",
                          stacklevel=3)

    def _stat_rows(self, col: int, kind: str, s: int, want) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) of statistic number `s` of one declaration's column."""
        present = self._entries("weights", col, want)
        rows = np.concatenate([e[4] for e in present]) if present else np.zeros(0, np.int64)
        values = np.full(rows.size, np.nan)
        got = self._entries(kind, col, want) if kind != "weights" else present
        if got:
            krows = np.concatenate([e[4] for e in got])
            # (stat_take: without an index, only the frames of the rows wanted are read back)
            kvals = np.concatenate([stat_take(seg, s, a + np.flatnonzero(mask)) for seg, a, b, mask, _r in got])
            values[np.searchsorted(rows, krows)] = kvals
        return rows, values

    def histograms(self, name: str, kind: str = "weights", *, start: int | None = None,
                   stop: int | None = None):
        """(steps, lo, hi, counts[N, B]) of one tensor; empty arrays if the log has none.

        Without start/stop: the rows of the row view; with them: every snapshot
        whose step lies in [start, stop).
        """
        self._kind(kind)
        want = self._range(start, stop)
        cols = self._cols_named(name)
        got = [e for col in cols for e in self._entries(kind, col, want) if e[0].counts is not None]
        run = self._r
        if not got:
            return run.steps.view[:0].copy(), np.zeros(0), np.zeros(0), np.zeros((0, 0), dtype=np.uint32)
        if len(cols) > 1:  # several declarations of the name: their entries in row order
            got.sort(key=lambda e: int(e[4][0]) if e[4].size else -1)
        rows = np.concatenate([e[4] for e in got])
        # only the entries wanted (a store without an index reads each from its frame: data/store/fromlog.py)
        wanted = [(seg, a + np.flatnonzero(m)) for seg, a, _b, m, _r in got]
        lo = np.concatenate([seg.take("lo", i) for seg, i in wanted])
        hi = np.concatenate([seg.take("hi", i) for seg, i in wanted])
        counts = np.concatenate([seg.take("counts", i).astype(np.uint32) for seg, i in wanted])
        has = (counts.sum(axis=1) > 0) | np.isfinite(lo)
        return run.steps.view[rows[has]], lo[has], hi[has], counts[has]

    def samples(self, name: str, *, start: int | None = None, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values[N, k]) of the tensor's sampled elements (see sample_index)."""
        col = self._col(name)
        k = self.tensors[col].sample_len
        got = self._entries("weights", col, self._range(start, stop))
        run = self._r
        rows = np.concatenate([e[4] for e in got]) if got else np.zeros(0, np.int64)
        steps = run.steps.view[rows]
        out = np.full((rows.size, k), np.nan, dtype=np.float32)
        if not k:
            return steps, out
        at = 0
        for seg, a, b, mask, _r in got:
            idx = a + np.flatnonzero(mask)
            n = idx.size
            if seg.soff is not None and n:
                soff = seg.part("soff", a, b + 1)
                lens = (soff[1:] - soff[:-1])[idx - a]
                flat = seg.take("samples", idx)  # those entries' samples, one after the other
                full = lens == k  # snapshots that carried no samples have none here
                if full.all():
                    out[at:at + n] = flat.reshape(n, k)
                else:
                    starts = np.cumsum(lens) - lens
                    for i in np.nonzero(full)[0]:
                        out[at + i] = flat[starts[i]:starts[i] + k]
            at += n
        return steps, out

    @property
    def scalar_names(self) -> list[str]:
        r = self._run
        return [] if r is None else list(r.scalars)

    def scalars(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        r = self._run
        try:
            steps, vals = r.scalars[name]  # type: ignore[union-attr]
        except (KeyError, AttributeError):
            raise KeyError(f"no scalar named {name!r}; the run has {self.scalar_names}") from None
        return steps.view.copy(), vals.view.copy()

    @property
    def full_steps(self) -> list[int]:
        """Steps at which the log holds complete tensor values."""
        r = self._run
        return [] if r is None else sorted(r.values)

    def to_frame(self):
        """The run's statistics as one tidy pandas DataFrame (see weighttui.data.tidy)."""
        from weighttui.data.tidy import to_frame

        return to_frame(self)

    to_pandas = to_frame

    @property
    def status(self) -> str:
        """finished / failed / interrupted (end record), running or unfinished."""
        if self.end is not None:
            return self.end.status
        if self.run is None:
            return "unfinished"
        return "running" if writer_running(self) else "unfinished"

    # ------------------------------------------------------------ full values

    @property
    def import_meta(self) -> dict | None:
        """What `weighttui import` said of this run (its run meta's "import": source, where steps and
        epochs came from, whether values were kept); None for a recorded run."""
        meta = getattr(self.run, "meta", None)
        imported = meta.get("import") if isinstance(meta, dict) else None
        return imported if isinstance(imported, dict) else None

    @property
    def nan_origin(self) -> dict | None:
        """Where the run's first non-finite value was (its nan_origin event, docs/instruments.md):
        {"step", "tensor" (name), "kind" (weights, grad, delta, optim), "index" (flat), "message"}, or None."""
        event = next((e for e in self.events if e.kind == "nan_origin"), None)
        if event is None:
            return None
        names = {t.id: t.name for t in self.tensors}
        return {"step": event.step, "tensor": names.get(event.tensor) if event.tensor is not None else None,
                "kind": event.where, "index": event.index, "message": event.message}

    @property
    def imported_without_values(self) -> bool:
        """Whether `weighttui import --no-values` wrote this run (so it holds no complete values by choice)."""
        imported = self.import_meta
        return imported is not None and imported.get("values") is False

    def _no_values_reason(self) -> str:
        """Why weights() has nothing, with what would have kept the values for this kind of log."""
        if self.imported_without_values:
            return ("this log holds no complete tensor values: it was imported with --no-values "
                    "(run `weighttui import` again without it to keep them)")
        note = next((e.message for e in self.events if e.kind == "full_epochs"), None)
        if note is not None:  # the recorder said at close why full_epochs stored nothing
            return f"this log holds no complete tensor values: {note}"
        return "this log holds no complete tensor values (record with full_every or full_epochs)"

    def weights(self, step: int | None = None, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Complete tensor values stored at a step (or the last step of an epoch).

        With neither, the latest step that has them. Raises KeyError listing
        the steps that do have values when none match.
        """
        run = self._run
        values = {} if run is None else run.values
        values_epoch = {} if run is None else run.values_epoch
        if not values:
            raise KeyError(self._no_values_reason())
        if step is not None and epoch is not None:
            raise ValueError("give step or epoch, not both")
        if epoch is not None:
            matching = [s for s in self.full_steps if values_epoch.get(s) == epoch]
            if not matching:
                raise KeyError(f"no complete values for epoch {epoch}; they exist for epochs "
                               f"{sorted({e for e in values_epoch.values() if e is not None})} "
                               f"(steps {self.full_steps})")
            step = matching[-1]
            went_on = self._epoch_went_on(epoch, step)
            if went_on is not None:  # values from inside the epoch (full_every) are not its end
                raise KeyError(f"no complete values at the end of epoch {epoch}: the last stored in it are at "
                               f"step {step}, and the epoch went on to step {went_on} (weights(step={step}) "
                               f"reads those; full_epochs=[{epoch}] stores an epoch's end)")
        elif step is None:
            step = self.full_steps[-1]
        if step not in values:
            raise KeyError(f"no complete values at step {step}; they exist at steps {self.full_steps}")
        out, incomplete = {}, []
        by_id = self._r.by_id
        if self.path is None:
            raise KeyError("this RunData has no file to read values from")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            # the values are read from the frames where this reader saw them: only in the file it read
            if self._ident is not None and not self._same_file(fd, os.fstat(fd)):
                raise LogReplaced(f"{self.path} was replaced or truncated since it was read: its values "
                                  "are no longer this run's (weighttui.open it again, or refresh())")
            for tid, chunks in values[step].items():
                info = by_id[tid]
                arr = _assemble(fd, info, chunks)
                if arr is None:
                    incomplete.append(info.name)
                else:
                    out[info.name] = arr
        finally:
            os.close(fd)
        if incomplete:
            warnings.warn(f"incomplete values at step {step} (the writer stopped between chunks): "
                          f"{', '.join(incomplete)}", stacklevel=2)
        return out

    def values_epoch(self, step: int) -> int | None:
        run = self._run
        return None if run is None else run.values_epoch.get(step)

    def _epoch_went_on(self, epoch: int, step: int) -> int | None:
        """The last snapshot step of `epoch` after `step` when the run has two or more such snapshots (None:
        `step` may be its end). One is allowed: weighttui.torch with its optimizer hooked and epochs marked by
        step(epoch=e) records the first step of the next epoch before the call names that epoch, under the
        old number; values taken inside an epoch (full_every) are followed by every later snapshot of it."""
        steps, epochs, _times = self.snapshot_meta()
        later = steps[(epochs == epoch) & (steps > step)]
        return int(later.max()) if later.size >= 2 else None


# Snapshots a RowsUpTo holds at full resolution, up to its position: what the alert rules read
# first (analysis/diagnose._TAIL rows: trailing states, recent windows), the change table's mean
# window (at most 50), and a last update ratio spanning one writer interval.
UPTO_TAIL = 64


class RowsUpTo:
    """A thinned row view as of one snapshot, at full resolution near it (`RunData.upto_snapshot`).

    Its rows: the RunData's row-view rows before snapshot `index - UPTO_TAIL + 1`, then every
    snapshot from there to `index`, read from the store. So what the analysis computes as of a
    replay position sees that snapshot and the ones just before it, every one: its update ratio
    spans one writer interval (diagnose.step_interval divides a row's step gap by its
    snapshot-index gap), as the layer table shows it; an event (a NaN) in them is seen; a mean
    "over 10 snapshots" is over 10 snapshots. Older history is the row view's (thinned).
    It has the row-view accessors the analysis reads (n, steps, epochs, times, snapshot_index,
    present, stat_matrix); everything else is the RunData's, including series()/histograms()
    without start/stop (the RunData's row view).
    """

    def __init__(self, data: RunData, index: int, tail: int = UPTO_TAIL):
        shown = data._shown()
        index = int(min(max(index, 0), max(data.snapshot_count - 1, 0)))
        extra = np.arange(max(0, index - max(tail, 2) + 1), index + 1, dtype=np.int64)
        self._k = int(np.searchsorted(shown, extra[0]))  # the row view's rows before `extra`
        self._data = self.data = data  # (data: the RunData this is a view of)
        self._extra = extra
        self._matrices: dict = {}
        self.index = index
        self.snapshot_index = np.concatenate((shown[: self._k], extra))
        steps, epochs, times = data.snapshot_meta(int(extra[0]), int(extra[-1]) + 1)
        self.steps = np.concatenate((data.steps[: self._k], steps))
        self.epochs = np.concatenate((data.epochs[: self._k], epochs))
        self.times = np.concatenate((data.times[: self._k], times))
        self.n = int(self.steps.size)

    def __getattr__(self, name: str):
        return getattr(self._data, name)

    def _matrix(self, key: tuple[str, str | None], head) -> np.ndarray:
        hit = self._matrices.get(key)
        if hit is None:
            tail = self._data._snapshots_stats(self._extra, [key])[0]
            hit = self._matrices[key] = np.concatenate((head()[: self._k, : tail.shape[1]], tail))
        return hit

    def stat_matrix(self, kind: str, stat: str, *, keep: bool = True) -> np.ndarray:
        return self._matrix((kind, stat), lambda: self._data.stat_matrix(kind, stat, keep=keep))

    @property
    def present(self) -> np.ndarray:
        return self._matrix(("weights", None), lambda: self._data.present)


def _runs_on(idx: np.ndarray) -> bool:
    """Whether indices are consecutive ascending integers (k, k+1, ...)."""
    return bool(idx.size) and int(idx[-1]) - int(idx[0]) + 1 == idx.size and bool((np.diff(idx) == 1).all())


def _in_row_order(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values) of several declarations of one name, merged in row order."""
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    order = np.argsort(rows, kind="stable")
    return rows[order], values[order]


def _assemble(fd: int, info: TensorInfo, chunks) -> np.ndarray | None:
    """A tensor from its values chunks, or None unless they cover it exactly once. Values stored twice at
    one step (two records: a writer's chunks come in order, each record's from offset 0) are read from
    the last record that covers the tensor."""
    records: list[list] = []
    for chunk in sorted(chunks, key=lambda c: c[0]):  # in log order
        if chunk[1] == 0 or not records:
            records.append([])
        records[-1].append(chunk)
    for record in reversed(records):
        got = _assemble_one(fd, info, record)
        if got is not None:
            return got
    return None


def _assemble_one(fd: int, info: TensorInfo, chunks) -> np.ndarray | None:
    size = info.size
    pieces = []
    for frame_offset, start, _n in sorted(chunks, key=lambda c: c[1]):
        got = read_frame_at(fd, frame_offset)
        if got is None:
            return None
        payload = got[1]
        try:
            rec = parse_values(payload, {info.id: info})
        except (InvalidRecord, ValueError):
            return None
        pieces.append((start, rec.value))
    pos = 0
    for start, value in pieces:
        if start != pos:
            return None
        pos += value.size
    if pos != size:
        return None
    flat = np.concatenate([v for _s, v in pieces]) if pieces else np.zeros(0)
    try:
        return flat.reshape(info.shape).copy()
    except ValueError:  # a declared shape numpy cannot hold, e.g. (0, 2**64 - 1): the values, flat
        return flat.copy()


class LogReplaced(KeyError):
    """The file at a RunData's path is no longer the log it read (rewritten, truncated or replaced): what it
    would read at the offsets it knows belongs to another run. (A KeyError, as weights() raises for values
    it cannot give.)"""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoSuchRun(ValueError):
    """`run=N` names no run of the log (an empty RunData would look like an answer)."""


def load(path, *, max_rows: int | None = None, run_index: int | None = None, cache: bool = True,
         index_histograms: bool = True) -> RunData:
    """Read a whole log into a RunData (see `open`)."""
    data = RunData(path, max_rows=max_rows, run_index=run_index, cache=cache, index_histograms=index_histograms)
    try:
        data.refresh()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such run log: {os.fspath(path)}") from None
    held = len(data.runs)
    if held and run_index is not None and not 0 <= run_index < held:  # (none yet: the run may still come)
        raise NoSuchRun(no_such_run(run_index, held))
    return data


def no_such_run(number: int, held: int) -> str:
    """Why `run=number` names no run of a log that holds `held` runs."""
    have = f"runs 0..{held - 1}" if held > 1 else ("run 0" if held else "no run yet")
    return f"run {number}: this log holds {have}"


def open(path, *, run: int | None = None, max_rows: int | None = None, cache: bool = True,  # noqa: A001
         index_histograms: bool = True) -> RunData:
    """Open a run log for reading: `weighttui.open("run.sock").weights(epoch=10)`.

    `run` picks a run by index when the log holds several (mode="a"); the
    latest by default. `max_rows` bounds the row view (steps, stat_matrix,
    present); every snapshot stays reachable through series/histograms/samples
    with start/stop. The log's index is reused and extended (beside the log,
    or under $XDG_CACHE_HOME/weighttui/index); cache=False reads without
    touching the disk. Raises FileNotFoundError for a missing file,
    weighttui.LogFormatError for a file that is not a log or is too new, and
    NoSuchRun (a ValueError) for a `run` the log does not hold (a log with
    no run yet opens empty, as the run may still come). An
    empty or header-only file opens as a run with no snapshots yet.
    index_histograms=False: what this read adds to the index holds statistics
    only (histograms and samples are read back from the log, until a reader
    that indexes them extends it): a faster first read for a caller that
    reads statistics (`weighttui info`).
    """
    return load(path, max_rows=max_rows, run_index=run, cache=cache, index_histograms=index_histograms)
