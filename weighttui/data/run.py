"""RunData: the columnar, in-memory view of one run in a log.

Frames from `follow.LogTail` are validated (`records.py`) and appended to
dense arrays: for each kind (weights, delta, grad) a `[rows, tensors, stats]`
float64 matrix and, where the log has histograms, `[rows, tensors, bins]`
counts. A row is a snapshot; `present[row, tensor]` says which tensors it
covered. With `max_rows`, old history is decimated (every other row dropped,
the newest row always kept) so memory stays bounded on long runs.

`weighttui.open(path)` reads a whole log into a RunData for scripts and
notebooks; the TUI feeds one incrementally from a follower thread.
"""

from __future__ import annotations

import builtins
import os
import struct
import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from weighttui.data.liveness import writer_running
from weighttui.data.scan import load_indexed
from weighttui.log.format import (
    FRAME_HEADER_SIZE,
    FrameType,
    decode_payload,
    parse_frame_header,
)
from weighttui.log.records import (
    RECORD_NAMES,
    EndRecord,
    EventRecord,
    InvalidRecord,
    RunRecord,
    TensorInfo,
    parse_end,
    parse_event,
    parse_run,
    parse_scalars,
    parse_snapshot,
    parse_tensors,
    parse_values,
)
from weighttui.log.schema import COLUMNS, KINDS
from weighttui.log.tail import LogTail, Poll

STATUSES = ("finished", "failed", "interrupted", "running", "unfinished")


class _KindStore:
    """Statistics (and histograms) of one kind: weights, delta or grad."""

    def __init__(self, columns, rows: int, tensors: int):
        self.columns = tuple(columns)
        self.col_index = {c: i for i, c in enumerate(self.columns)}
        self.stats = np.full((rows, tensors, len(self.columns)), np.nan)
        self.seen = False  # any snapshot carried this block
        self.bins: int | None = None
        self.lo = self.hi = self.counts = None

    def grow(self, rows: int, tensors: int) -> None:
        self.stats = _grown(self.stats, (rows, tensors, self.stats.shape[2]), np.nan)
        if self.counts is not None:
            self.lo = _grown(self.lo, (rows, tensors), np.nan)
            self.hi = _grown(self.hi, (rows, tensors), np.nan)
            self.counts = _grown(self.counts, (rows, tensors, self.bins), 0)

    def clear_row(self, row: int) -> None:
        self.stats[row] = np.nan
        if self.counts is not None:
            self.lo[row] = np.nan
            self.hi[row] = np.nan
            self.counts[row] = 0

    def put(self, row: int, ids: np.ndarray, block) -> None:
        self.seen = True
        if tuple(block.names) == self.columns:  # the usual case: one assignment
            self.stats[row, ids] = block.stats
        else:
            for src, name in enumerate(block.names):
                dst = self.col_index.get(name)
                if dst is not None:  # unknown columns are ignored
                    self.stats[row, ids, dst] = block.stats[:, src]
        if block.hist is not None:
            lo, hi, counts = block.hist
            if self.counts is None:
                rows, tensors = self.stats.shape[:2]
                self.bins = counts.shape[1]
                self.lo = np.full((rows, tensors), np.nan)
                self.hi = np.full((rows, tensors), np.nan)
                self.counts = np.zeros((rows, tensors, self.bins), dtype=np.uint32)
            self.lo[row, ids] = lo
            self.hi[row, ids] = hi
            self.counts[row, ids] = counts

    def keep_rows(self, keep: np.ndarray) -> None:
        n = keep.size
        self.stats[:n] = self.stats[keep]
        self.stats[n:] = np.nan
        if self.counts is not None:
            self.lo[:n], self.hi[:n], self.counts[:n] = self.lo[keep], self.hi[keep], self.counts[keep]
            self.lo[n:], self.hi[n:], self.counts[n:] = np.nan, np.nan, 0


def _grown(arr: np.ndarray, shape, fill) -> np.ndarray:
    if arr.shape == tuple(shape):
        return arr
    new = np.full(shape, fill, dtype=arr.dtype)
    new[tuple(slice(0, s) for s in arr.shape)] = arr
    return new


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


