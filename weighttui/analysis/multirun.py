"""Several runs at once: finding logs in a directory, one summary row per run,
and one tensor's statistic lined up across runs (a learning-rate sweep).

Pure functions and small state holders over `RunData`; no textual here, so the
multi-run screens (`weighttui/tui/multi_app.py`) stay thin and this is unit
tested on its own.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from weighttui.analysis.series import nonfinite_now
from weighttui.data.run import RunData
from weighttui.log.sniff import HeadState, sniff_file

if TYPE_CHECKING:
    from weighttui.analysis.diagnose import Alert

MAX_DEPTH = 1  # a directory's own files and those of its subdirectories (runs/lr0.1/run.wtui)
# A file whose start is not a header is taken for a damaged log when a header or frame
# begins in its first 64 KiB (a reader of one named file searches 64 MiB: format.START_SEARCH);
# the smaller bound keeps a directory of big foreign files (checkpoints, text logs) cheap to scan.
DISCOVERY_SEARCH = 64 * 1024


# ----------------------------------------------------------------- discovery


def sniff(path) -> str | None:
    """None if `path` starts like a weighttui log, "pending" if too short to tell yet,
    else why it is not one (a person reads this)."""
    try:
        head = sniff_file(path, search=DISCOVERY_SEARCH)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if head.state is HeadState.PENDING:
        return "pending"  # a writer creates the file before its first write: decide on a later scan
    return head.reason or None


@dataclass
class Scan:
    """What one `DirectoryWatch.scan()` found that earlier scans had not."""

    logs: list[str] = field(default_factory=list)  # new logs, sorted by path
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), newly ignored


class DirectoryWatch:
    """Finds run logs under a directory, each reported once, as they appear.

    Files are recognised by the 8-byte magic, not the name (people call their
    logs run.sock, run.wtui, lr0.1.log ...). Everything else is ignored with a
    reason, reported once; an ignored file is looked at again only when it
    changed (inode, size or mtime: replaced or rewritten) or was too short to
    tell. Hidden entries are skipped.
    """

    def __init__(self, directory, *, max_depth: int = MAX_DEPTH):
        self.directory = os.fspath(directory)
        self.max_depth = max_depth
        self.logs: list[str] = []
        self.ignored: dict[str, str] = {}  # path -> reason
        self._known: set[str] = set()
        self._ignored_id: dict[str, tuple] = {}  # path -> (inode, size, mtime) when judged

    def scan(self) -> Scan:
        out = Scan()
        files = self._files()
        present = {path for path, _ in files}
        for gone in [p for p in self.ignored if p not in present]:  # deleted: forget it
            del self.ignored[gone]
            self._ignored_id.pop(gone, None)
        for path, ident in files:
            if path in self._known:
                continue
            if self._ignored_id.get(path) == ident:
                continue
            reason = sniff(path)
            if reason == "pending":
                continue
            if reason is None:
                self._known.add(path)
                self.ignored.pop(path, None)
                self._ignored_id.pop(path, None)
                self.logs.append(path)
                out.logs.append(path)
            else:
                self._ignored_id[path] = ident
                if self.ignored.get(path) != reason:
                    out.ignored.append((path, reason))
                self.ignored[path] = reason
        out.logs.sort()
        return out

    def _files(self):
        """(path, (inode, size, mtime)) of the regular files to consider, in name order.

        Inode numbers are reused at once on many file systems, so size and
        mtime tell a replaced file from the one judged before.
        """
        stack = [(self.directory, 0)]
        found = []
        while stack:
            folder, depth = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_file():
                        st = entry.stat()
                        found.append((entry.path, (st.st_ino, st.st_size, st.st_mtime_ns)))
                    elif entry.is_dir() and depth < self.max_depth:
                        stack.append((entry.path, depth + 1))
                except OSError:
                    continue
        found.sort()
        return found


def run_names(paths: list[str], directory: str | None = None) -> list[str]:
    """Short distinct names: relative to the directory, else the base name,
    else as many trailing path parts as it takes to tell them apart."""
    names = []
    for p in paths:
        if directory is not None:
            rel = os.path.relpath(p, directory)
            names.append(os.path.basename(p) or p if rel.startswith("..") else rel)
        else:
            names.append(os.path.basename(p) or p)
    depth = 1
    while len(set(names)) < len(names) and depth < 8:
        depth += 1
        dup = {n for n in names if names.count(n) > 1}
        names = [_tail(p, depth) if n in dup else n for n, p in zip(names, paths, strict=True)]
    return names


def _tail(path: str, parts: int) -> str:
    bits = os.path.normpath(path).split(os.sep)
    return os.sep.join(bits[-parts:])


# ------------------------------------------------------------ summary rows


def loss_name(data: RunData) -> str | None:
    """The scalar a run list shows: "loss", else one named like a loss, else the first."""
    names = data.scalar_names
    if not names:
        return None
    if "loss" in names:
        return "loss"
    for n in names:
        if "loss" in n.lower():
            return n
    return names[0]


def meta_text(meta: dict | None, width: int = 40) -> str:
    """`lr=0.01 batch=32` from the run's meta (scalars first, nested values left out)."""
    if not meta:
        return ""
    parts = []
    for k, v in meta.items():
        if isinstance(v, (dict, list, tuple)):
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{k}={v}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


