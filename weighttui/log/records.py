"""What the payloads of docs/FORMAT.md mean: validation into typed records.

A payload that breaks the format (wrong types, arrays whose length does not
match, ...) raises InvalidRecord; the reader counts it as a corruption at the
frame's offset and goes on. Unknown keys are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from weighttui.log.format import _DTYPES, FrameType, decode_array


class InvalidRecord(ValueError):
    pass


# Sanity limits: a hostile log must not make a reader allocate from them.
MAX_BINS = 65536  # histogram bins (the Recorder writes at most 4096)
MAX_NDIM = 32
MAX_ELEMENTS = 2**48  # elements in one declared tensor


def _int(v, what, *, nullable=False):
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRecord(f"{what} is not an int")
    if not -(2**63) <= v < 2**63:  # readers store steps etc. in int64 arrays
        raise InvalidRecord(f"{what} is out of the int64 range")
    return v


def _float(v, what, *, nullable=False):
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRecord(f"{what} is not a number")
    return float(v)


def _str(v, what, *, nullable=False, default=None):
    if v is None:
        if nullable:
            return default
    if not isinstance(v, str):
        raise InvalidRecord(f"{what} is not a string")
    return v


def _array(v, what, ndim=None, kinds=None, part=""):
    """The array map v, decoded; `what` + `part` name it in the message of an InvalidRecord (a
    block's parts pass them apart: the name is made only for the message)."""
    try:
        arr = decode_array(v, ndim=ndim)
    except ValueError as exc:
        raise InvalidRecord(f"{what}{part}: {exc}") from None
    if kinds and arr.dtype.kind not in kinds:
        raise InvalidRecord(f"{what}{part} has dtype {arr.dtype}")
    return arr


@dataclass
class RunRecord:
    run_id: str
    created: float
    host: str = ""
    pid: int | None = None
    argv: list = field(default_factory=list)
    framework: str = ""
    writer: str = ""
    bins: int = 64
    meta: dict = field(default_factory=dict)


@dataclass
class TensorInfo:
    id: int
    name: str
    layer: str
    shape: tuple
    dtype: str
    trainable: bool
    sample_index: np.ndarray | None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def sample_len(self) -> int:
        return 0 if self.sample_index is None else int(self.sample_index.size)


@dataclass
class BlockRecord:
    names: list
    stats: np.ndarray  # [T, S] float64
    hist: tuple | None  # (lo [T], hi [T], counts [T, B]) or None


@dataclass
class SnapshotRecord:
    step: int
    epoch: int | None
    batch: int | None
    time: float
    ids: np.ndarray
    weights: BlockRecord
    delta: BlockRecord | None
    grad: BlockRecord | None
    sample: np.ndarray | None
    optim: BlockRecord | None = None  # optimizer state (an addition; absent in older logs)


@dataclass
class ScalarsRecord:
    step: int
    epoch: int | None
    time: float
    values: dict


@dataclass
class EventRecord:
    step: int | None
    time: float
    level: str
    kind: str
    message: str
    tensor: int | None
    # nan_origin events (docs/instruments.md): which kind held the first non-finite
    # value and its flat index; None for other events and older logs
    where: str | None = None
    index: int | None = None


@dataclass
class EndRecord:
    time: float
    status: str
    snapshots: int
    dropped: int
    error_type: str | None = None  # what ended the run (format addition; absent before)
    error_message: str | None = None

    @property
    def reason(self) -> str | None:
        """What ended the run, "Type: message", for people (None after a normal end)."""
        if self.error_type is None:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message else self.error_type


@dataclass
class ValuesRecord:
    step: int
    epoch: int | None
    id: int
    offset: int
    value: np.ndarray


def parse_run(p: dict) -> RunRecord:
    meta = p.get("meta") or {}
    argv = p.get("argv") or []
    if not isinstance(meta, dict):
        raise InvalidRecord("run meta is not a map")
    if not isinstance(argv, list):
        raise InvalidRecord("run argv is not a list")
    bins = _int(p.get("bins", 64), "run bins")
    if not 1 <= bins <= MAX_BINS:
        raise InvalidRecord(f"run bins {bins} outside 1..{MAX_BINS}")
    return RunRecord(
        run_id=_str(p.get("run_id", ""), "run_id"),
        created=_float(p.get("created"), "run created", nullable=True) or 0.0,
        host=_str(p.get("host"), "host", nullable=True, default=""),
        pid=_int(p.get("pid"), "pid", nullable=True),
        argv=[a if isinstance(a, str) else str(_clip_depth(a)) for a in argv],
        framework=_str(p.get("framework"), "framework", nullable=True, default=""),
        writer=_str(p.get("writer"), "writer", nullable=True, default=""),
        bins=bins,
        meta=_clip_depth(meta),
    )


# How deep a run's free-form values (meta, argv) are kept: msgpack decodes lists and maps nested 1000
# deep from a kilobyte, and str() or a JSON encoder of one recurses past Python's limit (a crash of
# `info`); a value below this depth reads as TOO_DEEP, the rest of the record as written.
META_DEPTH = 32
TOO_DEEP = "(nested too deep)"


def _clip_depth(obj, depth: int = META_DEPTH):
    if isinstance(obj, (dict, list, tuple)):
        if depth <= 0:
            return TOO_DEEP
        if isinstance(obj, dict):
            # (a map key may be an array too: msgpack makes it a tuple)
            return {(str(_clip_depth(k, depth - 1)) if isinstance(k, tuple) else k): _clip_depth(v, depth - 1)
                    for k, v in obj.items()}
        return [_clip_depth(v, depth - 1) for v in obj]
    return obj


def parse_tensors(p: dict, known: dict) -> list[TensorInfo]:
    items = p.get("tensors")
    if not isinstance(items, list):
        raise InvalidRecord("tensors is not a list")
    out = []
    seen = set()
    names: set[str] = set()
    for t in items:
        if not isinstance(t, dict):
            raise InvalidRecord("tensor declaration is not a map")
        tid = _int(t.get("id"), "tensor id")
        if tid < 0 or tid >= 2**32:
            raise InvalidRecord("tensor id out of range")
        if tid in known or tid in seen:
            raise InvalidRecord(f"tensor id {tid} declared twice")
        seen.add(tid)
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InvalidRecord("tensor shape is not a list of non-negative ints")
        if len(shape) > MAX_NDIM or math.prod(shape) > MAX_ELEMENTS:
            raise InvalidRecord(f"tensor shape {shape[:MAX_NDIM + 1]} is beyond any real tensor")
        name = _str(t.get("name"), "tensor name")
        if name in names:  # (a later record may declare it again: a reshape; one record cannot say both)
            raise InvalidRecord(f"tensor name {name!r} declared twice in one record")
        names.add(name)
        layer = _str(t.get("layer"), "tensor layer", nullable=True, default=None)
        if layer is None:
            layer = default_layer(name)
        sample_index = t.get("sample_index")
        if sample_index is not None:
            sample_index = _array(sample_index, "sample_index", ndim=1, kinds="iu").astype(np.int64)
            size = math.prod(shape)
            if sample_index.size and (sample_index.min() < 0 or sample_index.max() >= size):
                raise InvalidRecord("sample_index outside the tensor")
        trainable = t.get("trainable", True)
        if not isinstance(trainable, bool):
            raise InvalidRecord("trainable is not a bool")
        out.append(TensorInfo(
            id=tid, name=name, layer=layer, shape=tuple(shape),
            dtype=_str(t.get("dtype"), "tensor dtype", nullable=True, default=""),
            trainable=trainable, sample_index=sample_index,
        ))
    return out


def default_layer(name: str) -> str:
    """The layer of a tensor name: everything before the last '.' or '/'."""
    cut = max(name.rfind("."), name.rfind("/"))
    return name[:cut] if cut > 0 else name


def _block(v, what, t: int, required: bool) -> BlockRecord | None:
    if v is None:
        if required:
            raise InvalidRecord(f"snapshot has no {what} block")
        return None
    if not isinstance(v, dict):
        raise InvalidRecord(f"{what} block is not a map")
    names = v.get("names")
    if not isinstance(names, list) or not _strings(names):
        raise InvalidRecord(f"{what} names is not a list of strings")
    stats = _array(v.get("stats"), what, 2, "f", " stats")
    if stats.shape != (t, len(names)):
        raise InvalidRecord(f"{what} stats has shape {stats.shape}, expected {(t, len(names))}")
    hist = v.get("hist")
    if hist is not None:
        if not isinstance(hist, dict):
            raise InvalidRecord(f"{what} hist is not a map")
        lo = _array(hist.get("lo"), what, 1, "f", " hist lo")
        hi = _array(hist.get("hi"), what, 1, "f", " hist hi")
        counts = _array(hist.get("counts"), what, 2, "iu", " hist counts")
        if lo.shape != (t,) or hi.shape != (t,) or counts.shape[0] != t or counts.shape[1] < 1:
            raise InvalidRecord(f"{what} hist does not have one row per tensor")
        if counts.shape[1] > MAX_BINS:
            raise InvalidRecord(f"{what} hist has {counts.shape[1]} bins, more than {MAX_BINS}")
        if counts.dtype.char != _U32_CHAR and counts.size:
            # readers keep counts as uint32: anything else must fit, never wrap
            if counts.min() < 0 or counts.max() >= 2**32:
                raise InvalidRecord(f"{what} hist counts outside the uint32 range")
        # (read-only views of the payload when they are float64 already, as the counts are)
        hist = (lo.astype(np.float64, copy=False), hi.astype(np.float64, copy=False), counts)
    return BlockRecord(names, _no_finite_is_nan(names, stats.astype(np.float64, copy=False)), hist)


_U32_CHAR = np.dtype(np.uint32).char
_STRING_LISTS: set = set()  # column lists seen (a log's blocks repeat a few): checked once each


def _strings(names: list) -> bool:
    """Whether every item of names is a str."""
    try:
        key = tuple(names)
        if key in _STRING_LISTS:  # (only str compares equal to a str)
            return True
    except TypeError:  # an unhashable item
        return False
    ok = all(isinstance(n, str) for n in names)
    if ok and len(_STRING_LISTS) < 256 and sum(map(len, key)) <= 4096:  # (a hostile log's lists are not kept)
        _STRING_LISTS.add(key)
    return ok


# Statistics a writer sums over the finite elements: with none finite the sum is over nothing and
# writers put 0 there (an all-NaN tensor had "norm 0", a NaN update "ratio 0" and "changed 0"),
# which reads as a real, healthy value. Such a row says so itself: weights/grad have a NaN mean
# and NaN/Inf counts; delta a NaN mean_abs with a changed_frac (a zero-size tensor has none, and
# its norm of 0 is right). These columns then become NaN, for every writer and every log written.
def _no_finite_is_nan(names: list, stats: np.ndarray) -> np.ndarray:
    key = tuple(names)
    plan = _NO_FINITE_PLANS.get(key)
    if plan is None:
        plan = _no_finite_plan(names)
        if len(_NO_FINITE_PLANS) < 256:  # (a log's blocks repeat a few column lists)
            _NO_FINITE_PLANS[key] = plan
    which, probe, cols, reads = plan
    if which == "optim":
        return _no_finite_state_is_nan(stats, probe, cols)
    # the usual block: no mean NaN, nothing to do (the maximum is NaN if any value is: one reduction,
    # no temporary, and no overflow warning as a sum of extreme values would give)
    if not cols or not stats.shape[0] or not math.isnan(np.maximum.reduce(stats[:, probe])):
        return stats
    with np.errstate(invalid="ignore"):
        if which == "weights":
            i_mean, i_nan, i_inf = reads
            empty = np.isnan(stats[:, i_mean]) & ((stats[:, i_nan] > 0) | (stats[:, i_inf] > 0))
        else:
            i_mean_abs, i_changed = reads
            empty = np.isnan(stats[:, i_mean_abs]) & ~np.isnan(stats[:, i_changed])
    if not empty.any():
        return stats
    if not stats.flags.writeable:
        stats = stats.copy()
    for c in cols:
        stats[empty, c] = np.nan
    return stats


_NO_FINITE_PLANS: dict[tuple, tuple] = {}


def _no_finite_state_is_nan(stats: np.ndarray, i_bad: int, cols: list) -> np.ndarray:
    """The optim block: a moment norm of 0 beside non-finite state elements is a sum over nothing
    finite (or over zeros only): not a healthy 0, NaN; and the step size taken from such a second
    moment (lr / eps) with it. cols: m_norm, v_norm, eff_lr (-1 where the block has none)."""
    i_m, i_v, i_eff = cols
    if not stats.shape[0] or not np.maximum.reduce(stats[:, i_bad]) > 0:  # (NaN: not > 0)
        return stats
    bad = stats[:, i_bad] > 0
    hit = [(c, bad & (stats[:, c] == 0)) for c in (i_m, i_v) if c >= 0]
    if i_v >= 0 and i_eff >= 0:
        hit.append((i_eff, hit[-1][1]))
    if not any(h.any() for _c, h in hit):
        return stats
    if not stats.flags.writeable:
        stats = stats.copy()
    for c, h in hit:
        stats[h, c] = np.nan
    return stats


def _no_finite_plan(names: list) -> tuple:
    """(which block, the column whose NaN says a row may have no finite element, columns to blank,
    the columns the rule reads) for a block's column names."""
    col = {n: i for i, n in enumerate(names)}
    if {"mean", "nan", "inf"} <= col.keys():
        targets: tuple[str, ...] = ("norm",)
        return ("weights", col["mean"], [col[c] for c in targets if c in col],
                (col["mean"], col["nan"], col["inf"]))
    if {"mean_abs", "changed_frac"} <= col.keys():
        targets = ("norm", "ratio", "changed_frac")
        return ("delta", col["mean_abs"], [col[c] for c in targets if c in col],
                (col["mean_abs"], col["changed_frac"]))
    if "nonfinite" in col:
        return ("optim", col["nonfinite"], [col.get(c, -1) for c in ("m_norm", "v_norm", "eff_lr")], ())
    return (None, 0, [], ())


def parse_snapshot(p: dict, tensors: dict, checked: dict | None = None) -> SnapshotRecord:
    """tensors: id -> TensorInfo of the current run (ids must be declared).

    checked: optional cache owned by the caller for one run, ids bytes ->
    (sample length, the ids as int64); snapshots usually repeat the same ids,
    and ids are never reused in a run, so their check is done once.
    """
    ids = _array(p.get("ids"), "ids", ndim=1, kinds="iu")
    t = ids.size
    key = ids.tobytes() + ids.dtype.str.encode()
    hit = None if checked is None else checked.get(key)
    if hit is None:
        hit = _check_ids(ids, t, tensors)
        if checked is not None:
            checked[key] = hit
    expected, ids64 = hit
    sample = p.get("sample")
    if sample is not None:
        sample = _array(sample, "sample", ndim=1, kinds="f")
        if sample.size != expected:
            raise InvalidRecord(f"sample has {sample.size} values, expected {expected}")
    step = _int(p.get("step"), "snapshot step")
    weights = _block(p.get("weights"), "weights", t, required=True)
    assert weights is not None  # required: _block raised InvalidRecord otherwise
    return SnapshotRecord(
        step=step,
        epoch=_int(p.get("epoch"), "epoch", nullable=True),
        batch=_int(p.get("batch"), "batch", nullable=True),
        time=_float(p.get("time"), "time", nullable=True) or 0.0,
        ids=ids64,
        weights=weights,
        delta=_block(p.get("delta"), "delta", t, required=False),
        grad=_block(p.get("grad"), "grad", t, required=False),
        sample=sample,
        optim=_block(p.get("optim"), "optim", t, required=False),
    )


class Omitted:
    """An array a light decode left in its frame (format.decode_snapshot(body, light=True)): its shape and
    dtype, no values. A histogram of float64 edges and uint32 counts, a float32 sample: what a reader that
    leaves them in the log (`weighttui info`, data/store/index.Spiller(histograms=False)) never reads."""

    __slots__ = ("shape", "dtype", "size", "nbytes")

    def __init__(self, shape: tuple, dtype):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.size = math.prod(shape)
        self.nbytes = self.size * self.dtype.itemsize


_OMITTED: dict[tuple, Omitted] = {}  # (shape, dtype char) -> the one stand-in (they hold nothing to change)


def omitted(shape: tuple, dtype) -> Omitted:
    key = (shape, dtype)
    hit = _OMITTED.get(key)
    if hit is None:
        hit = Omitted(shape, dtype)
        if len(_OMITTED) < 1024:
            _OMITTED[key] = hit
    return hit


def parse_prepared(p: tuple, tensors: dict, checked: dict | None = None) -> SnapshotRecord:
    """parse_snapshot for what format.decode_snapshot made of a snapshot payload: the same record,
    the same InvalidRecord. decode_snapshot has checked everything that does not need the run's
    tensors (log/native/frames.c); what is left is checked here in parse_snapshot's order. A light
    decode's histograms and sample (ints: their bins, its size) become Omitted stand-ins."""
    step, epoch, batch, time, (ids_dtype, _shape, ids_data), weights, delta, grad, optim, sample = p
    key = ids_data + ids_dtype.encode()  # (ids.tobytes() + ids.dtype.str.encode(), as parse_snapshot)
    hit = None if checked is None else checked.get(key)
    if hit is None:
        dt = _NP_DTYPES.get(ids_dtype)
        if dt is None:
            dt = _NP_DTYPES[ids_dtype] = np.dtype(ids_dtype)
        ids = np.frombuffer(ids_data, dt)
        hit = _check_ids(ids, ids.size, tensors)
        if checked is not None:
            checked[key] = hit
    expected, ids64 = hit
    if type(sample) is int:
        sample = omitted((sample,), "f")
    if sample is not None and sample.size != expected:
        raise InvalidRecord(f"sample has {sample.size} values, expected {expected}")
    w = _prepared_block(weights, "weights")
    assert w is not None  # (decode_snapshot returns None without a weights block)
    return SnapshotRecord(
        step=step, epoch=epoch, batch=batch, time=time, ids=ids64, weights=w,
        delta=None if delta is None else _prepared_block(delta, "delta"),
        grad=None if grad is None else _prepared_block(grad, "grad"), sample=sample,
        optim=None if optim is None else _prepared_block(optim, "optim"),
    )


_NP_DTYPES: dict = {}
_F8 = np.dtype(np.float64)


def _prepared_block(b: tuple, what: str) -> BlockRecord:
    names, stats, hist, maybe_nan = b
    if type(hist) is int:  # a light decode's: float64 edges, uint32 counts, left in the frame
        t = stats.shape[0]
        edges = omitted((t,), "d")
        hist = (edges, edges, omitted((t, hist), _U32_CHAR))
    elif hist is not None:
        lo, hi, counts = hist
        if counts.dtype.char != _U32_CHAR and counts.size:
            if counts.min() < 0 or counts.max() >= 2**32:
                raise InvalidRecord(f"{what} hist counts outside the uint32 range")
        if lo.dtype != _F8 or hi.dtype != _F8:
            lo, hi = lo.astype(np.float64, copy=False), hi.astype(np.float64, copy=False)
        hist = (lo, hi, counts)
    # (float64 without a NaN: the no-finite rule has nothing to do, but in the optim block, whose rule
    # reads a count of non-finite elements)
    if maybe_nan or stats.dtype != _F8 or what == "optim":
        stats = _no_finite_is_nan(names, stats.astype(np.float64, copy=False))
    return BlockRecord(names, stats, hist)


# decode_snapshot gives numpy arrays (log/native/frames.c, configure)
try:
    from weighttui._frames import configure as _configure
except ImportError:  # not built
    pass
else:
    _configure(np.frombuffer, {d: np.dtype(d) for d in _DTYPES})


def _check_ids(ids: np.ndarray, t: int, tensors: dict) -> tuple:
    """(sample length, the ids as int64) of a snapshot's ids, or InvalidRecord."""
    id_list = ids.tolist()
    for i in id_list:
        if i not in tensors:
            raise InvalidRecord(f"snapshot names undeclared tensor id {i}")
    if len(set(id_list)) != t:
        raise InvalidRecord("snapshot names a tensor twice")
    ids64 = ids.astype(np.int64)
    ids64.flags.writeable = False  # (shared by every snapshot of these ids)
    return (sum(tensors[i].sample_len for i in id_list), ids64)


def parse_scalars(p: dict) -> ScalarsRecord:
    values = p.get("values")
    if not isinstance(values, dict):
        raise InvalidRecord("scalars values is not a map")
    clean = {}
    for k, v in values.items():
        if not isinstance(k, str):
            raise InvalidRecord("scalar name is not a string")
        clean[k] = _float(v, f"scalar {k}")
    return ScalarsRecord(
        step=_int(p.get("step"), "scalars step"),
        epoch=_int(p.get("epoch"), "epoch", nullable=True),
        time=_float(p.get("time"), "time", nullable=True) or 0.0,
        values=clean,
    )


def parse_event(p: dict) -> EventRecord:
    level = _str(p.get("level", "info"), "event level")
    return EventRecord(
        step=_int(p.get("step"), "event step", nullable=True),
        time=_float(p.get("time"), "time", nullable=True) or 0.0,
        level=level if level in ("info", "warning", "error") else "info",
        kind=_str(p.get("kind", ""), "event kind"),
        message=_str(p.get("message", ""), "event message"),
        tensor=_int(p.get("tensor"), "event tensor", nullable=True),
        # additions: a value of the wrong type is dropped, the event still reads
        where=p["where"] if isinstance(p.get("where"), str) else None,
        index=p["index"] if isinstance(p.get("index"), int) and not isinstance(p.get("index"), bool) else None,
    )


def parse_end(p: dict) -> EndRecord:
    status = _str(p.get("status", "finished"), "end status")
    return EndRecord(
        time=_float(p.get("time"), "time", nullable=True) or 0.0,
        status=status if status in ("finished", "failed", "interrupted") else "finished",
        snapshots=_int(p.get("snapshots", 0), "end snapshots"),
        dropped=_int(p.get("dropped", 0), "end dropped"),
        error_type=_optional_str(p.get("error_type")),
        error_message=_optional_str(p.get("error_message")),
    )


def _optional_str(value) -> str | None:
    """An optional text field: a bad one costs only itself."""
    return value if isinstance(value, str) else None


def parse_values(p: dict, tensors: dict) -> ValuesRecord:
    tid = _int(p.get("id"), "values id")
    if tid not in tensors:
        raise InvalidRecord(f"values for undeclared tensor id {tid}")
    value = _array(p.get("value"), "value", ndim=1)
    offset = _int(p.get("offset", 0), "values offset")
    if offset < 0 or offset + value.size > tensors[tid].size:
        raise InvalidRecord("values chunk lies outside the tensor")
    return ValuesRecord(
        step=_int(p.get("step"), "values step"),
        epoch=_int(p.get("epoch"), "epoch", nullable=True),
        id=tid, offset=offset, value=value,
    )


RECORD_NAMES = {
    FrameType.RUN: "run", FrameType.TENSORS: "tensors", FrameType.SNAPSHOT: "snapshot",
    FrameType.SCALARS: "scalars", FrameType.EVENT: "event", FrameType.END: "end",
    FrameType.VALUES: "values",
}