class RunData:
    """The latest run of a log (or the run at `run_index`), as time series.

    Feed it with `ingest(poll)`; read it with the accessors below. Steps,
    epochs and times are per stored row (a snapshot); `series()` and friends
    return only the rows that covered the tensor asked for.
    """

    def __init__(self, path=None, *, max_rows: int | None = None, run_index: int | None = None):
        if max_rows is not None and max_rows < 4:
            raise ValueError("max_rows must be at least 4")
        self.path = None if path is None else os.fspath(path)
        self.max_rows = max_rows
        self.run_index = run_index
        self.corruptions: list[int] = []  # byte offsets, whole file
        self.corruption_reasons: list[str] = []
        self.torn_tail = 0
        self.unknown_frames = 0
        self.resets = 0  # times the file was truncated or replaced under us
        self.runs: list[RunSummary] = []
        self.file_size = 0
        self.last_growth = None  # monotonic time the file last grew
        self._runs_seen = 0
        self._ignoring = False  # past the run asked for
        self._reset_run()

    # ------------------------------------------------------------- state

    def _reset_run(self) -> None:
        self.run: RunRecord | None = None
        self.end: EndRecord | None = None
        self.tensors: list[TensorInfo] = []  # by position (column index)
        self._col_of_id: dict[int, int] = {}
        self._by_id: dict[int, TensorInfo] = {}
        self._col_of_name: dict[str, int] = {}
        self.events: list[EventRecord] = []
        self.record_counts = {name: 0 for name in RECORD_NAMES.values()}
        self._scalars: dict[str, tuple[list, list]] = {}
        self._values: dict[int, dict[int, list]] = {}  # step -> tensor id -> [(frame offset, start, n)]
        self._values_epoch: dict[int, int | None] = {}
        self.snapshot_count = 0  # every snapshot of the run, stored or decimated away
        self.last_time: float | None = None
        self._stride = 1
        self._provisional = False
        self.n = 0
        cap_rows = 64 if self.max_rows is None else min(64, self.max_rows)
        self._steps = np.zeros(cap_rows, dtype=np.int64)
        self._epochs = np.full(cap_rows, -1, dtype=np.int64)
        self._batches = np.full(cap_rows, -1, dtype=np.int64)
        self._times = np.full(cap_rows, np.nan)
        self._gidx = np.zeros(cap_rows, dtype=np.int64)
        self._present = np.zeros((cap_rows, 8), dtype=bool)
        self._stores = {k: _KindStore(COLUMNS[k], cap_rows, 8) for k in KINDS}
        self._sample_cols: dict[int, np.ndarray] = {}  # tensor column -> sample column indices
        self._sample_width = 0
        self._samples = np.full((cap_rows, 0), np.nan, dtype=np.float32)
        self._sample_idx_cache: dict[bytes, np.ndarray] = {}
        self._cols_cache: dict[bytes, np.ndarray] = {}  # snapshot ids bytes -> columns
        self._ids_checked: dict[bytes, int] = {}  # for records.parse_snapshot

    # ----------------------------------------------------------- ingest

    def ingest(self, poll: Poll) -> bool:
        """Apply one poll's results; True if anything visible changed."""
        changed = False
        if poll.reset:
            self.resets += 1
            self.corruptions.clear()
            self.corruption_reasons.clear()
            self.unknown_frames = 0
            self.runs.clear()
            self._runs_seen = 0
            self._ignoring = False
            self._reset_run()
            changed = True
        if poll.size > self.file_size:
            self.last_growth = time.monotonic()
        self.file_size = poll.size or self.file_size
        items = [(f.offset, f) for f in poll.frames] + [(c.offset, c) for c in poll.corruptions]
        items.sort(key=lambda x: x[0])
        for _off, item in items:
            if hasattr(item, "payload"):
                self._apply(item)
            else:
                self._corrupt(item.offset, item.reason)
            changed = True
        return changed

    # -- for scan.load_indexed, the fast whole-file open with max_rows

    def apply_frame(self, frame) -> None:
        """Apply one decoded frame (what ingest does for each frame of a poll)."""
        self._apply(frame)

    def add_corruption(self, offset: int, reason: str) -> None:
        self._corrupt(offset, reason)

    def count_thinned_snapshot(self) -> None:
        """A snapshot that thinning would drop, counted without decoding it."""
        if self._ignoring:
            return
        if self.run is None:
            self._start_run(RunRecord(run_id="", created=0.0), 0, counted=0)
        self.snapshot_count += 1
        self.record_counts["snapshot"] += 1
        self.runs[-1].snapshots = self.snapshot_count

    def reserve_rows(self, rows: int) -> None:
        """Allocate row storage once when the number of rows to come is known."""
        rows = min(rows, self.max_rows) if self.max_rows is not None else rows
        if rows > self._steps.size:
            self._grow(rows, self._present.shape[1])

    def set_thinning(self, stride: int) -> None:
        """Continue as if the stored rows had been thinned incrementally to this stride."""
        self._stride = stride
        self._provisional = bool(self._gidx[self.n - 1] % stride != 0)

    def _corrupt(self, offset: int, reason: str) -> None:
        self.corruptions.append(offset)
        self.corruption_reasons.append(reason)

    def _apply(self, frame) -> None:
        ftype, p = frame.type, frame.payload
        if ftype == FrameType.RUN:
            try:
                record = parse_run(p)
            except (InvalidRecord, ValueError, TypeError) as exc:
                self._corrupt(frame.offset, str(exc))
                return
            self._start_run(record, frame.offset)
            return
        if self._ignoring:
            return
        if self.run is None:  # the run frame was lost: read on under a placeholder
            self._start_run(RunRecord(run_id="", created=0.0), frame.offset, counted=0)
        try:
            if ftype == FrameType.TENSORS:
                infos = parse_tensors(p, self._by_id)
                need = len(self.tensors) + len(infos)
                if need > self._present.shape[1]:  # grow once for a whole declaration
                    self._grow(self._present.shape[0], need)
                for info in infos:
                    self._add_tensor(info)
            elif ftype == FrameType.SNAPSHOT:
                self._add_snapshot(parse_snapshot(p, self._tensor_by_id(), self._ids_checked))
            elif ftype == FrameType.SCALARS:
                s = parse_scalars(p)
                for k, v in s.values.items():
                    steps, vals = self._scalars.setdefault(k, ([], []))
                    steps.append(s.step)
                    vals.append(v)
                self._touch(s.time)
            elif ftype == FrameType.EVENT:
                ev = parse_event(p)
                self.events.append(ev)
                self._touch(ev.time)
            elif ftype == FrameType.END:
                self.end = parse_end(p)
                self.runs[-1].status = self.end.status
                self._touch(self.end.time)
            elif ftype == FrameType.VALUES:
                v = parse_values(p, self._tensor_by_id())
                self._values.setdefault(v.step, {}).setdefault(v.id, []).append(
                    (frame.offset, v.offset, int(v.value.size)))
                self._values_epoch.setdefault(v.step, v.epoch)
            else:
                self.unknown_frames += 1
                return
        except (InvalidRecord, ValueError, TypeError, OverflowError) as exc:
            self._corrupt(frame.offset, str(exc))
            return
        self.record_counts[RECORD_NAMES[FrameType(ftype)]] += 1

    def _start_run(self, record: RunRecord, offset: int, counted: int = 1) -> None:
        self._runs_seen += 1
        if self.run_index is not None and self._runs_seen - 1 > self.run_index:
            self._ignoring = True
            self.runs.append(RunSummary(len(self.runs), record, offset))
            return
        self._reset_run()
        self.run = record
        self.runs.append(RunSummary(len(self.runs), record, offset))
        self.record_counts["run"] += counted
        self._touch(record.created or None)

    def _touch(self, t) -> None:
        if t:
            self.last_time = t if self.last_time is None else max(self.last_time, t)

    def _tensor_by_id(self) -> dict[int, TensorInfo]:
        return self._by_id

    def _add_tensor(self, info: TensorInfo) -> None:
        col = len(self.tensors)
        self.tensors.append(info)
        self._col_of_id[info.id] = col
        self._by_id[info.id] = info
        self._col_of_name[info.name] = col  # a re-declared name points at the newest
        cap = self._present.shape[1]
        if col >= cap:
            self._grow(self._present.shape[0], max(8, cap * 2))
        if info.sample_len:
            start = self._sample_width
            self._sample_width += info.sample_len
            self._sample_cols[col] = np.arange(start, self._sample_width)
            if self._sample_width > self._samples.shape[1]:
                self._samples = _grown(
                    self._samples, (self._samples.shape[0], max(64, self._sample_width * 2)), np.nan)

    def _grow(self, rows: int, tensors: int) -> None:
        self._present = _grown(self._present, (rows, tensors), False)
        for store in self._stores.values():
            store.grow(rows, tensors)
        if rows != self._steps.size:
            self._steps = _grown(self._steps, (rows,), 0)
            self._epochs = _grown(self._epochs, (rows,), -1)
            self._batches = _grown(self._batches, (rows,), -1)
            self._times = _grown(self._times, (rows,), np.nan)
            self._gidx = _grown(self._gidx, (rows,), 0)
            self._samples = _grown(self._samples, (rows, self._samples.shape[1]), np.nan)

    def _add_snapshot(self, s) -> None:
        if self.n and s.step < self._steps[self.n - 1]:
            raise InvalidRecord(f"snapshot step {s.step} goes back from {self._steps[self.n - 1]}")
        for kind in KINDS:
            block = getattr(s, kind)
            store = self._stores[kind]
            if block is not None and block.hist is not None and store.bins is not None \
                    and block.hist[2].shape[1] != store.bins:
                raise InvalidRecord(f"{kind} histogram has {block.hist[2].shape[1]} bins, the run {store.bins}")
        was_n = self.n
        row = self._row_for_next()
        fresh = self.n == was_n + 1 and row == was_n  # rows past n are always blank
        key = s.ids.tobytes()
        cols = self._cols_cache.get(key)
        if cols is None:  # snapshots mostly repeat their ids: map them to columns once
            cols = np.fromiter((self._col_of_id[i] for i in s.ids.tolist()), dtype=np.int64, count=s.ids.size)
            self._cols_cache[key] = cols
        self._steps[row] = s.step
        self._epochs[row] = -1 if s.epoch is None else s.epoch
        self._batches[row] = -1 if s.batch is None else s.batch
        self._times[row] = s.time
        self._gidx[row] = self.snapshot_count
        if not fresh:
            self._present[row] = False
        self._present[row, cols] = True
        for kind in KINDS:
            store = self._stores[kind]
            if not fresh:
                store.clear_row(row)
            block = getattr(s, kind)
            if block is not None:
                store.put(row, cols, block)
        self._samples[row] = np.nan  # (decimation does not blank samples past n)
        if s.sample is not None and s.sample.size:
            self._samples[row, self._sample_columns(cols)] = s.sample
        self.snapshot_count += 1
        summary = self.runs[-1]
        summary.snapshots = self.snapshot_count
        summary.first_step = s.step if summary.first_step is None else summary.first_step
        summary.last_step = s.step
        self._touch(s.time)

    def _sample_columns(self, cols: np.ndarray) -> np.ndarray:
        key = cols.tobytes()
        idx = self._sample_idx_cache.get(key)
        if idx is None:
            parts = [self._sample_cols[c] for c in cols.tolist() if c in self._sample_cols]
            idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            self._sample_idx_cache[key] = idx
        return idx

    def _row_for_next(self) -> int:
        """The row the next snapshot goes in, decimating when max_rows is reached."""
        g = self.snapshot_count
        if self._provisional:  # the newest row was kept only because it was newest
            row = self.n - 1
        else:
            if self.max_rows is not None and self.n >= self.max_rows:
                self._decimate()
                if self._provisional:
                    self._provisional = g % self._stride != 0
                    return self.n - 1
            row = self.n
            self.n += 1
            if row >= self._steps.size:
                cap = self._steps.size * 2
                if self.max_rows is not None:
                    cap = min(cap, self.max_rows)
                self._grow(cap, self._present.shape[1])
        self._provisional = g % self._stride != 0
        return row

    def _decimate(self) -> None:
        """Halve the stored history: keep rows on the doubled stride, and the newest."""
        self._stride *= 2
        g = self._gidx[: self.n]
        keep = np.nonzero(g % self._stride == 0)[0]
        if keep.size == 0 or keep[-1] != self.n - 1:
            keep = np.append(keep, self.n - 1)
        self._provisional = bool(g[-1] % self._stride != 0)
        n = keep.size
        for arr in (self._steps, self._epochs, self._batches, self._times, self._gidx):
            arr[:n] = arr[keep]
        self._present[:n] = self._present[keep]
        self._present[n:] = False
        self._samples[:n] = self._samples[keep]
        for store in self._stores.values():
            store.keep_rows(keep)
        self.n = n
        self._sample_idx_cache.clear()

    # ----------------------------------------------------------- accessors

    @property
    def steps(self) -> np.ndarray:
        """Steps of the stored snapshots (all of them unless decimated)."""
        return self._steps[: self.n].copy()

    @property
    def epochs(self) -> np.ndarray:
        """Epoch per stored snapshot, -1 where unknown."""
        return self._epochs[: self.n].copy()

    @property
    def times(self) -> np.ndarray:
        return self._times[: self.n].copy()

    @property
    def snapshot_index(self) -> np.ndarray:
        """Index of each stored row among all the run's snapshots (0, 1, 2 ... until decimated).

        A delta spans one writer snapshot interval, while stored rows may lie
        several snapshots apart after decimation; dividing the step gap of two
        rows by their index gap gives the writer's interval (diagnose uses it
        to turn update ratios into per-step rates).
        """
        return self._gidx[: self.n].copy()

    @property
    def tensor_names(self) -> list[str]:
        """Names of the run's tensors, in declaration order, each once."""
        return [t.name for i, t in enumerate(self.tensors) if self._col_of_name.get(t.name) == i]

    def tensor(self, name: str) -> TensorInfo:
        return self.tensors[self._col(name)]

    def column(self, name: str) -> int:
        """The tensor's column in stat_matrix() and present."""
        return self._col(name)

    def _col(self, name: str) -> int:
        try:
            return self._col_of_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this run") from None

    def has_kind(self, kind: str) -> bool:
        return self._store(kind).seen

    def _store(self, kind: str) -> _KindStore:
        try:
            return self._stores[kind]
        except KeyError:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}") from None

    def columns(self, kind: str = "weights") -> tuple[str, ...]:
        return self._store(kind).columns

    def stat_matrix(self, kind: str, stat: str) -> np.ndarray:
        """[rows, tensor columns] view of one statistic (NaN where not covered)."""
        store = self._store(kind)
        try:
            col = store.col_index[stat]
        except KeyError:
            raise ValueError(f"{kind} statistics are {store.columns}, not {stat!r}") from None
        return store.stats[: self.n, : len(self.tensors), col]

    @property
    def present(self) -> np.ndarray:
        """[rows, tensor columns]: which tensors each stored snapshot covered."""
        return self._present[: self.n, : len(self.tensors)]

    def series(self, name: str, stat: str, kind: str = "weights") -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one statistic of one tensor over the snapshots covering it."""
        col = self._col(name)
        values = self.stat_matrix(kind, stat)[:, col]
        rows = self.present[:, col]
        return self._steps[: self.n][rows], values[rows].copy()

    def histograms(self, name: str, kind: str = "weights"):
        """(steps, lo, hi, counts[N, B]); empty arrays if the log has none."""
        col = self._col(name)
        store = self._store(kind)
        rows = self.present[:, col]
        steps = self._steps[: self.n][rows]
        if store.counts is None:
            return steps[:0], np.zeros(0), np.zeros(0), np.zeros((0, 0), dtype=np.uint32)
        lo = store.lo[: self.n, col][rows]
        hi = store.hi[: self.n, col][rows]
        counts = store.counts[: self.n, col][rows]
        has = (counts.sum(axis=1) > 0) | np.isfinite(lo)
        return steps[has], lo[has], hi[has], counts[has].copy()

    def samples(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values[N, k]) of the tensor's sampled elements (see sample_index)."""
        col = self._col(name)
        rows = self.present[:, col]
        idx = self._sample_cols.get(col)
        steps = self._steps[: self.n][rows]
        if idx is None:
            return steps, np.zeros((steps.size, 0), dtype=np.float32)
        # columns first: the sample matrix is as wide as all tensors' samples together
        return steps, self._samples[: self.n, idx][rows]

    @property
    def scalar_names(self) -> list[str]:
        return list(self._scalars)

    def scalars(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            steps, vals = self._scalars[name]
        except KeyError:
            raise KeyError(f"no scalar named {name!r}; the run has {self.scalar_names}") from None
        return np.array(steps, dtype=np.int64), np.array(vals, dtype=np.float64)

    @property
    def full_steps(self) -> list[int]:
        """Steps at which the log holds complete tensor values."""
        return sorted(self._values)

    @property
    def status(self) -> str:
        """finished / failed / interrupted (end record), running or unfinished."""
        if self.end is not None:
            return self.end.status
        if self.run is None:
            return "unfinished"
        return "running" if writer_running(self) else "unfinished"

    # ------------------------------------------------------------ full values

    def weights(self, step: int | None = None, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Complete tensor values stored at a step (or the last step of an epoch).

        With neither, the latest step that has them. Raises KeyError listing
        the steps that do have values when none match.
        """
        if not self._values:
            raise KeyError("this log holds no complete tensor values (record with full_every or full_epochs)")
        if step is not None and epoch is not None:
            raise ValueError("give step or epoch, not both")
        if epoch is not None:
            matching = [s for s in self.full_steps if self._values_epoch.get(s) == epoch]
            if not matching:
                raise KeyError(f"no complete values for epoch {epoch}; they exist for epochs "
                               f"{sorted({e for e in self._values_epoch.values() if e is not None})} "
                               f"(steps {self.full_steps})")
            step = matching[-1]
        elif step is None:
            step = self.full_steps[-1]
        if step not in self._values:
            raise KeyError(f"no complete values at step {step}; they exist at steps {self.full_steps}")
        out, incomplete = {}, []
        by_id = self._tensor_by_id()
        with builtins.open(self.path, "rb") as fh:
            for tid, chunks in self._values[step].items():
                info = by_id[tid]
                arr = _assemble(fh, info, chunks)
                if arr is None:
                    incomplete.append(info.name)
                else:
                    out[info.name] = arr
        if incomplete:
            warnings.warn(f"incomplete values at step {step} (the writer stopped between chunks): "
                          f"{', '.join(incomplete)}", stacklevel=2)
        return out

    def values_epoch(self, step: int) -> int | None:
        return self._values_epoch.get(step)


def _read_frame_at(fh, offset: int):
    """Re-read and verify one frame; None if it no longer verifies."""
    fh.seek(offset)
    head = fh.read(FRAME_HEADER_SIZE)
    if len(head) < FRAME_HEADER_SIZE:
        return None
    parsed = parse_frame_header(head, 0)
    if parsed is None:
        return None
    length, ftype = parsed
    rest = fh.read(length + 4)
    if len(rest) != length + 4 or zlib.crc32(rest[:length]) != struct.unpack("<I", rest[length:])[0]:
        return None
    try:
        return decode_payload(rest[:length])
    except ValueError:
        return None


def _assemble(fh, info: TensorInfo, chunks) -> np.ndarray | None:
    """A tensor from its values chunks, or None unless they cover it exactly once."""
    size = info.size
    pieces = []
    for frame_offset, start, n in sorted(chunks, key=lambda c: c[1]):
        payload = _read_frame_at(fh, frame_offset)
        if payload is None:
            return None
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
    return flat.reshape(info.shape).copy()


def load(path, *, max_rows: int | None = None, run_index: int | None = None) -> RunData:
    """Read a whole log into a RunData (see `open`)."""
    data = RunData(path, max_rows=max_rows, run_index=run_index)
    if max_rows is not None:
        # thinning: index the headers and decode only the snapshots that are kept
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such run log: {os.fspath(path)}")
        with builtins.open(path, "rb") as fh:
            load_indexed(data, fh)
        data.last_growth = time.monotonic() if data.file_size else None
        return data
    with LogTail(path) as tail:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such run log: {os.fspath(path)}")
        poll = tail.poll()
        data.ingest(poll)
        data.torn_tail = 0 if tail.resyncing else tail.pending
    return data


def open(path, *, run: int | None = None, max_rows: int | None = None) -> RunData:  # noqa: A001
    """Open a run log for reading: `weighttui.open("run.sock").weights(epoch=10)`.

    `run` picks a run by index when the log holds several (mode="a"); the
    latest by default. Raises FileNotFoundError for a missing file and
    weighttui.LogFormatError for a file that is not a log or is too new.
    An empty or header-only file opens as a run with no snapshots yet.
    """
    return load(path, max_rows=max_rows, run_index=run)