@dataclass
class RunRow:
    """One line of the run list."""

    name: str
    path: str
    status: str
    framework: str
    snapshots: int
    last_step: int | None
    loss_name: str | None
    loss: float | None  # the latest loss (NaN/Inf as they are); None: the run logs no loss yet
    loss_values: np.ndarray
    meta: str
    corruptions: int
    error: str | None = None
    diverged: bool = False  # the latest loss or weights hold NaN/Inf (status then says "diverged")
    partial: bool = False  # only the latest snapshots are read yet (the count is not known)
    alerts: int | None = None  # how many alerts (weighttui.analysis.diagnose); None: not computed (yet)
    alert_rule: str = ""  # the first alert's rule (errors first, then the earliest)
    alert_severity: str = ""  # its severity: "error" | "warning"


def summarize(name: str, data: RunData, status: str, *, error: str | None = None,
              partial: bool = False, alerts: list[Alert] | None = None) -> RunRow:
    """The run list's row. A run whose latest loss or weights are NaN/Inf is marked "diverged"
    whatever its writer's state (finished, live, stalled ...): that is what its owner must know.
    `alerts`: the run's alerts as `diagnose` sorts them (errors first), None if not computed."""
    run = data.run
    lname = loss_name(data)
    values = data.scalars(lname)[1] if lname else np.zeros(0)
    diverged = bool((values.size and not np.isfinite(values[-1])) or nonfinite_now(data))
    if error:
        status = "error"
    elif diverged and status not in ("waiting", "loading"):
        status = "diverged"
    return RunRow(
        name=name, path=data.path or "", status=status, diverged=diverged,
        framework=(run.framework if run else "") or "",
        snapshots=data.snapshot_count,
        last_step=int(data.steps[-1]) if data.n else None,
        loss_name=lname,
        loss=float(values[-1]) if values.size else None,
        loss_values=values,
        meta=meta_text(run.meta if run else None),
        corruptions=len(data.corruptions),
        error=error, partial=partial,
        alerts=None if alerts is None else len(alerts),
        alert_rule=alerts[0].rule if alerts else "",
        alert_severity=alerts[0].severity if alerts else "")


# -------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Metric:
    """What the comparison plots: a tensor statistic (kind, stat) or a scalar (kind "scalar")."""

    label: str
    kind: str  # weights / delta / grad / scalar
    stat: str  # the statistic, or the scalar's name
    log: bool = False  # spans decades: plot on a log axis

    @property
    def per_tensor(self) -> bool:
        return self.kind != "scalar"


TENSOR_METRICS = (
    Metric("weights norm", "weights", "norm"),
    Metric("weights std", "weights", "std"),
    Metric("update ratio", "delta", "ratio", log=True),
    Metric("grad norm", "grad", "norm", log=True),
)


def metrics(runs: list[RunData]) -> list[Metric]:
    """The tensor statistics some run holds, then every scalar of any run (loss first)."""
    out = [m for m in TENSOR_METRICS if any(d.has_kind(m.kind) for d in runs)]
    scalars: list[str] = []
    for d in runs:
        scalars += [s for s in d.scalar_names if s not in scalars]
    scalars.sort(key=lambda s: (s != "loss", "loss" not in s.lower()))
    out += [Metric(s, "scalar", s) for s in scalars]
    return out


