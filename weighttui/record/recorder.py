"""The framework-free Recorder: schedule, tensor registry, writer thread.

Statistics are computed in the calling (training) thread; encoding and I/O
happen on a background writer thread behind a bounded queue. After the
constructor returns, nothing raises into the caller: problems are reported
once on stderr (and as an event record where the log still takes writes) and
recording stops or skips, training goes on.

Integrations (torch, keras) compute their own statistics blocks and hand them
to `submit()`; `snapshot()` is the numpy path on top of the same machinery.
"""

from __future__ import annotations

import atexit
import fnmatch
import os
import queue
import socket
import stat
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

import numpy as np

from weighttui import __version__
from weighttui.log.format import (
    HEADER,
    HEADER_SIZE,
    FrameType,
    LogFormatError,
    check_header,
    encode_array,
    encode_bf16_bits,
    encode_frame,
)
from weighttui.log.records import TensorInfo, default_layer
from weighttui.record.stats import DELTA_STATS, Block, delta_row, delta_stats, empty_block, weights_block

# A values frame carries at most this many bytes of tensor data (the cap is 256 MiB).
VALUES_CHUNK_BYTES = 64 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 32

_STOP = object()


@dataclass
class _Job:
    """One unit of work for the writer thread: frames to encode, in order."""

    declarations: list = field(default_factory=list)  # TensorInfo not yet declared
    snapshot: dict | None = None  # payload with numpy arrays still unencoded
    values: list = field(default_factory=list)  # (step, epoch, TensorInfo, ndarray)
    frames: list = field(default_factory=list)  # (FrameType, payload) written as is


def _plain(obj, depth=0):
    """Make user metadata msgpack-safe: containers kept, anything odd as str."""
    if depth > 16:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return str(obj)


def epoch_selector(value, what):
    """None, an int N (every N), or a collection of ints -> predicate on epoch/step."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{what} must be None, an int or a list of ints")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}")
        n = int(value)
        return lambda e: e is not None and e % n == 0
    try:
        chosen = frozenset(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{what} must be None, an int or a list of ints") from None
    return lambda e: e is not None and e in chosen


def _patterns(value, what):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    pats = list(value)
    if not all(isinstance(p, str) for p in pats):
        raise TypeError(f"{what} must be a glob pattern or a list of them")
    return pats


def sample_index_for(name: str, size: int, k: int) -> np.ndarray:
    """Deterministic sample of k flat indices, the same for a name on every run."""
    if size <= k:
        return np.arange(size, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


def to_numpy(x) -> np.ndarray:
    """Array-likes (numpy, TF eager tensors, CPU torch tensors ...) as numpy.

    bfloat16 arrays (ml_dtypes) become float32; stats are taken in float64 anyway.
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        # torch: leave autograd, come to the host, and widen bfloat16 (numpy has none)
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            x = x.detach().cpu()
            if str(getattr(x, "dtype", "")) == "torch.bfloat16":
                x = x.float()
        try:
            x = x.numpy()
        except Exception:
            pass
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        if "bfloat16" in str(arr.dtype):
            arr = arr.astype(np.float32)
        else:
            raise TypeError(f"cannot record dtype {arr.dtype}")
    return arr


