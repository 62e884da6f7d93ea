"""TensorBoard event files: their histograms become snapshots, their scalars scalars.

Read with weighttui's own TFRecord framing reader and tensorboard's protobuf
classes (no TensorFlow). Both histogram encodings are read: the legacy
`HistogramProto` (torch's SummaryWriter.add_histogram, tf1) and TF2's
`histograms` plugin tensors ([k, 3]: left edge, right edge, count).

Mapping onto the format (see docs/import.md): lo/hi are the histogram's
min/max; each TensorBoard bucket's count is spread over the B equal-width
bins in proportion to its overlap with them (values assumed uniform inside a
bucket), rounded to integers keeping the total. mean, std and norm come from
`sum`/`sum_squares` (exact, as TensorBoard recorded them), absmean from the
bucket midpoints (approximate), zero_frac and the NaN/Inf counts are unknown
(NaN); TF2 histograms carry no sums, so their mean/std/norm are bucket
estimates too. There are no deltas, samples or complete values.
"""

from __future__ import annotations

import math
import os
import struct
import time

import numpy as np

from weighttui.integrations.importers.base import ImportFileError, say
from weighttui.log.format import FrameType
from weighttui.log.schema import WEIGHT_STATS
from weighttui.record.stats import DEFAULT_BINS, Block

APPROXIMATE = ("histogram counts re-binned from TensorBoard buckets (uniform within a bucket)",
               "absmean from bucket midpoints", "zero_frac, nan, inf unknown (NaN)",
               "mean/std/norm from bucket midpoints when the event has no sum/sum_squares (TF2)")


class EventReader:
    """Incremental reader of one event file: a torn final record is left for the next poll."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.plugins: dict[str, str] = {}  # tag -> plugin name (TF2 sends it once per tag)

    def poll(self) -> list:
        """[(step, wall_time, kind, tag, data)] of the complete records appended since the last poll."""
        from tensorboard.compat.proto import event_pb2

        out = []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            end = pos + 12 + n + 4
            if n > 1 << 30:
                raise ImportFileError(f"corrupt record at byte {self.offset + pos}")
            if end > len(data):
                break  # still being written
            ev = event_pb2.Event()
            try:
                ev.ParseFromString(data[pos + 12:pos + 12 + n])
            except Exception as exc:
                raise ImportFileError(f"corrupt record at byte {self.offset + pos}: {exc}") from None
            pos = end
            if ev.HasField("summary"):
                for v in ev.summary.value:
                    item = self._value(v)
                    if item is not None:
                        out.append((int(ev.step), float(ev.wall_time), item[0], v.tag, item[1]))
        self.offset += pos
        return out

    def _value(self, v):
        if v.HasField("metadata") and v.metadata.plugin_data.plugin_name:
            self.plugins[v.tag] = v.metadata.plugin_data.plugin_name
        which = v.WhichOneof("value")
        if which == "simple_value":
            return "scalar", float(v.simple_value)
        if which == "histo":
            h = v.histo
            limits = np.array(h.bucket_limit, dtype=np.float64)
            counts = np.array(h.bucket, dtype=np.float64)
            lefts = np.concatenate([[h.min], limits[:-1]]) if limits.size else limits
            return "histo", dict(min=h.min, max=h.max, num=h.num, sum=h.sum, sum_sq=h.sum_squares,
                                 left=lefts, right=limits, counts=counts)
        if which == "tensor":
            arr = _tensor(v.tensor)
            plugin = self.plugins.get(v.tag, "")
            if arr is None:
                return None
            if plugin == "histograms" and arr.ndim == 2 and arr.shape[1] == 3 and arr.shape[0]:
                left, right, counts = arr[:, 0], arr[:, 1], arr[:, 2]
                num = float(counts.sum())
                return "histo", dict(min=float(left.min()), max=float(right.max()), num=num, sum=None,
                                     sum_sq=None, left=left, right=right, counts=counts)
            if plugin == "scalars" or arr.size == 1:
                return "scalar", float(arr.reshape(-1)[0])
        return None


def _tensor(t) -> np.ndarray | None:
    """A TensorProto's numbers (float/double), without TensorFlow."""
    shape = [d.size for d in t.tensor_shape.dim]
    dt = {1: "<f4", 2: "<f8", 19: "<f2"}.get(t.dtype)
    if dt is None:
        return None
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=dt).astype(np.float64)
    elif t.dtype == 1 and t.float_val:
        arr = np.array(t.float_val, dtype=np.float64)
    elif t.dtype == 2 and t.double_val:
        arr = np.array(t.double_val, dtype=np.float64)
    else:
        return None
    size = int(np.prod(shape)) if shape else 1
    if arr.size == 1 and size > 1:
        arr = np.full(size, arr[0])
    return arr.reshape(shape) if arr.size == size else None