def common_tensors(runs: list[RunData]) -> list[str]:
    """Tensor names every run (that has declared tensors) holds, in the first such run's order.

    With no name in common (different models), the union, so there is still
    something to look at: runs without the tensor just show no series.
    """
    named = [d.tensor_names for d in runs if d.tensors]
    if not named:
        return []
    common = set(named[0]).intersection(*map(set, named[1:]))
    if common:
        return [n for n in named[0] if n in common]
    seen: dict[str, None] = {}
    for names in named:
        for n in names:
            seen.setdefault(n, None)
    return list(seen)


def filter_names(names: list[str], pattern: str) -> list[str]:
    """Substring match, or a glob when the pattern has * ? or [ (as the single-run filter)."""
    pattern = pattern.strip()
    if not pattern:
        return list(names)
    if any(c in pattern for c in "*?["):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    low = pattern.lower()
    return [n for n in names if low in n.lower()]


def metric_series(data: RunData, tensor: str | None, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a metric for one run; empty when the run lacks the tensor or kind."""
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
    if metric.kind == "scalar":
        return data.scalars(metric.stat) if metric.stat in data.scalar_names else empty
    if tensor is None or not data.has_kind(metric.kind) or metric.stat not in data.columns(metric.kind):
        return empty  # (a run of a sweep recorded without that instrument: nothing, not NaN said as a warning)
    try:
        return data.series(tensor, metric.stat, kind=metric.kind)
    except KeyError:
        return empty


@dataclass
class Aligned:
    """Several runs' series on one step axis (the union of their steps)."""

    steps: np.ndarray  # [S] int64, sorted, unique
    values: np.ndarray  # [R, S] float64, NaN where a run has no value at that step
    present: np.ndarray | None = None  # [R, S] bool: the run has a value there (NaN included); None: finite ones

    @property
    def common_step(self) -> int | None:
        """The last step at which every run has a finite value (compare like with like)."""
        if not self.steps.size or not self.values.shape[0]:
            return None
        both = np.isfinite(self.values).all(axis=0)
        idx = np.flatnonzero(both)
        return int(self.steps[idx[-1]]) if idx.size else None

    def at(self, step: int | None) -> np.ndarray:
        """Each run's value at `step` ([R], NaN where missing or step is None)."""
        out = np.full(self.values.shape[0], np.nan)
        if step is None:
            return out
        i = int(np.searchsorted(self.steps, step))
        if i < self.steps.size and self.steps[i] == step:
            out[:] = self.values[:, i]
        return out

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """(last step with a value, that value) per run, NaN/Inf as they are (a diverged run's latest
        value is not its last finite one); -1 / NaN for none."""
        r = self.values.shape[0]
        steps = np.full(r, -1, dtype=np.int64)
        vals = np.full(r, np.nan)
        has = self.present if self.present is not None else np.isfinite(self.values)
        for i in range(r):
            idx = np.flatnonzero(has[i])
            if idx.size:
                steps[i] = self.steps[idx[-1]]
                vals[i] = self.values[i, idx[-1]]
        return steps, vals


def align(series: list[tuple[np.ndarray, np.ndarray]]) -> Aligned:
    """Put each run's (steps, values) on the union of all steps.

    A step logged twice by one run (a resumed run) keeps its last value, which
    is what the run ended up with at that step.
    """
    arrays = [(np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for s, v in series]
    if not arrays:
        return Aligned(np.zeros(0, dtype=np.int64), np.zeros((0, 0)), np.zeros((0, 0), dtype=bool))
    steps = np.unique(np.concatenate([s for s, _ in arrays])) if any(s.size for s, _ in arrays) \
        else np.zeros(0, dtype=np.int64)
    out = np.full((len(arrays), steps.size), np.nan)
    present = np.zeros(out.shape, dtype=bool)
    for i, (s, v) in enumerate(arrays):
        if s.size:
            uniq, first_in_reversed = np.unique(s[::-1], return_index=True)
            last = s.size - 1 - first_in_reversed  # each step's last occurrence
            at = np.searchsorted(steps, uniq)
            out[i, at] = v[last]
            present[i, at] = True
    return Aligned(steps, out, present)


def compare(runs: list[RunData], tensor: str | None, metric: Metric) -> Aligned:
    return align([metric_series(d, tensor, metric) for d in runs])