class Recorder:
    """Appends snapshots of named tensors to a run log.

    See README for the options; in short: `every` / `epochs` pick which calls
    record, `full_every` / `full_epochs` which store complete values, `include`
    / `exclude` glob patterns pick tensors by name, `delta` keeps previous
    values for update statistics (True: exact copies, "sample": sampled
    elements only, False: none).
    """

    def __init__(
        self,
        path,
        *,
        every: int = 1,
        epochs=None,
        bins: int = 64,
        sample: int = 16,
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
    ):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= 4096:
            raise ValueError(f"bins must be an int in 1..4096, got {bins!r}")
        if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 0:
            raise ValueError(f"sample must be an int >= 0, got {sample!r}")
        if full_every is not None and (not isinstance(full_every, (int, np.integer)) or full_every < 1):
            raise ValueError(f"full_every must be None or an int >= 1, got {full_every!r}")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (truncate) or 'a' (append a new run), got {mode!r}")
        if delta not in (True, False, "exact", "sample", "off"):
            raise ValueError(f"delta must be True, False, 'exact', 'sample' or 'off', got {delta!r}")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError("meta must be a dict")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.path = os.fspath(path)
        self.every = int(every)
        self.bins = int(bins)
        self.sample = int(sample)
        self.full_every = full_every
        self._epochs = epoch_selector(epochs, "epochs")
        self._full_epochs = epoch_selector(full_epochs, "full_epochs")
        self._full_epochs_done: set = set()
        self._include = _patterns(include, "include")
        self._exclude = _patterns(exclude, "exclude")
        self.delta_policy = {True: "exact", False: "off"}.get(delta, delta)
        self.fsync_every = fsync_every
        # 0o600 by default: a log holds the command line (which may carry secrets)
        # and possibly complete weights; pass file_mode=0o644 to share it
        self.file_mode = int(file_mode)

        self._tensors: dict[str, TensorInfo] = {}  # name -> latest declaration
        self._ids: list[TensorInfo] = []  # id -> declaration
        self._pending_decl: list[TensorInfo] = []
        self._prev: dict[int, np.ndarray] = {}  # previous values (or samples) for deltas
        self._nonfinite_seen: set[int] = set()
        self._reported: set[str] = set()
        self._lock = threading.Lock()  # guards registry + queueing across threads
        self.queued = 0  # snapshots handed to the writer thread
        self.written = 0  # snapshots the writer thread wrote
        self.dropped = 0  # snapshots skipped: the writer fell behind, or failed
        self._dropped_reported = 0
        self._missed_step = None  # last step counted by _count_missed
        self._closed = False
        self._failed = False
        self._fd = None
        self._last_fsync = time.monotonic()
        self.run_id = uuid.uuid4().hex
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)

        run = {
            "run_id": self.run_id,
            "created": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": [str(a) for a in sys.argv],
            "framework": framework,
            "writer": f"weighttui {__version__}",
            "bins": self.bins,
            "meta": _plain(meta or {}),
        }
        self._open(mode, encode_frame(FrameType.RUN, run))
        self._thread = threading.Thread(target=self._writer_loop, name="weighttui-writer", daemon=True)
        self._thread.start()
        _install_exit_tracking()
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------------ open

    def _open(self, mode: str, run_frame: bytes) -> None:
        if mode == "a" and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as fh:
                head = fh.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE or check_header(head) is None:
                raise LogFormatError(f"{self.path}: cannot append, not a weighttui run log")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            if mode == "w":
                flags |= os.O_TRUNC
            self._fd = os.open(self.path, flags, self.file_mode)
            prefix = b""
            if mode == "w" or os.fstat(self._fd).st_size == 0:
                prefix = HEADER
            self._write(prefix + run_frame)
        except OSError as exc:
            self._fail(exc, "opening the log")

    # -------------------------------------------------------------- schedule

    @property
    def active(self) -> bool:
        """False once closed or after a write error stopped recording."""
        return not self._closed and not self._failed

    def should_record(self, step: int, epoch: int | None = None) -> bool:
        if not self.active:
            if self._failed and not self._closed and self._scheduled(step, epoch):
                self._count_missed(step)
            return False
        return self._scheduled(step, epoch)

    def _scheduled(self, step: int, epoch: int | None) -> bool:
        if self._epochs is not None:
            return self._epochs(epoch) and step % self.every == 0
        return step % self.every == 0

    def _count_missed(self, step: int) -> None:
        """After a write failure, a snapshot the schedule asked for counts as dropped
        (once per step), so `dropped` says how much of the run the log lacks."""
        with self._lock:
            if step != self._missed_step:
                self._missed_step = step
                self.dropped += 1

    def wants_full(self, step: int, epoch: int | None = None) -> bool:
        if not self.active:
            return False
        if self.full_every is not None and step % self.full_every == 0:
            return True
        # once per chosen epoch (its first recorded call), not at every step of it
        if self._full_epochs is not None and self._full_epochs(epoch) and epoch not in self._full_epochs_done:
            self._full_epochs_done.add(epoch)
            return True
        return False

    def selects(self, name: str) -> bool:
        """Whether include/exclude let this tensor name through."""
        if self._include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self._include):
            return False
        if self._exclude is not None and any(fnmatch.fnmatchcase(name, p) for p in self._exclude):
            return False
        return True

    # -------------------------------------------------------------- registry

    def declare(self, name: str, shape, dtype: str, *, layer: str | None = None,
                trainable: bool = True) -> TensorInfo:
        """The tensor's registry entry, declared in the log before first use.

        A name seen again with another shape gets a new id (ids are never reused).
        """
        shape = tuple(int(d) for d in shape)
        with self._lock:
            info = self._tensors.get(name)
            if info is not None and info.shape == shape:
                return info
            size = int(np.prod(shape)) if shape else 1
            info = TensorInfo(
                id=len(self._ids), name=name,
                layer=default_layer(name) if layer is None else layer,
                shape=shape, dtype=str(dtype), trainable=bool(trainable),
                sample_index=sample_index_for(name, size, self.sample) if self.sample else None,
            )
            self._ids.append(info)
            self._tensors[name] = info
            self._pending_decl.append(info)
            return info

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return dict(self._tensors)

    # ----------------------------------------------------------- numpy path

    def snapshot(self, step, tensors, *, epoch=None, batch=None, grads=None, scalars=None,
                 full: bool | None = None) -> bool:
        """Record statistics of `tensors` (name -> array-like) at `step`.

        Returns True if this call recorded a snapshot. `grads` maps the same
        names to gradients; `scalars` are recorded at every call; `full`
        forces (True) or suppresses (False) storing complete values.
        """
        try:
            step = int(step)
            epoch = None if epoch is None else int(epoch)
            if not self.active:
                self.should_record(step, epoch)  # counts a missed snapshot after a failure
                return False
            if full is None:
                full = self.wants_full(step, epoch)
            if not (self.should_record(step, epoch) or full):
                if scalars:
                    self.scalars(step, epoch=epoch, **scalars)
                return False
            # scalars travel in the snapshot's queue slot: one job per training step
            scalar_payload = self._scalars_payload(step, epoch, scalars) if scalars else None
            extra = [] if scalar_payload is None else [(FrameType.SCALARS, scalar_payload)]
            names, arrays, infos = [], [], []
            for name, value in tensors.items():
                name = str(name)
                if not self.selects(name):
                    continue
                arr = to_numpy(value)
                names.append(name)
                arrays.append(arr)
                infos.append(self.declare(name, arr.shape, arr.dtype.name))
            if not infos:
                if scalar_payload is not None:
                    self._put_frame(FrameType.SCALARS, scalar_payload)
                return False
            weights = weights_block(arrays, self.bins)
            delta = self._numpy_delta(infos, arrays)
            grad = None
            if grads:
                grad_arrays = {str(k): v for k, v in grads.items()}
                rows = [(i, to_numpy(grad_arrays[n])) for i, n in enumerate(names) if n in grad_arrays]
                if rows:
                    grad = empty_block(weights.names, len(infos), self.bins)
                    sub = weights_block([a for _i, a in rows], self.bins)
                    for j, (i, _a) in enumerate(rows):
                        grad.stats[i] = sub.stats[j]
                        for part, src in zip(grad.hist, sub.hist):
                            part[i] = src[j]
            sample = self._gather_samples(infos, arrays)
            values = [np.array(a, copy=True) for a in arrays] if full else None
            return self.submit(step, infos, weights, epoch=epoch, batch=batch, delta=delta, grad=grad,
                               sample=sample, values=values, extra_frames=extra)
        except Exception as exc:  # never into the training loop
            self._fail_soft(exc, "taking a snapshot")
            return False

    def _numpy_delta(self, infos, arrays) -> Block | None:
        if self.delta_policy == "off":
            return None
        block = empty_block(DELTA_STATS, len(infos), self.bins if self.delta_policy == "exact" else None)
        for i, (info, arr) in enumerate(zip(infos, arrays)):
            if self.delta_policy == "exact":
                prev = self._prev.get(info.id)
                if prev is not None:
                    row, lo, hi, counts = delta_row(arr, prev, self.bins)
                    block.stats[i] = row
                    block.hist[0][i], block.hist[1][i], block.hist[2][i] = lo, hi, counts
                self._prev[info.id] = np.array(arr, copy=True)
            elif info.sample_index is not None:
                now = arr.reshape(-1)[info.sample_index]
                prev = self._prev.get(info.id)
                if prev is not None:
                    block.stats[i] = delta_stats(now, prev, exact=False, total=info.size)
                self._prev[info.id] = np.array(now, copy=True)
        return block

    @staticmethod
    def _gather_samples(infos, arrays) -> np.ndarray | None:
        parts = [a.reshape(-1)[i.sample_index] for i, a in zip(infos, arrays) if i.sample_index is not None]
        if not parts:
            return None
        return np.concatenate(parts).astype(np.float32)

    # ----------------------------------------------------------- submission

    def submit(self, step: int, infos, weights: Block, *, epoch=None, batch=None,
               delta: Block | None = None, grad: Block | None = None,
               sample: np.ndarray | None = None, values=None, time_: float | None = None,
               extra_frames=()) -> bool:
        """Queue a snapshot whose blocks are already computed (rows follow infos).

        `values`: complete tensor values (numpy arrays, or ("bf16", uint16 bits))
        in infos order, or None. `extra_frames`: (FrameType, payload) pairs
        written right after the snapshot. Returns False if the snapshot was dropped.
        """
        if not self.active:
            if self._failed and not self._closed:
                self._count_missed(int(step))  # the writer failed after should_record said yes
            return False
        payload = {
            "step": int(step),
            "epoch": None if epoch is None else int(epoch),
            "batch": None if batch is None else int(batch),
            "time": time.time() if time_ is None else time_,
            "ids": np.array([i.id for i in infos], dtype="<u4"),
            "weights": weights,
            "delta": delta,
            "grad": grad,
            "sample": None if sample is None else np.asarray(sample, dtype="<f4"),
        }
        vals = []
        if values is not None:
            vals = [(int(step), payload["epoch"], info, v) for info, v in zip(infos, values)]
        with self._lock:
            job = _Job(declarations=list(self._pending_decl), snapshot=payload, values=vals,
                       frames=list(extra_frames) + self._nonfinite_events(step, infos, weights))
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                return False
            self._pending_decl.clear()
            self._nonfinite_seen.update(f[1]["tensor"] for f in job.frames if f[1].get("kind") == "nonfinite")
            self.queued += 1
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
        vals = [(int(step), None if epoch is None else int(epoch), info, v) for info, v in zip(infos, values)]
        with self._lock:
            job = _Job(declarations=list(self._pending_decl), values=vals)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return False
            self._pending_decl.clear()
        return True

    def _nonfinite_events(self, step, infos, weights: Block) -> list:
        """`nonfinite` event frames for tensors whose first NaN/Inf this is."""
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
            payload = self._scalars_payload(step, epoch, values)
            if payload is not None:
                self._put_frame(FrameType.SCALARS, payload)
        except Exception as exc:
            self._fail_soft(exc, "recording scalars")

    @staticmethod
    def _scalars_payload(step, epoch, values) -> dict | None:
        clean = {}
        for k, v in values.items():
            try:
                clean[str(k)] = float(v)
            except (TypeError, ValueError):
                continue  # a non-numeric log entry is not a scalar
        if not clean:
            return None
        return {"step": int(step), "epoch": None if epoch is None else int(epoch),
                "time": time.time(), "values": clean}

    def event(self, kind: str, message: str, *, level: str = "info", step=None, tensor=None) -> None:
        """An event record: something a person should notice."""
        try:
            if not self.active:
                return
            self._put_frame(FrameType.EVENT, {
                "step": None if step is None else int(step), "time": time.time(),
                "level": level, "kind": str(kind), "message": str(message),
                "tensor": None if tensor is None else int(tensor),
            })
        except Exception as exc:
            self._fail_soft(exc, "recording an event")

    def _put_frame(self, ftype, payload) -> None:
        with self._lock:
            job = _Job(declarations=list(self._pending_decl), frames=[(ftype, payload)])
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return  # scalars/events are dropped silently with the snapshots
            self._pending_decl.clear()

    # ---------------------------------------------------------------- writer

    def _writer_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._failed:
                if job.snapshot is not None:
                    self._add_dropped()
                continue
            try:
                if _unlinked(self._fd):
                    # Writes to a removed file succeed but reach nobody: stop instead.
                    raise FileNotFoundError("the log file (or its directory) was removed")
                self._write_job(job)
                self._report_drops()
                if self.fsync_every is not None and time.monotonic() - self._last_fsync >= self.fsync_every:
                    os.fsync(self._fd)
                    self._last_fsync = time.monotonic()
            except Exception as exc:
                if job.snapshot is not None:
                    self._add_dropped()
                self._fail(exc, "writing the log")

    def _add_dropped(self) -> None:
        # the training thread counts drops too: += is not atomic across threads
        with self._lock:
            self.dropped += 1

    def _write_job(self, job: _Job) -> None:
        out = []
        if job.declarations:
            out.append(encode_frame(FrameType.TENSORS, {"tensors": [_declaration(t) for t in job.declarations]}))
        if job.snapshot is not None:
            out.append(encode_frame(FrameType.SNAPSHOT, _encode_snapshot(job.snapshot)))
        for ftype, payload in job.frames:
            out.append(encode_frame(ftype, payload))
        for frame in out:
            self._write(frame)
        for step, epoch, info, value in job.values:
            for frame in _values_frames(step, epoch, info, value):
                self._write(frame)
        if job.snapshot is not None:
            self.written += 1

    def _report_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._dropped_reported:
            n = dropped - self._dropped_reported
            self._dropped_reported = dropped
            self._write(encode_frame(FrameType.EVENT, {
                "step": None, "time": time.time(), "level": "warning", "kind": "dropped",
                "message": f"{n} snapshot(s) dropped: the disk was slower than training "
                           f"({dropped} in all)", "tensor": None,
            }))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    # ----------------------------------------------------------------- close

    def close(self, status: str = "finished") -> None:
        """Flush the queue, write the end record, fsync and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            self._queue.put(_STOP, timeout=30)
            self._thread.join(timeout=60)
        except Exception:
            pass
        if self._fd is None:
            return
        try:
            if not self._failed and not self._thread.is_alive():
                self._report_drops()
                self._write(encode_frame(FrameType.END, {
                    "time": time.time(), "status": status if status in ("finished", "failed", "interrupted") else "finished",
                    "snapshots": self.written,
                    "dropped": self.dropped,
                }))
                os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc, "closing the log")
        finally:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def _close_at_exit(self) -> None:
        self.close(status=_exit_status())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            status = "finished"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "failed"
        self.close(status=status)
        return False

    # ---------------------------------------------------------------- errors

    def _fail(self, exc: BaseException, doing: str) -> None:
        """A write problem: report once, stop recording, training goes on."""
        self._failed = True
        self._report("fail", f"weighttui: error {doing} {self.path}: {exc}; recording stopped, training continues")

    def _fail_soft(self, exc: BaseException, doing: str) -> None:
        """A problem with one call's input: report once per kind, skip the call."""
        key = f"{doing}:{type(exc).__name__}"
        if self._report(key, f"weighttui: skipped while {doing}: {type(exc).__name__}: {exc}"):
            self.event("recorder_error", f"{doing}: {type(exc).__name__}: {exc}", level="error")

    def _report(self, key: str, message: str) -> bool:
        if key in self._reported:
            return False
        self._reported.add(key)
        try:
            print(message, file=sys.stderr, flush=True)
        except Exception:
            pass
        return True