def rebin(h: dict, bins: int) -> tuple[float, float, np.ndarray]:
    """(lo, hi, counts[B]) of a TensorBoard histogram on the format's equal-width bins."""
    lo, hi = float(h["min"]), float(h["max"])
    counts = np.zeros(bins, dtype=np.float64)
    c = np.asarray(h["counts"], dtype=np.float64)
    total = int(round(c.sum()))
    if not np.isfinite(lo) or not np.isfinite(hi) or total == 0:
        return float("nan"), float("nan"), np.zeros(bins, dtype=np.uint32)
    if hi <= lo:
        out = np.zeros(bins, dtype=np.uint32)
        out[bins // 2] = total
        return lo, hi, out
    width = (hi - lo) / bins
    edges = lo + width * np.arange(bins + 1)
    left = np.clip(np.asarray(h["left"], dtype=np.float64), lo, hi)
    right = np.clip(np.asarray(h["right"], dtype=np.float64), lo, hi)
    for a, b, n in zip(left, right, c, strict=False):
        if n <= 0:
            continue
        if b <= a:  # a bucket of zero width (after clipping): all in the bin holding it
            counts[min(int((a - lo) / width), bins - 1)] += n
            continue
        overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None)
        counts += n * overlap / (b - a)
    floor = np.floor(counts)
    short = total - int(floor.sum())
    if short > 0:  # largest remainders get the missing units
        floor[np.argsort(floor - counts)[:short]] += 1
    return lo, hi, floor.astype(np.uint32)


def stats_row(h: dict) -> np.ndarray:
    """WEIGHT_STATS of a TensorBoard histogram (see the module doc for what is approximate)."""
    num = float(h["num"])
    c = np.asarray(h["counts"], dtype=np.float64)
    mid = (np.clip(np.asarray(h["left"]), h["min"], h["max"]) + np.clip(np.asarray(h["right"]), h["min"], h["max"])) / 2
    if num <= 0:
        return np.full(len(WEIGHT_STATS), np.nan)
    if h["sum"] is not None:
        mean = float(h["sum"]) / num
        sumsq = float(h["sum_sq"])
    else:
        mean = float((c * mid).sum() / num)
        sumsq = float((c * mid * mid).sum())
    var = max(sumsq / num - mean * mean, 0.0)
    absmean = float((c * np.abs(mid)).sum() / num)
    return np.array([mean, np.sqrt(var), float(h["min"]), float(h["max"]), absmean, np.sqrt(sumsq),
                     np.nan, np.nan, np.nan])


SETTLED_S = 10.0  # watching: files that have not grown this long hold a complete newest step


