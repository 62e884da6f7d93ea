"""The framework-free Recorder: a schedule, a tensor registry and a log writer, composed.

Statistics are computed in the calling (training) thread; encoding and I/O
happen on a background writer thread behind a bounded queue (writer.py).
After the constructor returns, nothing raises into the caller: problems are
reported once (reporting.py) on stderr and as an event record where the log
still takes writes, and recording stops or skips, training goes on.

Integrations compute their own statistics blocks and hand them to
`submit()`; `snapshot()` is the numpy path (numpy_path.py) on top of the same
machinery. They use the public parts: `schedule`, `registry`, `reporter`.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np

from weighttui._version import __version__
from weighttui.log.format import FrameType, encode_frame
from weighttui.log.records import TensorInfo
from weighttui.record import instruments as inst
from weighttui.record import lifecycle
from weighttui.record.device_instruments import assemble, locator
from weighttui.record.encode import plain
from weighttui.record.numpy_path import NumpyStats, is_float, to_numpy, value_copy
from weighttui.record.registry import DEFAULT_SAMPLE, Registry
from weighttui.record.reporting import Reporter
from weighttui.record.schedule import Schedule
from weighttui.record.stats import DEFAULT_BINS, Block
from weighttui.record.writer import DEFAULT_CLOSE_TIMEOUT, DEFAULT_QUEUE_SIZE, Job, LogWriter

__all__ = ["Recorder", "scalars_payload"]


def log_int(value, what: str) -> int:
    """A step, epoch or batch as the log stores it (a 64-bit signed integer); ValueError outside that
    range: a call refused and said, where the writer would otherwise fail on it and stop recording."""
    v = int(value)
    if not -(1 << 63) <= v < (1 << 63):
        raise ValueError(f"{what} {v} does not fit the log's 64-bit integers")
    return v


def scalar_value(value) -> float:
    """A scalar's number: a float, a numpy/jax/torch number or an array of one element (a loss of shape
    (1,)); TypeError / ValueError for anything else."""
    try:
        return float(value)
    except TypeError:
        arr = np.asarray(value)
        if arr.size == 1 and arr.dtype.kind in "fiub":
            return float(arr.reshape(()))
        raise


def loggable_name(name: str) -> bool:
    """Whether a name can go into the log (UTF-8: a name decoded from bytes with surrogates cannot)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scalars_payload(step, epoch, values: dict, skipped: list | None = None) -> dict | None:
    """A scalars record of the numeric `values` (others are left out, named in `skipped` with why); None if
    none is numeric."""
    clean = {}
    for k, v in values.items():
        name = str(k)
        if not loggable_name(name):
            if skipped is not None:
                skipped.append((name, "its name is not valid text (UTF-8)"))
            continue
        try:
            clean[name] = scalar_value(v)
        except (TypeError, ValueError):
            if skipped is not None:  # (an importer's non-numeric log entry is not a scalar: it passes none)
                skipped.append((name, f"not a number ({type(v).__name__})"))
            continue
    if not clean:
        return None
    return {"step": log_int(step, "step"), "epoch": None if epoch is None else log_int(epoch, "epoch"),
            "time": time.time(), "values": clean}


