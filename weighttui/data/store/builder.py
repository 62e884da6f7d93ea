"""Building the store from a log's frames, incrementally.

`LogIndex.apply(item)` takes what `log.reader.scan_frames` (or a LogTail poll)
yields, in file order, and keeps for every run in the log: its records, row
table (step, epoch, batch, time per snapshot), tensor columns (columns.py),
scalars, events, the end record and where full values lie in the log. Frames
that break the format are counted as corruptions exactly as docs/FORMAT.md says.
The same object is extended later from where it stopped (`scan`), whether it was
built in this process or loaded from an index file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from weighttui.log.format import FrameType
from weighttui.log.reader import ScanState
from weighttui.log.records import (
    RECORD_NAMES,
    EndRecord,
    EventRecord,
    InvalidRecord,
    Omitted,
    RunRecord,
    ScalarsRecord,
    TensorInfo,
    parse_end,
    parse_event,
    parse_prepared,
    parse_run,
    parse_scalars,
    parse_snapshot,
    parse_tensors,
    parse_values,
)
from weighttui.log.schema import KINDS

from .columns import KindColumns, Segment, new_kinds


class Group:
    """The sealed segments of every kind for rows [row0, row1) of a run.

    ref: where an index file holds them (None until saved). kinds may be given
    as a future (a Spiller sealing the group on its thread): reading it waits.
    """

    __slots__ = ("row0", "row1", "_kinds", "ref")

    def __init__(self, row0: int, row1: int, kinds, ref=None):
        self.row0, self.row1, self._kinds, self.ref = row0, row1, kinds, ref

    @property
    def kinds(self) -> dict:
        if not isinstance(self._kinds, dict):
            self._kinds = self._kinds.result()
        return self._kinds


class _Growing:
    """A 1-D numpy array appended to one value at a time (amortised doubling).

    Appended values wait in a list and join the array when it is read (`a`, `view`):
    a list append is a fifth of a numpy item assignment, and a reader appends several
    per snapshot. Appends and reads happen on the thread that ingests.
    """

    __slots__ = ("_a", "_more", "n", "last")

    def __init__(self, dtype, fill=0, data=None):
        self._a = np.full(64, fill, dtype=dtype) if data is None else np.array(data, dtype=dtype)
        self._more: list = []
        self.n = 0 if data is None else self._a.size
        self.last = self._a[self.n - 1].item() if self.n else None  # the latest value

    def append(self, v) -> None:
        self._more.append(v)
        self.n += 1
        self.last = v
        if len(self._more) >= 4096:  # (a table never read - a scalar's - held ~70 bytes of objects a value)
            _ = self.a  # (joins the list to the array)

    @property
    def a(self) -> np.ndarray:
        more = self._more
        if more:
            have = self.n - len(more)
            if self.n > self._a.size:
                grown = np.empty(max(self.n, 2 * self._a.size, 64), dtype=self._a.dtype)
                grown[:have] = self._a[:have]
                self._a = grown
            self._a[have:self.n] = more
            self._more = []
        return self._a

    @property
    def view(self) -> np.ndarray:
        return self.a[: self.n]


@dataclass
class RunState:
    """Everything derived from one run of the log."""

    record: RunRecord
    offset: int  # of its run frame (-1: placeholder for a lost run frame)
    run_offset_valid: bool = True
    end: EndRecord | None = None
    end_offset: int = -1
    tensors: list = field(default_factory=list)  # TensorInfo by column
    tensor_frames: list = field(default_factory=list)  # offsets of its tensors frames
    events: list = field(default_factory=list)
    record_counts: dict = field(default_factory=lambda: {n: 0 for n in RECORD_NAMES.values()})
    last_time: float | None = None

    def __post_init__(self):
        self.col_of_id: dict[int, int] = {}
        self.by_id: dict[int, TensorInfo] = {}
        self.col_of_name: dict[str, int] = {}
        self.steps = _Growing(np.int64)
        self.epochs = _Growing(np.int64, -1)
        self.batches = _Growing(np.int64, -1)
        self.times = _Growing(np.float64, np.nan)
        self.kinds: dict[str, KindColumns] = new_kinds()
        self.offsets = _Growing(np.int64)  # of each snapshot's frame, to re-derive a damaged segment
        self.groups: list[Group] = []  # sealed rows, in order
        self.spill = None  # writes sealed groups out while a big log is being indexed
        self.sealed_rows = 0  # rows [0, sealed_rows) are in segments
        self.scalars: dict[str, tuple[_Growing, _Growing]] = {}
        self.values: dict[int, dict[int, list]] = {}  # step -> tensor id -> [(frame offset, start, n)]
        self.values_epoch: dict[int, int | None] = {}
        self._cols_cache: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        self._cols_last: tuple | None = None  # (ids array, cols_of's answer) of the last snapshot
        self._ids_checked: dict[bytes, int] = {}
        self.version = 0  # bumped whenever rows or segments change
        # some tail piece holds records.Omitted stand-ins (a light scan: histograms and samples left in the
        # log): a merge that keeps them reads them back first (spill.restore_tail)
        self.omits = False

    # -- counts

    @property
    def rows(self) -> int:
        return self.steps.n

    @property
    def first_step(self) -> int | None:
        return int(self.steps.a[0]) if self.steps.n else None

    @property
    def last_step(self) -> int | None:
        return int(self.steps.last) if self.steps.n else None

    @property
    def status(self) -> str:
        return self.end.status if self.end is not None else "unfinished"

    def touch(self, t) -> None:
        if t:
            self.last_time = t if self.last_time is None else max(self.last_time, t)

    # -- tensors

    def add_tensors(self, infos: list[TensorInfo]) -> None:
        for info in infos:
            col = len(self.tensors)
            self.tensors.append(info)
            self.col_of_id[info.id] = col
            self.by_id[info.id] = info
            self.col_of_name[info.name] = col  # a re-declared name points at the newest

    def cols_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(tensor columns, sample lengths or None) of a snapshot's ids; snapshots mostly repeat them."""
        last = self._cols_last
        if last is not None and last[0] is ids:  # (the records of one id set share one read-only ids array)
            return last[1]
        key = ids.tobytes()
        hit = self._cols_cache.get(key)
        if hit is None:
            id_list = ids.tolist()
            cols = np.fromiter((self.col_of_id[i] for i in id_list), dtype=np.int32, count=len(id_list))
            slen = np.fromiter((self.by_id[i].sample_len for i in id_list), dtype=np.int64, count=len(id_list))
            hit = (cols, slen if slen.any() else None)
            self._cols_cache[key] = hit
        if not ids.flags.writeable:
            self._cols_last = (ids, hit)
        return hit

    # -- snapshots

    def add_snapshot(self, s, offset: int) -> None:
        steps = self.steps
        if steps.n and s.step < steps.last:
            raise InvalidRecord(f"snapshot step {s.step} goes back from {steps.last}")
        kinds = self.kinds
        present = [(kinds[kind], block) for kind in KINDS if (block := getattr(s, kind)) is not None]
        for kc, block in present:
            why = kc.check_bins(block)
            if why:
                raise InvalidRecord(why)
        if not self.omits and (type(s.sample) is Omitted
                                or any(b.hist is not None and type(b.hist[2]) is Omitted for _kc, b in present)):
            self.omits = True
        cols, slen = self.cols_of(s.ids)
        row = steps.n
        rows = np.empty(cols.size, dtype=_I32)  # (one for every kind of the snapshot; np.full costs 3x)
        rows.fill(row)
        add_blocks(present, row, cols, s.sample, slen, rows)
        steps.append(s.step)
        self.offsets.append(offset)
        self.epochs.append(-1 if s.epoch is None else s.epoch)
        self.batches.append(-1 if s.batch is None else s.batch)
        self.times.append(s.time)
        self.touch(s.time)
        self.version += 1
        seal_bytes = getattr(self.spill, "seal_bytes", None)
        if any(kc.full(seal_bytes) for kc, _block in present):  # (only a kind added to can have become full)
            self.seal()

    def seal(self, base: bool = False) -> None:
        """Move the tail rows into a new group (base: rewrite the last group with them)."""
        row1 = self.steps.n
        if row1 == self.sealed_rows:
            return
        prev = self.groups[-1] if base and self.groups else None
        if prev is not None:
            self.groups.pop()
        row0 = prev.row0 if prev is not None else self.sealed_rows
        if self.spill is not None and not base:  # sealed and written on the spiller's thread
            group = self.spill(self, row0, row1, {kind: kc.take(row0, row1, kind == "weights")
                                                  for kind, kc in self.kinds.items()})
        else:
            if self.omits:  # (sealed with its histograms and samples: read back what a light scan left)
                self.spill.restore_tail(self)
            group = Group(row0, row1, {kind: kc.seal(row0, row1, kind == "weights",
                                                     prev.kinds.get(kind) if prev else None)
                                       for kind, kc in self.kinds.items()})
        self.groups.append(group)
        self.sealed_rows = row1
        self.omits = False
        self.version += 1

    def sealed(self, kind: str) -> list[Segment]:
        return [g.kinds[kind] for g in self.groups if kind in g.kinds]

    def segment_list(self, kind: str) -> list[Segment]:
        """Sealed segments of a kind and the tail as one more, in row order."""
        out = self.sealed(kind)
        if self.omits:
            self.spill.restore_tail(self)
        tail = self.kinds[kind].tail_segment(self.sealed_rows, self.steps.n, kind == "weights")
        if tail is not None:
            out.append(tail)
        return out