class EventsImporter:
    """Event files -> snapshots (one per step that has histograms) and scalars, incrementally."""

    def __init__(self, src: str, out: str, *, bins: int = DEFAULT_BINS, report=None, watch: bool = False):
        from weighttui._version import __version__
        from weighttui.record.recorder import Recorder

        self.src = src
        self.bins = bins
        self.report = report or say
        self.readers: dict[str, EventReader] = {}
        self.rec = Recorder(out, every=1, delta=False, bins=bins, sample=0, framework="weighttui import (tensorboard)",
                            queue_size=1 << 20,
                            meta={"import": {"source": os.path.abspath(src), "kind": "tensorboard", "values": False,
                                             "step_from": "event steps", "epoch_from": "unknown",
                                             "approximate": list(APPROXIMATE), "watch": watch,
                                             "importer": f"weighttui {__version__}"}})
        self.shapes: dict[str, int] = {}
        self.last_step = -1
        self.snapshots = 0
        self.scalar_steps = 0  # steps written with scalars only (event files without histograms)
        self.broken: set[str] = set()
        self.pending: list = []  # (step, kind, tag, data, wall) read but not written: the newest step may grow
        self._grew_at: float | None = None  # monotonic time the event files last gave something new

    def poll(self, final: bool = False) -> int:
        """Read what the event files gained; write complete steps (all of them if final). Snapshots written."""
        from weighttui.integrations.importers.discover import event_files
        from weighttui.record.recorder import scalars_payload

        files = event_files(self.src)
        root = self.src if os.path.isdir(self.src) else os.path.dirname(self.src)
        items: list = []
        for path in files:
            if path in self.broken:
                continue
            r = self.readers.setdefault(path, EventReader(path))
            try:
                got = r.poll()
            except (ImportFileError, OSError) as exc:
                self.report(f"{os.path.relpath(path, root)}: {exc}; the rest of that file is skipped")
                self.broken.add(path)
                continue
            # a file in a subdirectory (Keras' train/ and validation/, add_scalars' writers) prefixes its tags
            # with it, whether or not other directories exist yet: one that appears later renames nothing
            prefix = os.path.relpath(os.path.dirname(path), root) + "/"
            items.extend((step, kind, (prefix + tag) if prefix != "./" else tag, data, wall)
                         for step, wall, kind, tag, data in got)
        self.pending += items
        if not self.pending:
            return 0
        now = time.monotonic()
        if items:
            self._grew_at = now
        elif now - (now if self._grew_at is None else self._grew_at) >= SETTLED_S:
            final = True  # nothing new for a while (training ended, or a long epoch): the newest step too
        self.pending.sort(key=lambda x: x[0])
        cut = self.pending[-1][0] + (1 if final else 0)  # the newest step may still gain values: wait
        ready = [x for x in self.pending if x[0] < cut]
        self.pending = [x for x in self.pending if x[0] >= cut]
        by_step: dict[int, tuple[dict, dict]] = {}
        wall_of: dict[int, float] = {}  # the step's time: when TensorBoard logged its last value (wall_time)
        for step, kind, tag, data, wall in ready:
            h, s = by_step.setdefault(step, ({}, {}))
            (h if kind == "histo" else s)[tag] = data
            if math.isfinite(wall) and wall > 0:  # (an event without one says 0)
                wall_of[step] = max(wall, wall_of.get(step, wall))
        wrote = 0
        for step in sorted(by_step):
            histos, scalars = by_step[step]
            if step < self.last_step or (step == self.last_step and histos):
                if scalars:  # a writer that flushes later (an eval writer, add_scalars'): its scalars count
                    self.rec.scalars(step, **scalars)
                if histos:  # snapshots go in step order
                    self.report(f"histograms of step {step} arrived after step {self.last_step} (a restarted "
                                "run?): left out")
                continue
            if not histos:
                if scalars:
                    self.rec.scalars(step, **scalars)
                    self.scalar_steps += 1
                continue
            infos, rows, los, his, counts = [], [], [], [], []
            for tag, h in sorted(histos.items()):
                n = self.shapes.setdefault(tag, int(h["num"]))
                infos.append(self.rec.declare(tag, (n,), "float32"))
                rows.append(stats_row(h))
                lo, hi, c = rebin(h, self.bins)
                los.append(lo)
                his.append(hi)
                counts.append(c)
            hist = (np.array(los), np.array(his), np.array(counts, dtype=np.uint32))
            block = Block(WEIGHT_STATS, np.array(rows), hist)
            frames = []
            payload = scalars_payload(step, None, scalars) if scalars else None
            if payload is not None:
                frames.append((FrameType.SCALARS, payload))
            # room in the queue first: a refused snapshot would count (and be reported) as dropped
            if not self.rec.drain() or not self.rec.submit(step, infos, block, extra_frames=frames,
                                                           time_=wall_of.get(step)):
                raise OSError("the run log stopped taking writes")
            self.last_step = step
            self.snapshots += 1
            wrote += 1
        return wrote

    def close(self, status: str = "finished") -> None:
        # the newest step was held back while it could still gain values; at the end it is complete
        try:
            self.poll(final=True)
        except Exception as exc:  # the log must still be closed; nothing read is worth a traceback here
            self.report(f"the last step was not written: {type(exc).__name__}: {exc}")
        self.rec.close(status)


def import_events(src: str, out: str, *, bins: int = DEFAULT_BINS, report=None) -> dict:
    from weighttui.integrations.importers.discover import event_files

    if not event_files(src) and not os.path.isfile(src):
        raise ImportFileError(f"{src}: no TensorBoard event files found")
    imp = EventsImporter(src, out, bins=bins, report=report)
    status = "failed"
    try:
        imp.poll(final=True)
        status = "finished"
    finally:
        imp.close(status)
    return {"kind": "tensorboard", "checkpoints": imp.snapshots, "skipped": len(imp.broken), "out": out,
            "scalar_steps": imp.scalar_steps}