class Recorder:
    """Appends snapshots of named tensors to a run log.

    See README for the options; in short: `every` / `epochs` pick which calls
    record, `full_every` / `full_epochs` which store complete values, `include`
    / `exclude` glob patterns pick tensors by name, `delta` keeps previous
    values for update statistics (True: exact copies, "sample": sampled
    elements only, False: none).
    """

    GOES_ON = "training continues"  # what a write failure's message says happens next

    def __init__(
        self,
        path,
        *,
        every: int = 1,
        epochs=None,
        bins: int = DEFAULT_BINS,
        sample: int = DEFAULT_SAMPLE,
        full_every: int | None = None,
        full_epochs=None,
        include=None,
        exclude=None,
        delta=True,
        mode: str = "w",
        meta: dict | None = None,
        framework: str = "numpy",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        fsync_every: float | None = None,
        file_mode: int = 0o600,
        instruments="default",
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ):
        self.schedule = Schedule(every=every, epochs=epochs, full_every=full_every,
                                 full_epochs=full_epochs, include=include, exclude=exclude)
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= 4096:
            raise ValueError(f"bins must be an int in 1..4096, got {bins!r}")
        if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 0:
            raise ValueError(f"sample must be an int >= 0, got {sample!r}")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (truncate) or 'a' (append a new run), got {mode!r}")
        if delta not in (True, False, "exact", "sample", "off"):
            raise ValueError(f"delta must be True, False, 'exact', 'sample' or 'off', got {delta!r}")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError("meta must be a dict")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if not close_timeout > 0:
            raise ValueError(f"close_timeout must be > 0 seconds, got {close_timeout!r}")
        self.path = os.fspath(path)
        self.bins = int(bins)
        self.sample = int(sample)
        self.delta_policy = {True: "exact", False: "off"}.get(delta, delta)
        self.fsync_every = fsync_every
        # 0o600 by default: a log holds the command line (which may carry secrets)
        # and possibly complete weights; pass file_mode=0o644 to share it
        self.file_mode = int(file_mode)
        self.run_id = uuid.uuid4().hex
        self._lock = threading.Lock()  # guards registry + queueing across threads
        # one numpy snapshot at a time: threads sharing a recorder share its delta copies
        self._snapshot_lock = threading.RLock()
        self._last_step: int | None = None  # latest snapshot step queued (steps never go back)
        self.refused = 0  # snapshots refused at the call (their step went back)
        self._pid = os.getpid()
        self._epoch_copy: tuple | None = None  # (step, epoch, infos, copies): the latest call of a chosen epoch
        self.registry = Registry(self.sample, self._lock, on_reshape=self._tensor_reshaped)
        self._plans: dict[tuple, tuple] = {}  # names -> (shapes and dtypes, registry.count, infos): _infos()
        self.reporter = Reporter(event=self._report_event, goes_on=self.GOES_ON)
        self._numpy = NumpyStats(self.bins, self.delta_policy)
        # instrument columns of the numpy path (docs/instruments.md)
        chosen, settings = inst.parse_options(instruments)
        self.instruments = inst.Instruments(chosen, settings)
        self._nonfinite_seen: set[int] = set()
        self._origin_seen = False  # nan_origin is reported once per run
        self._closed = False

        run = {
            "run_id": self.run_id,
            "created": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": [str(a) for a in sys.argv],
            "framework": framework,
            "writer": f"weighttui {__version__}",
            "bins": self.bins,
            "meta": plain(meta or {}),
        }
        self.writer = LogWriter(self.path, mode=mode, run_frame=encode_frame(FrameType.RUN, run),
                                lock=self._lock, reporter=self.reporter, queue_size=queue_size,
                                fsync_every=fsync_every, file_mode=self.file_mode,
                                close_timeout=close_timeout, supersede=self._superseded)
        lifecycle.register(self)

    # ------------------------------------------------------------- counters

    @property
    def queued(self) -> int:
        """Snapshots handed to the writer thread."""
        return self.writer.queued

    @property
    def written(self) -> int:
        """Snapshots the writer thread wrote."""
        return self.writer.written

    @property
    def dropped(self) -> int:
        """Snapshots skipped: the writer fell behind, or failed."""
        return self.writer.dropped

    # -------------------------------------------------------------- schedule

    @property
    def every(self) -> int:
        return self.schedule.every

    @property
    def full_every(self) -> int | None:
        return self.schedule.full_every

    @property
    def active(self) -> bool:
        """False once closed or after a write error stopped recording."""
        return not self._closed and not self.writer.failed

    def should_record(self, step: int, epoch: int | None = None) -> bool:
        if not self.active:
            if self.writer.failed and not self._closed and self.schedule.should_record(step, epoch):
                self.writer.count_missed(step)
            return False
        return self.schedule.should_record(step, epoch)

    def wants_full(self, step: int, epoch: int | None = None) -> bool:
        return self.active and self.schedule.wants_full(step, epoch)

    def full_epoch_due(self, epoch: int | None) -> bool:
        """Whether `epoch` is one `full_epochs` chose and whose values are not stored yet."""
        return self.active and self.schedule.full_epoch_due(epoch)

    def full_epoch_taken(self, epoch: int | None) -> None:
        self.schedule.full_epoch_taken(epoch)

    def note_epoch(self, epoch: int | None) -> None:
        self.schedule.note_epoch(epoch)

    def selects(self, name: str) -> bool:
        """Whether include/exclude let this tensor name through."""
        return self.schedule.selects(name)

    # -------------------------------------------------------------- registry

    def declare(self, name: str, shape, dtype: str, *, layer: str | None = None,
                trainable: bool = True) -> TensorInfo:
        """The tensor's registry entry, declared in the log before first use.

        A name seen again with another shape gets a new id (ids are never reused).
        """
        return self.registry.declare(name, shape, dtype, layer=layer, trainable=trainable)

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return self.registry.tensors

    # ----------------------------------------------------------- numpy path

    def snapshot(self, step, tensors, *, epoch=None, batch=None, grads=None, scalars=None,
                 full: bool | None = None, optim=None) -> bool:
        """Record statistics of `tensors` (name -> array-like) at `step`.

        Returns True if this call recorded a snapshot. `grads` maps the same
        names to gradients; `scalars` are recorded at every call; `full`
        forces (True) or suppresses (False) storing complete values. `optim`
        maps names to optimizer state, {"m": first moment or momentum, "v":
        second moment, "lr", "step", "beta2", "eps"} (docs/instruments.md).

        Epochs (docs/core.md, "Epochs"): the complete values of an epoch that
        `full_epochs` chose are those of its last call, stored when the next
        epoch's first call (or close()) shows that it ended; during such an
        epoch every call keeps a copy of its tensors for that.
        """
        try:
            step = log_int(step, "step")
            epoch = None if epoch is None else log_int(epoch, "epoch")
            if not self.active:
                self.should_record(step, epoch)  # counts a missed snapshot after a failure
                return False
            if full is None:
                full = self.wants_full(step, epoch)
            due, keep = self.epoch_call(step, epoch, bool(full))  # keep: this call may be its epoch's last
            if not (due or keep):
                if scalars:
                    self.scalars(step, epoch=epoch, **scalars)
                return False
            # values beyond float32 (a float64 1e200) or subnormal ones: no warning into the caller's output, and
            # a caller's np.seterr(all="raise") (or -W error) does not cost the snapshot (errstate is per thread)
            with self._snapshot_lock, np.errstate(all="ignore"):
                names, arrays = self._arrays(tensors)
                if keep:
                    infos = [self.declare(n, a.shape, a.dtype.name) for n, a in zip(names, arrays, strict=True)]
                    self._epoch_copy = (step, epoch, infos, [value_copy(a) for a in arrays])
                if not due:
                    if scalars:
                        self.scalars(step, epoch=epoch, **scalars)
                    return False
                return self._take(step, names, arrays, epoch=epoch, batch=batch, grads=grads,
                                  scalars=scalars, full=full, optim=optim)
        except Exception as exc:  # never into the training loop
            self.reporter.failure(exc, "taking a snapshot")
            self._count_failed_call(step, epoch)
            if scalars:  # they go on without the snapshot (submit, which queues them, is the last step)
                self.scalars(step, epoch=epoch, **scalars)
            return False

    def _count_failed_call(self, step, epoch) -> None:
        """A snapshot the schedule asked for and a failure cost: counted in `dropped` (and the end record),
        so that the log says how much of the run it lacks."""
        try:
            epoch = epoch if isinstance(epoch, int) else None
            if self.active and isinstance(step, int) and self.schedule.should_record(step, epoch):
                self.writer.count_missed(step, failed_call=True)
        except Exception:  # (counting must not become a second failure)
            pass

    def _take(self, step: int, names, arrays, *, epoch, batch=None, grads=None, scalars=None,
              full=False, optim=None) -> bool:
        if not self._step_ok(step):
            if scalars:  # recorded at every call, a refused snapshot's too
                self.scalars(step, epoch=epoch, **scalars)
            return False
        infos = self._infos(names, arrays)
        if not infos:
            if scalars:
                self.scalars(step, epoch=epoch, **scalars)
            return False
        stats = self._numpy
        update_sigma = None
        if self.instruments:  # before snapshot() moves the arrays into the previous copies
            prevs = [stats.previous(i) for i in infos]
            with np.errstate(all="ignore"):
                update_sigma = self.instruments.update_sigmas(infos, arrays, prevs)
        grad_rows = self._grad_rows(names, arrays, grads) if grads else None  # numpy, once, for all that follows
        # weights, exact deltas and gradients: one kernel call
        weights, delta, grad = stats.snapshot(infos, arrays, grad_rows)
        optim_block, units, origin = None, None, []
        if self.instruments:
            gmap = {} if grad_rows is None else {n: g for n, g in zip(names, grad_rows, strict=True) if g is not None}
            with np.errstate(all="ignore"):  # NaN/Inf tensors give NaN columns, quietly
                weights, delta, grad, optim_block, units, origin = self._instrument(
                    step, infos, arrays, update_sigma, weights, delta, grad, gmap, optim)
        return self.submit(step, infos, weights, epoch=epoch, batch=batch,
                           delta=delta, grad=grad, optim=optim_block, units=units,
                           sample=stats.samples(infos, arrays),
                           values=[value_copy(a) for a in arrays] if full else None,
                           scalars=scalars, extra_frames=origin)

    def _infos(self, names: list[str], arrays: list[np.ndarray]) -> list[TensorInfo]:
        """The declarations of a snapshot's tensors. A training loop hands the same tensors every
        call: their declarations are looked up once per (names, shapes, dtypes) and kept while the
        registry declares nothing new (declare() per tensor, dtype names included, was a large part
        of a small model's snapshot)."""
        key = tuple(names)
        sig = tuple([(a.shape, a.dtype) for a in arrays])
        plan = self._plans.get(key)
        if plan is not None and plan[0] == sig and plan[1] == self.registry.count:
            return plan[2]
        infos = [self.declare(n, a.shape, a.dtype.name) for n, a in zip(names, arrays, strict=True)]
        if len(self._plans) >= 16:  # tensor sets come and go (a model rebuilt): keep a few
            self._plans.clear()
        self._plans[key] = (sig, self.registry.count, infos)
        return infos

    def epoch_call(self, step: int, epoch: int | None, full: bool) -> tuple[bool, bool]:
        """The epoch bookkeeping of one call, snapshot()'s and that of a path that takes its
        snapshots itself (JAX on the device). A call in another epoch than the kept copy's ends that epoch (its
        complete values are stored). Returns (due: take a snapshot, keep: this call may be its
        chosen epoch's last, so hand its values to keep_epoch_values)."""
        with self._snapshot_lock:
            self._epoch_boundary(epoch)
        return self.should_record(step, epoch) or full, self.schedule.full_epoch_due(epoch)

    def keep_epoch_values(self, step: int, epoch: int | None, infos, copies) -> None:
        """The values of a call that may be its chosen epoch's last (host copies, in infos order)."""
        with self._snapshot_lock:
            self._epoch_copy = (step, epoch, list(infos), list(copies))

    def _epoch_boundary(self, epoch) -> None:
        """A call in another epoch than the kept copy's: that epoch ended at its last call."""
        kept = self._epoch_copy
        if kept is not None and kept[1] != epoch:
            self._epoch_copy = None
            self._store_epoch(kept)

    def _store_epoch(self, kept) -> None:
        step, epoch, infos, copies = kept
        if infos and self.schedule.full_epoch_due(epoch) and self.submit_values(step, infos, copies, epoch=epoch):
            self.schedule.full_epoch_taken(epoch)

    def _finish_numpy(self) -> None:
        """Training ended: the epoch in progress ended at the last call (its values,
        if full_epochs chose it). The numpy path takes no snapshot of its own: its
        caller says which calls are recorded (full=True forces one)."""
        with self._snapshot_lock:
            kept, self._epoch_copy = self._epoch_copy, None
            if kept is not None:
                self._store_epoch(kept)

    def _instrument(self, step, infos, arrays, update_sigma, weights, delta, grad, grads: dict, optim):
        """The numpy path's instrument columns, optim block and NaN-origin event (grads: name ->
        numpy array, those the snapshot could take)."""
        ins = self.instruments
        norms = weights.stats[:, list(weights.names).index("norm")]
        wcols = ins.weights_columns(infos, arrays, norms)
        alpha = ins.alpha_columns(infos, arrays) if "alpha" in ins.chosen else None
        units, unit_events, unit_result = None, [], None
        if "units" in ins.chosen:
            w_norms, g_norms = {}, {}
            for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
                last = ins.units_last(info.name)
                if is_float(arr) and inst.matrix_shape(arr.shape, last) is not None:
                    w_norms[i] = inst.unit_norms(arr, last)
                    g = grads.get(info.name)
                    if g is not None and g.shape == arr.shape:
                        g_norms[i] = inst.unit_norms(g, last)
            wu, gu, units, unit_events = ins.units.update(infos, w_norms, g_norms)
            unit_result = (wu, gu)
        dcols = None
        if delta is not None and inst.fills(ins.chosen, "delta"):
            dcols = ins.delta_columns(infos, arrays, grads, update_sigma, wcols[:, 0])
        # which columns each block carries: one rule for every path (record/device_instruments.py)
        weights, delta, grad = assemble(ins.chosen, weights, delta, grad, wcols, dcols, alpha, unit_result)
        optim_block = None
        if optim and "optim" in ins.chosen:
            optim_block = ins.optim_block(infos, {str(k): v for k, v in optim.items()})
        frames = []
        if "nan_origin" in ins.chosen:
            locate = locator(arrays, [i.name for i in infos], grads, optim, to_numpy)
            frames = self.origin_frames(step, infos, {"weights": weights, "delta": delta, "grad": grad,
                                                       "optim": optim_block}, locate)
        frames += [(FrameType.EVENT, {**e, "step": int(step), "time": time.time()}) for e in unit_events]
        return weights, delta, grad, optim_block, units, frames

    def origin_frames(self, step, infos, blocks, locate) -> list:
        """A `nan_origin` event the first time a snapshot holds a non-finite value."""
        if self._origin_seen:
            return []
        origin = inst.find_origin(step, infos, blocks, locate)
        if origin is None:
            return []
        self._origin_seen = True
        return [(FrameType.EVENT, {**origin.event(), "time": time.time()})]

    def _arrays(self, tensors) -> tuple[list[str], list[np.ndarray]]:
        """The selected tensors as numpy arrays; one that cannot be recorded (a
        dtype, a name that repeats another's) is left out and said once."""
        names: list[str] = []
        arrays: list[np.ndarray] = []
        seen: set[str] = set()
        every = self.schedule.selects_all
        for key, value in tensors.items():
            name = key if type(key) is str else str(key)
            if not (every or self.selects(name)):
                continue
            if name in seen:
                self.left_out(f"dup:{name}", f"tensor {key!r} skipped: its name is {name!r} as a string, "
                                  "like another key of the same snapshot (names are strings in the log)")
                continue
            if not loggable_name(name):  # caught here: in the writer it stopped the whole recording
                self.skip_tensor(name, "its name is not valid text (UTF-8)")
                continue
            try:
                arr = to_numpy(value)
            except Exception as exc:
                self.skip_tensor(name, str(exc))
                continue
            names.append(name)
            seen.add(name)
            arrays.append(arr)
        return names, arrays

    def _grad_rows(self, names: list[str], arrays: list, grads: dict) -> list | None:
        """grads (name -> array-like) as numpy arrays in the rows of `names` (None where a row has
        none, or one that cannot be recorded: left out and said once, as a tensor is: another size
        than its tensor's included); None if no row has one. A gradient named after no tensor of the
        snapshot (a misspelt name) is said once too."""
        if not all(type(k) is str for k in grads):
            grads = {str(k): v for k, v in grads.items()}
        rows = [grads.get(n) for n in names]
        if len(grads) > sum(g is not None for g in rows):
            known = set(names)
            for name in grads:
                if name not in known and self.selects(name):
                    self.left_out(f"grad-name:{name}", f"gradient {name!r} skipped: no tensor of this "
                                      "snapshot has that name")
        if all(g is None for g in rows):
            return None
        out: list = []
        for name, arr, g in zip(names, arrays, rows, strict=True):
            if g is not None:
                try:
                    g = to_numpy(g)
                    if g.size != arr.size:  # (grads swapped or misnamed: not this tensor's gradient)
                        raise ValueError(f"its shape {tuple(g.shape)} is not its tensor's {tuple(arr.shape)}")
                    if g.shape != arr.shape:
                        g = g.reshape(arr.shape)  # the same elements in another shape (flattened, say)
                except Exception as exc:
                    self.left_out(f"grad:{name}", f"gradient of {name!r} skipped: {exc}; the snapshot "
                                      "is recorded without it")
                    g = None
            out.append(g)
        return out if any(g is not None for g in out) else None

    def skip_tensor(self, name: str, why: str) -> None:
        """Tensor `name` cannot be recorded (`why`): left out of every snapshot, said once."""
        self.left_out(f"tensor:{name}", f"tensor {name!r} skipped: {why}; the other tensors are recorded")

    def left_out(self, key: str, message: str) -> None:
        """A tensor (or a gradient) left out of snapshots: `message` said once per `key`, on stderr and in the
        log (a tensor_skipped event)."""
        if self.reporter.once(key, f"weighttui: {message}"):
            self.reporter.record_event("tensor_skipped", message, "warning")

    def _step_ok(self, step: int) -> bool:
        """Refuse a snapshot whose step comes before one already queued (readers
        keep snapshots in step order): said once, counted in `refused`."""
        last = self._last_step
        if last is None or step >= last:
            return True
        self.refused += 1
        self.reporter.once("step_back", (
            f"weighttui: snapshot at step {step} refused: step {last} is already recorded and steps "
            "must not go back (a counter that restarts each epoch? pass a global step, e.g. "
            "epoch * steps_per_epoch + i); later refusals are counted, not printed"))
        return False

    # ----------------------------------------------------------- submission

    def submit(self, step: int, infos, weights: Block, *, epoch=None, batch=None,
               delta: Block | None = None, grad: Block | None = None,
               sample: np.ndarray | None = None, values=None, time_: float | None = None,
               scalars: dict | None = None, extra_frames=(), optim: Block | None = None,
               units: dict | None = None) -> bool:
        """Queue a snapshot whose blocks are already computed (rows follow infos).

        `values`: complete tensor values (numpy arrays, or ("bf16", uint16 bits))
        in infos order, or None. `scalars`: named numbers written with the
        snapshot (in its queue slot: one job per training step). `extra_frames`:
        (FrameType, payload) pairs written right after the snapshot. Returns
        False if the snapshot was dropped.
        """
        if not self.active:
            if self.writer.failed and not self._closed:
                self.writer.count_missed(int(step))  # the writer failed after should_record said yes
            return False
        payload: dict[str, Any] = {
            "step": log_int(step, "step"),
            "epoch": None if epoch is None else log_int(epoch, "epoch"),
            "batch": None if batch is None else log_int(batch, "batch"),
            "time": time.time() if time_ is None else time_,
            "ids": np.array([i.id for i in infos], dtype="<u4"),
            "weights": weights,
            "delta": delta,
            "grad": grad,
            "sample": None if sample is None else np.asarray(sample, dtype="<f4"),
        }
        if optim is not None:  # additions of docs/instruments.md: absent when there are none
            payload["optim"] = optim
        if units is not None:
            payload["units"] = units
        frames = list(extra_frames)
        scalar_record = self._scalars_record(step, epoch, scalars) if scalars else None
        if scalar_record is not None:
            frames.insert(0, (FrameType.SCALARS, scalar_record))
        vals = []
        if values is not None:
            vals = [(int(step), payload["epoch"], info, v) for info, v in zip(infos, values, strict=True)]
        with self._lock:
            if not self._step_ok(int(step)):
                return False
            job = Job(snapshot=payload, values=vals, frames=frames + self._nonfinite_events(step, infos, weights))
            if not self._put(job):
                if scalar_record is not None:  # the scalars go on without their snapshot
                    self._put(Job(frames=[(FrameType.SCALARS, scalar_record)]))
                return False
            self._last_step = int(step)
            self._nonfinite_seen.update(f[1]["tensor"] for f in job.frames if f[1].get("kind") == "nonfinite")
        return True

    def submit_values(self, step: int, infos, values, *, epoch=None) -> bool:
        """Queue complete values without a statistics snapshot (in infos order).

        For integrations that store values at a point that is not a snapshot
        step, e.g. the end of an epoch chosen by `full_epochs` when the last
        snapshot was taken at the same step (a second snapshot there would show
        a zero update). Returns False if dropped (the writer fell behind).
        """
        if not self.active:
            return False
        epoch_ = None if epoch is None else int(epoch)
        vals = [(int(step), epoch_, info, v) for info, v in zip(infos, values, strict=True)]
        with self._lock:
            return self._put(Job(values=vals))

    def _put(self, job: Job) -> bool:
        """Queue job with the declarations it is the first to need (the lock is held)."""
        job.declarations = list(self.registry.pending)
        if not self.writer.put(job):
            return False  # scalars/events are dropped silently with the snapshots
        self.registry.pending.clear()
        return True

    def _nonfinite_events(self, step, infos, weights: Block) -> list:
        """`nonfinite` event frames for tensors whose first NaN/Inf this is."""
        if getattr(weights, "finite", False):  # numpy_path.RawBlock: known finite, not finished here
            return []
        names = list(weights.names)
        if "nan" not in names or "inf" not in names:
            return []
        stats = weights.stats
        bad = np.nonzero((stats[:, names.index("nan")] > 0) | (stats[:, names.index("inf")] > 0))[0]
        events = []
        for row in bad.tolist():
            info = infos[row]
            if info.id in self._nonfinite_seen:
                continue
            nan, inf = int(stats[row, names.index("nan")]), int(stats[row, names.index("inf")])
            events.append((FrameType.EVENT, {
                "step": int(step), "time": time.time(), "level": "error", "kind": "nonfinite",
                "message": f"{info.name}: {nan} NaN and {inf} Inf values first seen at step {step}",
                "tensor": info.id,
            }))
        return events

    def scalars(self, step, *, epoch=None, **values) -> None:
        """Record named numbers (loss, learning rate ...) at `step`."""
        try:
            if not self.active or not values:
                return
            payload = self._scalars_record(step, epoch, values)
            if payload is not None:
                self._put_frame(FrameType.SCALARS, payload)
        except Exception as exc:  # never into the training loop
            self.reporter.failure(exc, "recording scalars")

    def _scalars_record(self, step, epoch, values: dict) -> dict | None:
        """scalars_payload, and each scalar left out said once (stderr and a scalar_skipped event)."""
        skipped: list = []
        payload = scalars_payload(step, epoch, values, skipped)
        for name, why in skipped:
            message = f"scalar {name!r} skipped: {why}; the others are recorded"
            if self.reporter.once(f"scalar:{name}", f"weighttui: {message}"):
                self.reporter.record_event("scalar_skipped", message, "warning")
        return payload

    def event(self, kind: str, message: str, *, level: str = "info", step=None, tensor=None) -> None:
        """An event record: something a person should notice."""
        try:
            if not self.active:
                return
            self._put_frame(FrameType.EVENT, _event_payload(kind, message, level, step, tensor))
        except Exception as exc:  # never into the training loop
            self.reporter.failure(exc, "recording an event")

    def _tensor_reshaped(self, old: TensorInfo, new: TensorInfo) -> None:
        shape = "x".join(map(str, new.shape)) or "scalar"
        was = "x".join(map(str, old.shape)) or "scalar"
        what = f"shape from {was} to {shape}" if old.shape != new.shape else f"dtype from {old.dtype} to {new.dtype}"
        self.event("tensor_reshaped", f"{new.name} changed {what}: a new declaration"
                   f" (id {new.id}); its statistics and histograms read on across both, its samples and"
                   " deltas start again", level="warning")

    def _report_event(self, kind: str, message: str, level: str) -> None:
        self.event(kind, message, level=level)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written (True), or the writer
        stopped or `timeout` seconds passed (False). For callers that hand the
        writer views of memory they are about to reuse (weighttui import)."""
        if not self.active:
            return False
        done = threading.Event()
        with self._lock:
            if not self._put(Job(done=done)):
                return False
        end = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.05):
            if not self.writer.running or (end is not None and time.monotonic() >= end):
                return False
        return not self.writer.failed

    def _put_frame(self, ftype, payload) -> None:
        with self._lock:
            self._put(Job(frames=[(ftype, payload)]))

    # ----------------------------------------------------------------- close

    def close(self, status: str = "finished", error=None, *, deadline: float | None = None) -> None:
        """Flush the queue, write the end record, fsync and close. Idempotent.

        `error`: the exception that ended training (its type and message go to
        the end record). Waits while the writer makes progress, at most
        `close_timeout` seconds without any (see writer.LogWriter.close).
        In a forked child it returns at once: the log is the parent's.
        """
        if self._closed:
            return
        if self._pid != os.getpid():
            self._closed = True
            return
        if status == "finished" and self.active:
            try:
                self._finish_numpy()
            except Exception as exc:  # never into the training loop
                self.reporter.failure(exc, "taking the final snapshot")
        self._closed = True
        lifecycle.unregister(self)
        note = self.schedule.unfired_full_epochs(status)
        if note is not None and not self.writer.failed:
            self.reporter.once("full_epochs", f"weighttui: warning: {note}")
            self._put_frame(FrameType.EVENT, _event_payload("full_epochs", note, "warning"))
        self.writer.close(status, error=error, deadline=deadline)

    def _superseded(self, reason: str) -> None:
        """Another Recorder in this process opened our file: close, and say why."""
        self.reporter.once("superseded", f"weighttui: warning: closing the earlier recorder of {self.path}: {reason}")
        self.close(status="interrupted")

    def _forked(self) -> None:
        """In a forked child (lifecycle): never write the parent's log."""
        self._closed = True
        self.writer.forget_in_child()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        status, error = end_of(exc_type, exc)
        self.close(status=status, error=error)
        return False




def _event_payload(kind, message, level: str, step=None, tensor=None) -> dict:
    return {"step": None if step is None else int(step), "time": time.time(), "level": level,
            "kind": str(kind), "message": str(message), "tensor": None if tensor is None else int(tensor)}


def status_of(exc_type, exc=None) -> str:
    """The end status for a `with` block that ended with exc_type (None: no exception). sys.exit(0) (or
    sys.exit()) inside it is a clean end, any other exit code a failure."""
    if exc_type is None:
        return "finished"
    if issubclass(exc_type, SystemExit):
        return "finished" if getattr(exc, "code", None) in (None, 0) else "failed"
    return "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"


def end_of(exc_type, exc) -> tuple[str, BaseException | None]:
    """(status, the exception the end record names) for a `with` block's __exit__."""
    status = status_of(exc_type, exc)
    return status, (None if status == "finished" else exc)