def _unlinked(fd) -> bool:
    """True if fd is a regular file that no longer has a name (deleted under us)."""
    try:
        st = os.fstat(fd)
    except (OSError, TypeError):
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 0


# --------------------------------------------------------------- encoding


def _declaration(t: TensorInfo) -> dict:
    return {
        "id": t.id, "name": t.name, "layer": t.layer, "shape": list(t.shape), "dtype": t.dtype,
        "trainable": t.trainable,
        "sample_index": None if t.sample_index is None else encode_array(t.sample_index.astype("<i8")),
    }


def _encode_block(block: Block | None):
    if block is None:
        return None
    return block.to_payload(encode_array)


def _encode_snapshot(p: dict) -> dict:
    out = dict(p)
    out["ids"] = encode_array(p["ids"])
    out["weights"] = _encode_block(p["weights"])
    out["delta"] = _encode_block(p["delta"])
    out["grad"] = _encode_block(p["grad"])
    if p["sample"] is not None:
        out["sample"] = encode_array(p["sample"])
    return out


def _values_frames(step, epoch, info: TensorInfo, value):
    """Values frames for one tensor, chunked under VALUES_CHUNK_BYTES each."""
    if isinstance(value, tuple) and value[0] == "bf16":
        flat = np.ascontiguousarray(value[1]).reshape(-1)
        enc = encode_bf16_bits
    else:
        flat = np.ascontiguousarray(value).reshape(-1)
        enc = encode_array
    per = max(1, VALUES_CHUNK_BYTES // max(1, flat.itemsize))
    for start in range(0, max(flat.size, 1), per):
        yield encode_frame(FrameType.VALUES, {
            "step": step, "epoch": epoch, "id": info.id, "offset": start,
            "value": enc(flat[start : start + per]),
        })


# ------------------------------------------------------- interpreter exit

_uncaught: list = []
_tracking_installed = False


def _install_exit_tracking() -> None:
    """Remember an uncaught exception so the at-exit close says 'failed'."""
    global _tracking_installed
    if _tracking_installed:
        return
    _tracking_installed = True
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        _uncaught.append(exc_type)
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def _exit_status() -> str:
    if not _uncaught:
        return "finished"
    return "interrupted" if issubclass(_uncaught[-1], KeyboardInterrupt) else "failed"
