"""`weighttui import`: checkpoints (or TensorBoard events) into a run log, one tensor in memory at a time.

For each checkpoint, in step order, every tensor is read on its own: its
statistics and histogram; its exact delta against the same tensor in the
previous checkpoint that had it (read again from that file, so no previous
copies are kept in memory); its sampled elements; and, with values on, its
complete values, handed to the Recorder's writer thread before the next
tensor is read. The snapshot row block is small and is submitted last.

Steps and epochs: the checkpoint's own metadata (HF trainer_state.json,
Lightning's global_step/epoch, `epoch`/`step` keys or attributes), else
numbers in its name (`epoch_5`, `checkpoint-500`, `epoch=3-step=120`),
else the epoch (when only that is known), else its position. The run's meta
says which (`meta["import"]`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from concurrent import futures
from dataclasses import dataclass

import numpy as np

from weighttui._version import __version__
from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers import tensor_stats
from weighttui.integrations.importers.base import (
    ImportFileError,
    Meta,
    Reader,
    Spec,
    Unit,
    name_numbers,
    natural_key,
    say,
)
from weighttui.integrations.importers.hf_trainer import HfCheckpointReader, weight_files
from weighttui.integrations.importers.readers import changed, open_reader, written_at
from weighttui.integrations.importers.safetensors_file import SafetensorsReader
from weighttui.log.format import FrameType
from weighttui.log.schema import DELTA_STATS, WEIGHT_STATS
from weighttui.record import kernel
from weighttui.record.recorder import Recorder, scalars_payload
from weighttui.record.stats import DEFAULT_BINS, Block

QUEUE = 4  # writer-queue slots: at most one group's values are in flight (see _drain)
GROUP_MAX = 256  # tensors per kernel call
# Without values, what the kernel calls of the other cores may hold on top of the largest tensor and its
# previous copy (2 x): small tensors are taken while the largest one is (Importer._tensors).
SPARE = 64 * 1024 * 1024
# Without values, checkpoints are taken in batches of at most this many (their files open together) whose
# statistics are computed tensor by tensor first (Importer._chains); ROWS_HELD caps the rows a batch holds.
BATCH = 32
ROWS_HELD = 64 * 1024 * 1024


def default_threads() -> int:
    """Kernel threads: the cores this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


class _ImportRecorder(Recorder):
    GOES_ON = "the import stops"  # not "training continues": no training runs here


class Rewritten(Exception):
    """The checkpoint's file changed while it was read in place: the rest of it is left out."""


def _left_out(exc: Rewritten, rest: list) -> str:
    """What a Rewritten leaves out: the groups not read (the first one being the group that was loading)."""
    names = [n for group in rest for n, _s in group]
    return f"{exc}: {len(names)} tensor(s) from {names[0]} on left out" if names else str(exc)


class LogStopped(OSError):
    """The run log stopped taking writes (the writer said why on stderr): the import stops."""


@dataclass
class Planned:
    unit: Unit
    step: int
    epoch: int | None
    step_from: str
    epoch_from: str | None
    source: object = None  # the version of the file that gave step and epoch (Reader.source); None: any
    scalars_from: str | None = None  # Meta.scalars_from of the file


def _nbytes(spec: Spec) -> int:
    try:
        item = 2 if spec.dtype == "bfloat16" else np.dtype(spec.dtype).itemsize
    except TypeError:
        item = 4
    return math.prod(spec.shape) * item


def _chainable_unit(unit: Unit) -> bool:
    """Whether the unit's files are safetensors (mapped, not read whole at open: a batch of them may be open
    together; Importer.add_all)."""
    if unit.kind == "safetensors":
        return True
    if unit.kind == "hf_checkpoint":
        files = weight_files(unit.path)
        return bool(files) and all(f.endswith(".safetensors") for f in files)
    return False


def _chainable(reader: Reader) -> bool:
    """Whether the reader's tensors are views of mapped safetensors files (Importer._chains)."""
    if isinstance(reader, HfCheckpointReader):
        return bool(reader.parts) and all(_chainable(r) for r in reader.parts)
    return isinstance(reader, SafetensorsReader) and reader.file._mm is not None


def _mapped_view(arr: np.ndarray) -> bool:
    """Whether arr is a view of a memory map (its pages may be given back and mapped again), not a copy."""
    base = arr.base
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


