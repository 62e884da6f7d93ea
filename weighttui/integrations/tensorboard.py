"""`weighttui export PATH --format tensorboard --out DIR`: a run log as TensorBoard event files.

Written with the `tensorboard` package's own record writer and protos, never
TensorFlow (tensorboard's EventFileWriter would import TensorFlow through
`tensorboard.compat.tf` when it is installed, which costs seconds). What is
written, at each snapshot's step and wall time:

- histograms `weights/<tensor>`, `grad/<tensor>`, `delta/<tensor>`: the log's
  own bins as the HistogramProto's bucket limits and counts (no re-binning);
- every statistic as a scalar `<kind>.<stat>/<tensor>` (e.g.
  `delta.ratio/fc1.weight`), so TensorBoard groups one statistic of all
  tensors on one card, which is how layers are compared;
- the run's own scalars (loss, learning rate ...) under their names; one whose name is
  already a tag above (a scalar the training script named `weights.norm/fc1.weight`)
  under `scalars/<name>`, so that no card mixes two series;
- where the first non-finite value was (the nan_origin event), as a text summary `nan_origin`.

An export that fails (a full disk) removes its event file: none is left that reads as a
whole export.

A row whose statistics are all NaN means "not covered by this snapshot" in a
run log and is left out; a NaN or Inf in a covered row (the norm of a tensor
that is all NaN, an update ratio from a zero tensor) is written as is. The
NaN and Inf counts are called `nan_count` and `inf_count`, as in every export.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from weighttui.log.schema import KINDS, export_name


def write_tensorboard(run, out_dir: str, *, kinds=None, file_mode: int = 0o644) -> str:
    """Write `run` (a RunData) as one event file under out_dir; returns its path.

    file_mode: the event file's permission bits (the CLI passes the log's);
    a directory it creates gets the matching search bits.
    """
    kinds = [k for k in (kinds or KINDS) if run.has_kind(k)]
    os.makedirs(out_dir, mode=file_mode | ((file_mode & 0o444) >> 2), exist_ok=True)
    created = run.run.created if run.run is not None else 0.0
    if not (isinstance(created, float) and 0 < created < 2**53):  # absurd time in the log: now
        created = time.time()
    name = f"events.out.tfevents.{int(created)}.{socket.gethostname()}.weighttui"
    path = os.path.join(out_dir, name)
    by_step = _Steps(run, created)
    for kind in kinds:
        _add_stats(run, kind, by_step)
        _add_histograms(run, kind, by_step)
    _add_nan_origin(run, by_step)
    _add_scalars(run, by_step)  # last: their tags give way to those above
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), file_mode)
    try:
        os.fchmod(fd, file_mode)
        with os.fdopen(fd, "wb") as fh:
            fd = -1  # (the file object closes it now)
            writer = RecordWriter(fh)
            header = event_pb2.Event(wall_time=created, file_version="brain.Event:2")
            writer.write(header.SerializeToString())
            for step, wall_time, values in by_step.events():
                event = event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=values))
                writer.write(event.SerializeToString())
            writer.flush()
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)  # a partial event file would read as a whole, shorter run
        raise
    return path


class _Steps:
    """Summary values collected per step, with the wall time of that step."""

    def __init__(self, run, created: float):
        steps, times = run.steps, run.times
        self._values: dict[int, list] = {}
        self.tags: set[str] = set()  # every tag added
        self._time: dict[int, float] = {}
        for s, t in zip(steps.tolist(), times.tolist(), strict=True):
            self._time.setdefault(s, t if np.isfinite(t) else created)
        # scalars may fall between snapshots: their time is interpolated
        ok = np.isfinite(times)
        self._xs, self._ts = steps[ok].astype(np.float64), times[ok]
        self._created = created

    def time_of(self, step: int) -> float:
        if step in self._time:
            return self._time[step]
        if self._xs.size:
            return float(np.interp(step, self._xs, self._ts))
        return self._created

    def add(self, step: int, value) -> None:
        self._values.setdefault(int(step), []).append(value)
        self.tags.add(value.tag)

    def events(self):
        for step in sorted(self._values):
            yield step, self.time_of(step), self._values[step]


def _add_stats(run, kind: str, out: _Steps) -> None:
    steps = run.steps
    names = [t.name for t in run.tensors]
    columns = run.columns(kind)
    matrices = [run.stat_matrix(kind, stat) for stat in columns]
    covered = run.present & ~np.all([np.isnan(m) for m in matrices], axis=0)
    rows, cols = np.nonzero(covered)
    for stat, matrix in zip(columns, matrices, strict=True):
        label = export_name(stat)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            out.add(steps[r], summary_pb2.Summary.Value(tag=f"{kind}.{label}/{names[c]}",
                                                        simple_value=float(matrix[r, c])))


def _add_histograms(run, kind: str, out: _Steps) -> None:
    exact = "mean" in run.columns(kind) and "norm" in run.columns(kind)
    for name in run.tensor_names:
        steps, lo, hi, counts = run.histograms(name, kind)
        if not len(steps):
            continue
        means = norms = np.zeros(0)
        if exact:  # sum and sum of squares from the statistics rather than bin centres
            st_steps, means = run.series(name, "mean", kind)
            _s, norms = run.series(name, "norm", kind)
            lookup = {s: i for i, s in enumerate(st_steps.tolist())}
        for i, step in enumerate(steps.tolist()):
            if not np.isfinite(lo[i]):
                continue  # no finite value in this snapshot: nothing to draw
            j = lookup.get(step) if exact else None
            proto = histogram_proto(float(lo[i]), float(hi[i]), counts[i],
                                    mean=None if j is None else float(means[j]),
                                    norm=None if j is None else float(norms[j]))
            out.add(step, summary_pb2.Summary.Value(tag=f"{kind}/{name}", histo=proto))


def histogram_proto(lo: float, hi: float, counts, *, mean=None, norm=None) -> summary_pb2.HistogramProto:
    """A HistogramProto with the log's own B equal-width bins over [lo, hi].

    TensorBoard's bucket i holds values up to bucket_limit[i] (after the
    previous limit), so the limits are the upper bin edges. When lo == hi
    every value is in one bucket, written as a single bucket at that value.
    """
    counts = np.asarray(counts, dtype=np.float64)
    num = float(counts.sum())
    if hi > lo:
        with np.errstate(over="ignore"):
            wide = not np.isfinite(hi - lo)
        if wide:  # near the float64 limits (a hostile log): linspace's hi - lo overflows
            t = np.arange(counts.size + 1) / counts.size
            edges = lo * (1 - t) + hi * t
            centres = edges[:-1] / 2 + edges[1:] / 2
        else:
            edges = np.linspace(lo, hi, counts.size + 1)
            centres = (edges[:-1] + edges[1:]) / 2
        limits, buckets = edges[1:], counts
    else:
        limits, buckets, centres = np.array([hi]), np.array([num]), np.array([hi])
    if mean is not None and norm is not None and np.isfinite(mean) and np.isfinite(norm):
        total, squares = mean * num, norm * norm
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # huge ranges: inf, written as is
            total, squares = float(buckets @ centres), float(buckets @ (centres * centres))
    return summary_pb2.HistogramProto(min=lo, max=hi, num=num, sum=total, sum_squares=squares,
                                      bucket_limit=limits.tolist(), bucket=buckets.tolist())


def _add_scalars(run, out: _Steps) -> None:
    taken = set(out.tags)
    for name in run.scalar_names:
        tag = name if name not in taken else f"scalars/{name}"
        steps, values = run.scalars(name)
        for s, v in zip(steps.tolist(), values.tolist(), strict=True):
            out.add(s, summary_pb2.Summary.Value(tag=tag, simple_value=float(v)))


def _add_nan_origin(run, out: _Steps) -> None:
    """Where the first non-finite value was: a text summary `nan_origin` at its step (TensorBoard's Text tab)."""
    origin = run.nan_origin
    if origin is None or origin["step"] is None:
        return
    text = tensor_pb2.TensorProto(dtype=7, string_val=[origin["message"].encode()],  # 7: DT_STRING
                                  tensor_shape=tensor_shape_pb2.TensorShapeProto())
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    out.add(int(origin["step"]), summary_pb2.Summary.Value(tag="nan_origin", metadata=meta, tensor=text))