class LogIndex:
    """Every run of one log, the file-level damage, and how far the log was read."""

    def __init__(self):
        self.runs: list[RunState] = []
        self.corruptions: list[tuple[int, str]] = []
        self.unknown_frames = 0
        self.scan = ScanState()  # from the file's start: header (or damaged start) first
        self.size = 0  # file size when last read
        self.version = 0
        self.spill = None  # given to every run (see index.Spiller)
        self.last_frame: tuple[int, int] | None = None  # (offset, type) of the last frame applied

    @property
    def current(self) -> RunState | None:
        return self.runs[-1] if self.runs else None

    def corrupt(self, offset: int, reason: str) -> None:
        self.corruptions.append((offset, reason))
        self.version += 1

    def apply(self, item) -> None:
        """One Frame or Corruption, in file order."""
        self.version += 1
        if not hasattr(item, "payload"):
            self.corrupt(item.offset, item.reason)
            return
        ftype, p, off = item.type, item.payload, item.offset
        self.last_frame = (off, ftype)
        if ftype == FrameType.RUN:
            try:
                record = parse_run(p)
            except (InvalidRecord, ValueError, TypeError) as exc:
                self.corrupt(off, str(exc))
                return
            self.runs.append(RunState(record, off))
            self.runs[-1].spill = self.spill
            self.runs[-1].record_counts["run"] += 1
            self.runs[-1].touch(record.created or None)
            return
        run = self.current
        if run is None:  # the run frame was lost: read on under a placeholder
            run = RunState(RunRecord(run_id="", created=0.0), off, run_offset_valid=False)
            run.spill = self.spill
            self.runs.append(run)
        try:
            if ftype == FrameType.SNAPSHOT:
                parse = parse_prepared if type(p) is tuple else parse_snapshot  # (scan_frames(prepared=True))
                run.add_snapshot(parse(p, run.by_id, run._ids_checked), off)
            elif ftype == FrameType.SCALARS:
                s = ScalarsRecord(*p) if type(p) is tuple else parse_scalars(p)  # (frames.scalars' tuple)
                for k, v in s.values.items():
                    pair = run.scalars.get(k)
                    if pair is None:
                        pair = run.scalars[k] = (_Growing(np.int64), _Growing(np.float64))
                    pair[0].append(s.step)
                    pair[1].append(v)
                run.touch(s.time)
            elif ftype == FrameType.TENSORS:
                run.add_tensors(parse_tensors(p, run.by_id))
                run.tensor_frames.append(off)
            elif ftype == FrameType.EVENT:
                ev = parse_event(p)
                run.events.append(ev)
                run.touch(ev.time)
            elif ftype == FrameType.END:
                run.end = parse_end(p)
                run.end_offset = off
                run.touch(run.end.time)
            elif ftype == FrameType.VALUES:
                v = parse_values(p, run.by_id)
                run.values.setdefault(v.step, {}).setdefault(v.id, []).append((off, v.offset, int(v.value.size)))
                run.values_epoch.setdefault(v.step, v.epoch)
            else:
                self.unknown_frames += 1
                return
        except (InvalidRecord, ValueError, TypeError, OverflowError) as exc:
            self.corrupt(off, str(exc))
            return
        run.record_counts[_RECORD_NAME[ftype]] += 1


def add_blocks(present, row: int, cols: np.ndarray, sample, slen, rows=None) -> None:
    """One snapshot's blocks into their kinds' columns (`present`: (KindColumns, block) pairs; cols and
    slen: RunState.cols_of its ids); the snapshot's sample goes with the weights block."""
    for kc, block in present:
        if kc.kind == "weights" and sample is not None and slen is not None:
            kc.add(row, cols, block, sample, slen, rows=rows)
        else:
            kc.add(row, cols, block, rows=rows)


_I32 = np.dtype(np.int32)
_RECORD_NAME = {int(t): name for t, name in RECORD_NAMES.items()}  # (FrameType(t) costs more than the rest)


def event_to_json(ev: EventRecord) -> list:
    # (where, index: a nan_origin event's kind and flat index, which info and the alerts name)
    return [ev.step, ev.time, ev.level, ev.kind, ev.message, ev.tensor, ev.where, ev.index]


def event_from_json(v: list) -> EventRecord:
    step, t, level, kind, message, tensor, where, index = v
    return EventRecord(step=step, time=t, level=level, kind=kind, message=message, tensor=tensor,
                       where=where, index=index)