def groups(specs: dict[str, Spec], budget: int | None = None) -> list[list[tuple[str, Spec]]]:
    """Consecutive tensors in groups no larger together than budget (default: the checkpoint's largest
    tensor; a larger tensor is a group of its own): the kernel's threads share a group (whole tensors
    each) while memory holds at most that much (and the previous copies) at a time."""
    if budget is None:
        budget = max((_nbytes(s) for s in specs.values()), default=0)
    out: list[list[tuple[str, Spec]]] = []
    size = 0
    for name, spec in specs.items():
        nb = _nbytes(spec)
        if not out or size + nb > budget or len(out[-1]) >= GROUP_MAX:
            out.append([])
            size = 0
        out[-1].append((name, spec))
        size += nb
    return out


def probe(unit: Unit, copy_dir: str | None = None) -> tuple[Meta, object]:
    """(the unit's own step/epoch, which version of the file said so) (opens and closes it); ImportFileError
    if unreadable."""
    reader = open_reader(unit, mapped=True, copy_dir=copy_dir)
    try:
        return reader.meta, reader.source
    finally:
        reader.close()


def resolve(unit: Unit, meta: Meta, position: int) -> tuple[int | None, int | None, str, str | None]:
    """(step, epoch, where the step came from, where the epoch came from); step None: by position."""
    n_step, n_epoch = name_numbers(unit.label)
    epoch, epoch_from = (meta.epoch, "metadata") if meta.epoch is not None else (
        (n_epoch, "name") if n_epoch is not None else (None, None))
    if meta.step is not None:
        return meta.step, epoch, "metadata", epoch_from
    if n_step is not None:
        return n_step, epoch, "name", epoch_from
    if epoch is not None:
        return epoch, epoch, "epoch", epoch_from
    return None, epoch, "order", epoch_from


def plan(units: list[Unit], report=say, copy_dir: str | None = None,
         skipped: list | None = None) -> list[Planned]:
    """Units in step order with their step and epoch; unreadable ones are reported and left out
    (and appended to skipped as (label, why), for the log's events once it exists)."""
    rows = []
    for i, unit in enumerate(units):
        try:
            meta, source = probe(unit, copy_dir)
        except Exception as exc:  # ImportFileError, or a library's error on a file cut short
            why = str(exc) if isinstance(exc, ImportFileError) else f"{type(exc).__name__}: {exc}"
            report(f"skipped {unit.label}: {why}")
            if skipped is not None:
                skipped.append((unit.label, why))
            continue
        rows.append((unit, resolve(unit, meta, i), source, meta.scalars_from))
    # files that say nothing of their step or epoch (`final.pt`) go after those that do, in name order
    known = [r for r in rows if r[1][0] is not None]
    unknown = [r for r in rows if r[1][0] is None]
    # a directory of mixed files: some with a real step (metadata, name), others only an epoch standing in
    # for one; the two scales do not compare (step 400 of epoch 4 would follow epoch 6): order by epoch
    sources = {r[1][2] for r in known}
    by_epoch = ("epoch" in sources and bool(sources & {"metadata", "name"})
                and all(r[1][1] is not None for r in known))
    if by_epoch:
        known.sort(key=lambda r: (r[1][1], natural_key(r[0].label)))
    else:
        known.sort(key=lambda r: (r[1][0], natural_key(r[0].label)))
    rows = known + unknown
    out: list[Planned] = []
    last = -1
    for unit, (step, epoch, step_from, epoch_from), source, scalars_from in rows:
        if step is None:
            step = last + 1
        step = max(step, last) if step_from == "order" else step
        if by_epoch and step_from == "epoch":
            step = max(step, last + 1)  # after the real step before it
        out.append(Planned(unit, int(step), epoch, step_from, epoch_from, source, scalars_from))
        last = max(last, int(step))
    return out


def _first_of_each_step(planned: list[Planned]) -> list[Planned]:
    """The checkpoints the import writes: a second file of a step is skipped (Importer.add)."""
    out: list[Planned] = []
    seen: set[int] = set()
    for p in planned:
        if p.step not in seen:
            seen.add(p.step)
            out.append(p)
    return out


def summary(planned: list[Planned]) -> dict:
    steps: dict[str, int] = {}
    epochs: dict[str, int] = {}
    for p in planned:
        steps[p.step_from] = steps.get(p.step_from, 0) + 1
        epochs[p.epoch_from or "unknown"] = epochs.get(p.epoch_from or "unknown", 0) + 1
    scalars: dict[str, int] = {}
    for p in planned:
        if p.scalars_from:
            scalars[p.scalars_from] = scalars.get(p.scalars_from, 0) + 1
    return {"step_from": steps, "epoch_from": epochs, **({"scalars_from": scalars} if scalars else {})}


class Importer:
    """Writes checkpoints, in order, as snapshots of one run log (through the public Recorder)."""

    def __init__(self, out: str, *, source: str, kind: str, values: bool = True, bins: int = DEFAULT_BINS,
                 sample: int = 16, meta: dict | None = None, report=say, mode: str = "w", mapped: bool = False,
                 threads: int | None = None):
        self.values = values
        self.mapped = mapped
        self.copy_dir = os.path.dirname(os.path.abspath(out))  # private copies of files that may change
        self.threads = threads if threads is not None else default_threads()
        self.bins = bins
        self.report = report
        info = {"source": os.path.abspath(source), "kind": kind, "values": values,
                "importer": f"weighttui {__version__}"}
        info.update(meta or {})
        self.rec = _ImportRecorder(out, every=1, delta=False, bins=bins, sample=sample, mode=mode,
                            meta={"import": info}, framework=f"weighttui import ({kind})", queue_size=QUEUE)
        self.shapes: dict[str, tuple] = {}
        self.last_seen: dict[str, Reader] = {}  # tensor name -> reader of the last checkpoint holding it
        self.open_readers: list[Reader] = []
        self.last_step: int | None = None
        self.last_label = ""  # the checkpoint imported at last_step
        self.scalar_step = -1  # scalars up to this step are written
        self.snapshots = 0
        self.skipped = 0
        self._lanes: futures.ThreadPoolExecutor | None = None  # kernel calls of the other cores (no values)
        # rows the chains computed ahead (_chains), by (id(reader), name, id(previous reader) or 0), and the
        # readers those ids name (kept alive, so that no id is reused while its rows wait)
        self._pre: dict[tuple[int, str, int], tuple] = {}
        self._pre_readers: list[Reader] = []
        self._stop_chains = False  # set: the chains in flight stop at their next step (_chains)

    # ------------------------------------------------------------ writer queue

    def _drain(self) -> None:
        """Return once the writer has written everything queued (it reads values from views of the
        checkpoint files, whose pages are given back next)."""
        if not self.rec.drain():
            raise LogStopped("the run log stopped taking writes (see the message above)")

    # ------------------------------------------------------------- checkpoints

    def skip(self, label: str, why, *, reported: bool = False) -> None:
        """A checkpoint left out: one line on stderr (unless said already) and a warning event in the log."""
        self.skipped += 1
        if not reported:
            self.report(f"skipped {label}: {why}")
        self.rec.event("import_skipped", f"{label}: {why}", level="warning")

    def add(self, p: Planned, reader: Reader | None = None) -> bool:
        """Import one checkpoint; False (reported) if it could not be read."""
        label = p.unit.label
        if self.last_step is not None and p.step < self.last_step:
            self.skip(label, f"its step {p.step} is before the last imported step {self.last_step}")
            return False
        if p.step == self.last_step:  # two files of one step (Lightning's last.ckpt, a copy): one snapshot a step
            self.skip(label, f"step {p.step} is imported already, from {self.last_label}")
            return False
        try:
            if reader is None:
                reader = open_reader(p.unit, mapped=self.mapped, copy_dir=self.copy_dir)
            if p.source is not None and reader.source != p.source:
                reader.close()
                self.skip(label, "rewritten since the import listed it (a trainer still writing it?): "
                          "left out, import it again once it is done")
                return False
            specs = reader.specs()
        except ImportFileError as exc:
            self.skip(label, exc)
            return False
        except Exception as exc:
            self.skip(label, f"{type(exc).__name__}: {exc}")
            return False
        infos, wrows, drows, samples = [], [], [], []
        problems: list[str] = []
        no_delta: dict[str, list[str]] = {}  # why the previous copy could not be read -> tensors
        seen = []
        for name, spec, info, wrow, drow, sample in self._tensors(reader, specs, p, problems, no_delta):
            infos.append(info)
            wrows.append(wrow)
            drows.append(drow)
            if sample is not None:
                samples.append(sample)
            seen.append(name)
            self.shapes.setdefault(name, spec.shape)
        for why, names in no_delta.items():
            problems.append(f"no update statistics for {len(names)} tensor(s) from {names[0]} on: the previous "
                            f"checkpoint's {why}")
        missing = [n for n in self.last_seen if n not in specs]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.append(f"missing {shown} (in earlier checkpoints)")
        if problems:
            self.report(f"{label}: " + "; ".join(problems))
            self.rec.event("import_problem", f"{label}: " + "; ".join(problems), level="warning", step=p.step)
        if not infos:
            self.skip(label, "no tensor could be read")
            reader.close()
            return False
        # scalars of no step of their own (a checkpoint dict's loss) are this checkpoint's
        scalars = [(p.step, p.epoch, v) if s is None else (s, e, v) for s, e, v in reader.meta.scalars]
        frames = self._scalar_frames(scalars, upto=p.step)
        self._drain()  # room in the queue: a refused snapshot would count as dropped
        if not self.rec.submit(p.step, infos, self._weights(wrows), epoch=p.epoch, delta=self._delta(drows),
                               sample=np.concatenate(samples) if samples else None, extra_frames=frames,
                               time_=written_at(p.unit.path)):
            raise LogStopped("the run log stopped taking writes (see the message above)")
        self.snapshots += 1
        self.last_step, self.last_label = p.step, label
        for name in seen:
            self.last_seen[name] = reader
        self.open_readers.append(reader)
        self._close_unused()
        return True

    def _tensors(self, reader: Reader, specs: dict[str, Spec], p: Planned, problems: list[str],
                 no_delta: dict) -> list:
        """[(name, spec, info, weights row, delta row, samples)] of the checkpoint's tensors, in file order.

        With values, one group at a time (its values go to the writer while the kernel's threads share its
        tensors). Without, `threads` lanes, each a kernel call on one thread, take groups (the largest first,
        then in file order) while the groups in flight (and their previous copies) stay within 2 x the
        largest tensor + SPARE: small tensors are taken on the other cores while the largest one is, which
        one kernel call (whole tensors per thread) cannot do. No group is taken once the checkpoint's file
        changed (Rewritten); broken leases are let go of once nothing is in flight (readers.changed).
        """
        lanes = 1 if self.values else self.threads
        if lanes == 1:
            out: list = []
            todo = groups(specs)
            for k, group in enumerate(todo):
                try:
                    out.extend(self._group(reader, group, p, problems, no_delta))
                except Rewritten as exc:
                    problems.append(_left_out(exc, todo[k:]))
                    break
            return out
        largest = max((_nbytes(s) for s in specs.values()), default=0)
        budget = 2 * largest + SPARE
        todo = groups(specs, min(largest, SPARE // 2))
        order = list(range(len(todo)))
        big = max(order, key=lambda k: sum(_nbytes(s) for _n, s in todo[k]), default=0)
        known = self.rec.tensors
        if todo and all(n in known and known[n].shape == s.shape for n, s in todo[big]):
            order.insert(0, order.pop(big))  # the largest first (the others fill in beside it), once declared
        results: list = [[] for _ in todo]
        inflight: dict = {}  # future -> (group index, loaded, cost)
        used, i = 0, 0
        pool = self._pool(lanes)
        try:
            while i < len(order) or inflight:
                while i < len(order) and len(inflight) < lanes:
                    k = order[i]
                    cost = 2 * sum(_nbytes(s) for _n, s in todo[k])
                    if inflight and used + cost > budget:
                        break
                    try:
                        loaded = self._load_group(reader, todo[k], problems, no_delta, let_go=False)
                    except Rewritten as exc:
                        problems.append(_left_out(exc, [todo[j] for j in sorted(order[i:])]))
                        i = len(order)
                        break
                    i += 1
                    if loaded:
                        fut = pool.submit(self._rows, reader, loaded, 1)
                        inflight[fut] = (k, loaded, cost)
                        used += cost
                if not inflight:
                    continue
                finished, _ = futures.wait(inflight, return_when=futures.FIRST_COMPLETED)
                for fut in finished:
                    k, loaded, cost = inflight.pop(fut)
                    used -= cost
                    try:
                        results[k] = self._finish_group(loaded, fut.result(), problems)
                    finally:
                        self._release(reader, loaded)
        finally:
            for fut, (_k, loaded, _c) in inflight.items():  # interrupted: no page is given back under the kernel
                futures.wait([fut])
                self._release(reader, loaded)
        for r in [reader, *self.open_readers]:  # nothing in flight: let go of leases that broke meanwhile
            changed(r)
        return [row for rows in results for row in rows]

    def _pool(self, lanes: int) -> futures.ThreadPoolExecutor:
        if self._lanes is None:
            self._lanes = futures.ThreadPoolExecutor(lanes, thread_name_prefix="weighttui-import")
        return self._lanes

    def _group(self, reader: Reader, group, p: Planned, problems: list[str], no_delta: dict) -> list:
        """[(name, spec, info, weights row, delta row, samples)] of a group of tensors read together (the
        arrays die with this call: views of mapped pages, or copies, are not kept past it)."""
        loaded = []
        try:
            loaded = self._load_group(reader, group, problems, no_delta, let_go=True)
            if not loaded:
                return []
            if self.values:  # written from the files' pages while the statistics are taken
                if not self.rec.submit_values(p.step, [t[2] for t in loaded],
                                              [("bf16", t[3]) if t[4] else t[3] for t in loaded], epoch=p.epoch):
                    raise LogStopped("the run log stopped taking writes (see the message above)")
            done = self._finish_group(loaded, self._rows(reader, loaded, self.threads), problems)
            if self.values:
                self._drain()  # the writer is done with these pages: one group in memory at a time
            return done
        finally:
            self._release(reader, loaded)

    def _rows(self, reader: Reader, loaded: list, threads: int) -> list:
        """tensor_stats.rows_many() of a loaded group: the rows the chains computed ahead where they did (the
        same pair: this tensor of this reader against the same previous reader), the others computed now."""
        out: list = [None] * len(loaded)
        todo = []
        for i, t in enumerate(loaded):
            key = (id(reader), t[0], 0 if t[-1] is None else id(t[-1]))
            got = self._pre.pop(key, None) if self._pre else None
            if got is None:
                todo.append(i)
            else:
                out[i] = got
        if todo:
            rows = tensor_stats.rows_many([loaded[i][3:7] for i in todo], self.bins, threads)
            for i, row in zip(todo, rows, strict=True):
                out[i] = row
        return out

    def _load_group(self, reader: Reader, group, problems: list[str], no_delta: dict, let_go: bool) -> list:
        """[(name, spec, info, arr, bf16, prev, prev_bf16, prev_reader)] of a group: views of (or copies from)
        the files; Rewritten if the checkpoint's own file changed (what was loaded is given back)."""
        loaded: list = []
        # Earlier checkpoints' files mapped in place that someone began to rewrite: no deltas against them
        # (their pages may go), and their leases let go of where nothing reads them now (let_go).
        gone = {id(r): why for r in self.open_readers if (why := changed(r, let_go=let_go)) is not None}
        try:
            for name, spec in group:
                if name in self.shapes and self.shapes[name] != spec.shape:
                    problems.append(f"{name} changed shape {self.shapes[name]} -> {spec.shape} (left out)")
                    continue
                prev_reader = self.last_seen.get(name)
                if prev_reader is not None and id(prev_reader) in gone:
                    no_delta.setdefault(gone[id(prev_reader)], []).append(name)
                    prev_reader = None
                try:
                    loaded.append((name, spec, *self._load(reader, prev_reader, name, spec), prev_reader))
                    continue
                except ImportFileError as exc:
                    problems.append(str(exc))
                except Exception as exc:
                    problems.append(f"tensor {name}: {type(exc).__name__}: {exc}")
                reader.release(name)
                if prev_reader is not None:
                    prev_reader.release(name)
            if loaded:  # a file mapped in place that a trainer began to rewrite: keep what was read before
                why = changed(reader, let_go=let_go)
                if why is not None:
                    raise Rewritten(why)
            return loaded
        except BaseException:
            self._release(reader, loaded)
            raise

    def _finish_group(self, loaded: list, results: list, problems: list[str]) -> list:
        """The rows of a group from the kernel's results, with each tensor's samples."""
        done = []
        for t, res in zip(loaded, results, strict=True):
            name, spec, info, arr, bf16 = t[:5]
            if isinstance(res, Exception):
                problems.append(f"tensor {name}: {type(res).__name__}: {res}")
                continue
            sample = None
            if info.sample_index is not None and arr.size:
                sample = tensor_stats.samples(arr, bf16, info.sample_index)
            done.append((name, spec, info, res[0], res[1], sample))
        return done

    @staticmethod
    def _release(reader: Reader, loaded: list) -> None:
        """Give the pages of loaded tensors (and of their previous copies) back."""
        for t in loaded:
            reader.release(t[0])
            if t[-1] is not None:
                t[-1].release(t[0])

    def _load(self, reader: Reader, prev_reader: Reader | None, name: str, spec):
        """(info, array, bf16, previous copy or None, its bf16) of one tensor; ImportFileError if unusable."""
        arr, bf16 = reader.raw(name)
        if arr.dtype.kind not in "biuf":
            raise ImportFileError(f"tensor {name}: dtype {arr.dtype} is not numeric")
        prev, prev_bf16 = None, False
        if prev_reader is not None:
            prev, prev_bf16 = prev_reader.raw(name)
            if prev.shape != arr.shape:
                raise ImportFileError(f"tensor {name}: the previous checkpoint's copy has shape {prev.shape}")
        info = self.rec.declare(name, spec.shape, spec.dtype, layer=spec.layer)
        return info, arr, bf16, prev, prev_bf16

    # ------------------------------------------------------------- chains (no values)

    def add_all(self, planned: list[Planned]) -> None:
        """add() each planned checkpoint, in order. Without values, where the kernel has chain(), checkpoints
        go in batches: the batch's files are opened, every tensor's statistics are computed tensor by tensor
        along its versions (_chains: each version read three times, not four, and its pages mapped once, not
        twice), then add() writes each checkpoint as before, taking those rows instead of computing them."""
        if self.values or not kernel.has_chain():
            for p in planned:
                self.add(p)
            return
        at = 0
        while at < len(planned):
            if not _chainable_unit(planned[at].unit):  # read whole at open, or not mapped: one at a time
                self.add(planned[at])
                at += 1
                continue
            opened: list[tuple[Planned, Reader | None]] = []
            batch = BATCH
            try:
                while at < len(planned) and len(opened) < batch and _chainable_unit(planned[at].unit):
                    p = planned[at]
                    at += 1
                    try:
                        r: Reader | None = open_reader(p.unit, mapped=self.mapped, copy_dir=self.copy_dir)
                    except Exception:  # add() opens it again, and says why it cannot
                        r = None
                    opened.append((p, r))
                    if len(opened) == 1 and r is not None:  # rows held: about 2 KB per tensor and checkpoint
                        with contextlib.suppress(Exception):
                            batch = max(2, min(BATCH, ROWS_HELD // (2048 * max(1, len(r.specs())))))
                self._chains([(p, r) for p, r in opened if r is not None])
                while opened:
                    for _p, waiting in opened[1:]:  # a trainer rewriting a later file of the batch goes on now
                        if waiting is not None:
                            changed(waiting, let_go=True)  # (add() then says it changed, and leaves it out)
                    p, r = opened.pop(0)
                    if not self.add(p, r) and r is not None and r not in self.open_readers:
                        r.close()
            finally:
                for _p, r in opened:  # not given to add(): the import stopped
                    if r is not None and r not in self.open_readers:
                        r.close()
                self._pre.clear()
                self._pre_readers = []

    def _chains(self, batch: list[tuple[Planned, Reader]]) -> None:
        """The rows of every tensor of the batch's checkpoints (against its previous version, as add() will
        pair them) into self._pre: one task per tensor runs tensor_stats.chain() along its versions, `threads`
        tasks at a time while 2 x their tensors stay within 2 x the largest + SPARE (as _tensors). Only
        safetensors files mapped in place or from a private copy take part (their tensors are views of the
        mapping, whose pages the chain gives back as it goes); anything else, a tensor the kernel hands
        back, or a pair add() pairs otherwise, is computed by add() as before. Nothing is kept if a file
        changed meanwhile."""
        if not batch or not all(_chainable(r) for _p, r in batch):
            return
        shapes = dict(self.shapes)
        versions: dict[str, list[Reader]] = {}
        sizes: dict[str, int] = {}
        last = self.last_step
        for p, r in batch:
            if (p.source is not None and r.source != p.source) or (last is not None and p.step < last):
                continue  # add() leaves it out
            try:
                specs = r.specs()
            except Exception:
                continue
            last = p.step
            for name, spec in specs.items():
                if shapes.setdefault(name, spec.shape) == spec.shape:
                    versions.setdefault(name, []).append(r)
                    sizes[name] = max(sizes.get(name, 0), _nbytes(spec))
        if not versions:
            return
        readers = [r for _p, r in batch]
        self._pre_readers = [*readers, *self.last_seen.values()]
        order = sorted(versions, key=lambda n: -sizes[n])  # the largest first (sorted() keeps file order)
        budget = 2 * max(sizes.values()) + SPARE
        lanes = max(1, self.threads)
        pool = self._pool(lanes)
        inflight: dict = {}
        used, i, stopped = 0, 0, False
        try:
            while i < len(order) or inflight:
                while not stopped and i < len(order) and len(inflight) < lanes:
                    name = order[i]
                    cost = 2 * sizes[name]
                    if inflight and used + cost > budget:
                        break
                    fut = pool.submit(self._chain, name, versions[name], self.last_seen.get(name))
                    inflight[fut] = cost
                    used += cost
                    i += 1
                if not inflight:
                    break
                finished, _ = futures.wait(inflight, return_when=futures.FIRST_COMPLETED)
                for fut in finished:
                    used -= inflight.pop(fut)
                    rows = fut.result()
                    if rows is None:  # a file changed: the other chains stop at their next step
                        stopped = True
                    else:
                        self._pre.update(rows)
                if stopped or any(changed(r, let_go=False) is not None for r in readers):
                    stopped = True  # add() finds out which, lets go of its lease, and says so
                    self._stop_chains = True
        finally:
            self._stop_chains = True
            futures.wait(inflight)  # interrupted: no page is given back under the kernel
            self._stop_chains = False
        if stopped:
            self._pre.clear()

    def _chain(self, name: str, readers: list[Reader], before: Reader | None) -> dict | None:
        """{(id(reader), name, id(previous reader) or 0): rows} of one tensor along its versions (readers, in
        order; before: the reader add() pairs the first with, or None); None if a file it reads changed
        (or another chain said so) before it was done: between two steps, so that a trainer waiting on a
        lease waits for one step, not for the whole chain. Runs on a lane (the kernel lets go of the GIL)."""
        out: dict = {}
        state = {"changed": False}

        def stop(j: int, run: list[int]) -> bool:  # before the step reading versions run[j - 2 .. j]
            step = [readers[run[i]] for i in range(max(0, j - 2), min(j + 1, len(run)))]
            if j < 2 and run[0] == 0 and before is not None:
                step.append(before)
            if self._stop_chains or any(changed(r, let_go=False) is not None for r in step):
                state["changed"] = True
            return state["changed"]

        try:
            arrs = [r.raw(name) for r in readers]
            first = None
            if before is not None:
                try:
                    first = before.raw(name)
                except Exception:
                    first = None
            runs: list[list[int]] = []  # versions the kernel can take one after the other
            for j, (a, bf16) in enumerate(arrs):
                c = tensor_stats.code(a, bf16)
                if c is None or not _mapped_view(a):
                    continue
                if runs and runs[-1][-1] == j - 1 and tensor_stats.code(*arrs[j - 1]) == c \
                        and arrs[j - 1][0].size == a.size:
                    runs[-1].append(j)
                else:
                    runs.append([j])
            for run in runs:
                j0 = run[0]
                prev_r = readers[j0 - 1] if j0 else before
                prev = arrs[j0 - 1] if j0 else first
                if prev is not None and not (_mapped_view(prev[0]) and tensor_stats.code(*prev) == tensor_stats.code(
                        *arrs[j0]) and prev[0].size == arrs[j0][0].size):
                    prev = None
                vs = [arrs[j] for j in run]
                for k, rows in enumerate(tensor_stats.chain(vs, self.bins, first_prev=prev, drop=lambda _k: True,
                                                            stop=lambda j, run=run: stop(j, run))):
                    r = readers[run[k]]
                    p_r = readers[run[k] - 1] if k else (prev_r if prev is not None else None)
                    if rows is not None and (k or prev is not None or prev_r is None):
                        out[(id(r), name, 0 if p_r is None else id(p_r))] = (rows[0], rows[1])
        except Exception:  # add() reads and reports it
            pass
        finally:
            for r in [*readers, *([before] if before is not None else [])]:
                with contextlib.suppress(Exception):
                    r.release(name)
        return None if state["changed"] else out

    def _scalar_frames(self, scalars, upto: int | None) -> list:
        frames = []
        for step, epoch, values in sorted(scalars, key=lambda s: s[0]):
            if step <= self.scalar_step or (upto is not None and step > upto):
                continue
            payload = scalars_payload(step, epoch, values)
            if payload is not None:
                frames.append((FrameType.SCALARS, payload))
        if frames:
            self.scalar_step = max(f[1]["step"] for f in frames)
        return frames

    def _weights(self, rows) -> Block:
        stats = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), len(WEIGHT_STATS))
        lo = np.array([r[1] for r in rows], dtype=np.float64)
        hi = np.array([r[2] for r in rows], dtype=np.float64)
        counts = np.array([r[3] for r in rows], dtype=np.uint32).reshape(len(rows), self.bins)
        return Block(WEIGHT_STATS, stats, (lo, hi, counts))

    def _delta(self, rows) -> Block | None:
        if all(r is None for r in rows):
            return None
        t = len(rows)
        stats = np.full((t, len(DELTA_STATS)), np.nan)
        lo, hi = np.full(t, np.nan), np.full(t, np.nan)
        counts = np.zeros((t, self.bins), dtype=np.uint32)
        for i, r in enumerate(rows):
            if r is None:
                continue
            stats[i], lo[i], hi[i] = r[0], r[1], r[2]
            if r[3] is not None:
                counts[i] = r[3]
        return Block(DELTA_STATS, stats, (lo, hi, counts))

    def _close_unused(self) -> None:
        keep = {id(r) for r in self.last_seen.values()}
        still = []
        for r in self.open_readers:
            if id(r) in keep:
                still.append(r)
            else:
                r.close()
        self.open_readers = still

    def close(self, status: str = "finished") -> None:
        if self._lanes is not None:
            self._lanes.shutdown(wait=True)
            self._lanes = None
        for r in self.open_readers:
            r.close()
        self.open_readers = []
        self.last_seen = {}
        self.rec.close(status)


class NothingImported(ImportFileError):
    """No checkpoint of SRC could be read: the run log was not written (an existing one is left as it was)."""


def import_source(src: str, out: str, *, values: bool = True, bins: int = DEFAULT_BINS,
                  report=say) -> dict:
    """Import SRC (directory, file or glob) into the run log at out; returns a summary dict."""
    from weighttui.integrations.importers.discover import checkpoint_units, source_kind

    kind = source_kind(src)
    if kind == "tensorboard":
        from weighttui.integrations.importers.tensorboard_events import import_events

        return import_events(src, out, bins=bins, report=report)
    units = checkpoint_units(src)
    if not units:
        raise ImportFileError(f"{src}: no checkpoints found (safetensors, .pt/.pth/.bin/.ckpt, .keras/.h5, "
                              ".npz, .json, HF checkpoint-N/ directories, TensorBoard event files)")
    with mapping.leases():  # files read in place are leased: a trainer rewriting one waits for a safe point
        unread: list = []
        planned = plan(units, report=report, copy_dir=os.path.dirname(os.path.abspath(out)), skipped=unread)
        if not planned:  # nothing readable: an existing run log at `out` is left as it is, not emptied
            raise NothingImported(f"{src}: none of its {len(units)} checkpoint(s) could be read (see above); "
                                  f"{out} was not written")
        imp = Importer(out, source=src, kind=kind, values=values, bins=bins, report=report,
                       # (a second file of a step is skipped: Lightning's last.ckpt, an HF final model)
                       meta={**summary(_first_of_each_step(planned)), "checkpoints": len({p.step for p in planned})},
                       mapped=True)
        status = "failed"
        try:
            for label, why in unread:  # reported at planning, before the log existed
                imp.skip(label, why, reported=True)
            imp.add_all(planned)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            imp.close(status)
    return {"kind": kind, "checkpoints": imp.snapshots, "skipped": imp.skipped,
            "out": out}
