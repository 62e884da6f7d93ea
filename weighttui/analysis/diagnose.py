"""Alerts: what looks wrong in a run, and what it usually means. No textual.

Each rule is a few vectorised numpy operations over [snapshots, tensors] blocks
of every snapshot of the run, read from the store (`RunData.snapshot_block`,
`RunData.first_nonfinite`) a block at a time, whatever the viewer's row view
keeps: a short event between two thinned rows is still seen, at its own step
(docs/alerts.md has the cost). Rules of two sorts:

- events, reported from the step they first happened: non-finite values,
  a norm jumping far above its recent median, exploding gradients, a sudden
  rise in the fraction of zeros (dead units);
- states, reported while they hold at the snapshot diagnosed (the latest, or
  the timeline position): stagnant tensors, update ratios persistently outside a
  band, vanishing gradients; the step given is where the state began.

Thresholds live in `DiagnoseConfig`; `weighttui info --threshold key=value`
and the app pass them through `DiagnoseConfig.from_options`.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from weighttui.analysis.numbers import three_digits
from weighttui.data.run import RowsUpTo

SEVERITIES = ("error", "warning")

# what each rule's alert says a person should think about
ADVICE = {
    "nonfinite": "usually a too-high learning rate, an overflow (fp16/bf16) or a log/division of zero upstream: "
                 "lower the learning rate, clip gradients, check the inputs and the loss for NaN",
    "nonfinite_grad": "occasional Inf gradients are normal with a mixed-precision loss scaler (the step is skipped); "
                      "if persistent, look for overflow or a NaN in the loss",
    "nonfinite_scalar": "a NaN or Inf loss (or other logged value) means the run has diverged or a batch held bad "
                        "values: lower the learning rate, clip gradients, check the inputs and the loss for "
                        "log(0) or a division by zero",
    "norm_jump": "the run is diverging: weights grew by orders of magnitude within two snapshots; lower the "
                 "learning rate, clip gradients, check the loss scale (fp16) and the learning-rate schedule",
    "stagnant": "a frozen or unused parameter: check requires_grad / trainable, that the optimizer was given it, "
                "that it is used in the forward pass, and that the learning rate is not zero",
    "ratio_high": "updates this large relative to the weights (rule of thumb: ~1e-3 per step) tend to diverge "
                  "or thrash: lower the learning rate or warm it up",
    "ratio_low": "this tensor barely learns: the learning rate may be too low for it, its gradient may vanish, "
                 "or weight decay fights the updates",
    "norm_growth": "weights running away: lower the learning rate, add weight decay or gradient clipping, "
                   "check for a missing normalisation layer",
    "grad_explode": "exploding gradients: clip the gradient norm, lower the learning rate, "
                    "check the initialisation and for a missing normalisation layer",
    "grad_vanish": "vanishing (or missing) gradient: check the initialisation, saturating activations "
                   "(sigmoid/tanh), residual/normalisation layers, or whether the tensor is used at all",
    "oscillation": "consecutive updates point in opposite directions (cos_prev < 0): the weights bounce across a "
                   "valley instead of descending it; lower the learning rate (or raise momentum damping), "
                   "check the learning-rate schedule and warm-up",
    "ascent": "the updates move along the gradient (cos_grad > 0), i.e. uphill: check the sign of the loss "
              "(maximising by mistake), a custom optimizer or gradient hook, or gradients read at another "
              "step than the update",
    "nan_origin": "where the first non-finite value appeared: a gradient first means the loss or the forward "
                  "pass produced it (check inputs, log/sqrt/division, fp16 overflow, loss scaling); optimizer "
                  "state first means the update rule (eps, a zero denominator); weights first means the update "
                  "itself overflowed",
    "alpha_band": "WeightWatcher's power-law exponent of the layer's spectrum outside 2..6: below 2 the layer "
                  "is very heavy-tailed (over-trained, possibly memorising: more regularisation or data, a "
                  "smaller learning rate); above 6 after many fits it still looks like random initialisation "
                  "(under-trained: more training, a larger learning rate, check that the layer learns)",
    "units_dead": "output units (rows, channels) whose gradient has been exactly zero for several snapshots: "
                  "dead ReLUs or units cut off by a mask; lower the learning rate, try LeakyReLU/GELU, check "
                  "the initialisation, biases driven very negative, and any pruning",
    "units_exploding": "a few units carry most of the layer's weight norm: a runaway feature; lower the learning "
                       "rate, add weight decay or normalisation, look at what drives those units",
    "dead_units": "units stopped responding (dead ReLUs) or weights were zeroed: lower the learning rate, "
                  "try LeakyReLU/GELU, check the initialisation and any pruning or masking",
}
RULES = tuple(ADVICE)


@dataclass(frozen=True)
class Alert:
    """One finding: which rule, which tensor (None: the whole run), from which step."""

    rule: str
    tensor: str | None
    step: int
    severity: str  # "warning" | "error"
    message: str  # what was seen
    advice: str  # what it usually means / what to try


# The per-step update-to-weight ratio that is usually healthy (~1e-3 is the rule of thumb): the
# ratio alerts' default thresholds, the overview's green band and the help text that explains it.
RATIO_BAND = (1e-4, 1e-2)


@dataclass
class DiagnoseConfig:
    """Thresholds of the rules. A window counts snapshots (every one of the run), not steps."""

    stagnant_window: int = 5  # this many snapshots in a row without change: stagnant
    stagnant_ratio: float = 1e-6  # an update ratio below this counts as no change
    ratio_low: float = RATIO_BAND[0]  # per-step update ratio band; outside it persistently: alert
    ratio_high: float = RATIO_BAND[1]
    ratio_window: int = 20  # the median ratio over this many snapshots must be outside the band
    ratio_min_ndim: int = 2  # ratio rules only for matrices/kernels (biases start at 0 and move fast)
    norm_growth: float = 10.0  # weight norm above this times its recent median
    norm_window: int = 10
    norm_floor: float = 1e-3  # ignore tensors whose RMS value is still below this (zero-initialised)
    norm_jump: float = 100.0  # weight norm this many times its value one or two snapshots before: diverging
    grad_explode: float = 100.0  # gradient norm above this times its recent median ...
    grad_window: int = 10
    grad_persist: int = 2  # ... for this many snapshots in a row
    grad_vanish: float = 1e-4  # gradient RMS below this times the median tensor's, or exactly 0 ...
    grad_vanish_window: int = 5  # ... for this many snapshots in a row
    zero_rise: float = 0.1  # zero fraction rising by this much (0.1 = 10 points) over its recent median ...
    zero_window: int = 10
    zero_persist: int = 3  # ... and staying up for this many snapshots
    osc_cos: float = -0.5  # cos_prev (docs/instruments.md) at or below this ...
    osc_window: int = 5  # ... for this many snapshots in a row: oscillation
    ascent_cos: float = 0.1  # cos_grad at or above this ...
    ascent_window: int = 10  # ... for this many snapshots in a row: the updates climb the gradient ...
    ascent_decay_cos: float = -0.1  # ... unless cos(update, W) is at or below this: the update shrinks the
    # weights, as AdamW's decoupled weight decay does once it outweighs a gradient near convergence
    alpha_low: float = 2.0  # WeightWatcher's alpha (docs/instruments.md) below this: heavy-tailed ...
    alpha_high: float = 6.0  # ... above this in every one of the layer's last alpha_fits fits: random-like
    alpha_fits: int = 5
    alpha_min_evals: int = 64  # a fit over fewer eigenvalues (a smaller matrix) raises no alert: a random
    # 16 x 16 matrix fits 1.1-2.1, a random 32 x 32 one below 2 in 7% of draws, 64 x 64 and up never (600 draws)
    disable: str = ""  # comma-separated rule names not to run

    @classmethod
    def from_options(cls, options) -> DiagnoseConfig:
        """From ["key=value", ...] (CLI --threshold); ValueError naming the valid keys."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for opt in options or ():
            key, sep, raw = str(opt).partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or key not in fields:
                raise ValueError(f"bad threshold {opt!r}: expected key=value with key one of "
                                 f"{', '.join(fields)}")
            default = fields[key].default
            value: str | int | float
            try:
                if isinstance(default, str):
                    value = raw
                elif isinstance(default, int):
                    value = int(raw)
                else:
                    value = float(raw)
            except ValueError:
                kind = "an integer" if isinstance(default, int) else "a number"
                raise ValueError(f"threshold {key} must be {kind}, got {raw!r}") from None
            values[key] = value
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("_window", "_persist")) and v < 1:
                raise ValueError(f"threshold {f.name} must be >= 1, got {v}")
            if isinstance(v, float) and not v >= 0 and not f.name.endswith("_cos"):  # (cosines: -1..1)
                raise ValueError(f"threshold {f.name} must be >= 0, got {v}")
        if self.ratio_low > self.ratio_high:
            raise ValueError(f"ratio_low ({self.ratio_low}) must not be above ratio_high ({self.ratio_high})")
        unknown = set(self.disabled) - set(RULES)
        if unknown:
            raise ValueError(f"cannot disable unknown rule(s) {', '.join(sorted(unknown))}; "
                             f"rules are {', '.join(RULES)}")

    @property
    def disabled(self) -> set[str]:
        return {r.strip() for r in self.disable.split(",") if r.strip()}


# ----------------------------------------------------------------- helpers


def step_interval(run, n: int | None = None) -> np.ndarray:
    """Steps between the writer's snapshots, per stored row (what one delta spans).

    Row gaps are divided by how many snapshots decimation dropped between
    them; the first row borrows the second's interval. At least 1.
    """
    n = run.n if n is None else n
    steps = run.steps[:n].astype(np.float64)
    out = np.ones(n)
    if n < 2:
        return out
    index = getattr(run, "snapshot_index", None)
    gidx = np.arange(n, dtype=np.float64) if index is None else index[:n].astype(np.float64)
    gap = np.diff(steps) / np.maximum(np.diff(gidx), 1.0)
    out[1:] = np.where(gap > 0, gap, 1.0)
    out[0] = out[1]
    return out


def per_step_ratio(run, n: int | None = None) -> np.ndarray:
    """[rows, tensors] update ratio per optimizer step (delta ratio / steps it spans).

    Linear scaling: exact for updates that keep their direction (momentum,
    Adam over short spans), an underestimate of the per-step ratio for
    updates that wander.
    """
    n = run.n if n is None else n
    ratio = run.stat_matrix("delta", "ratio")[:n]
    return ratio / step_interval(run, n)[:, None]


def _window_min(m: np.ndarray, w: int, fmin) -> np.ndarray:
    """out[i] = min(m[i:i+w]) for i in 0..n-w, in log2(w)+1 passes (doubling windows)."""
    acc, span = m, 1
    while span * 2 <= w:
        acc = fmin(acc[:-span], acc[span:])
        span *= 2
    if span == w:
        return acc.copy() if acc is m else acc
    return fmin(acc[: m.shape[0] - w + 1], acc[w - span : w - span + m.shape[0] - w + 1])


def _rolling_min_before(m: np.ndarray, w: int) -> np.ndarray:
    """out[r] = nanmin(m[r-w:r]) for r >= w, NaN before (a lower bound of the median there)."""
    n = m.shape[0]
    out = np.full(m.shape, np.nan)
    if n > w:
        out[w:] = _window_min(m[: n - 1], w, np.fmin)
    return out


def _min_ahead(m: np.ndarray, p: int) -> np.ndarray:
    """out[r] = min(m[r:r+p]) (NaN if any is NaN or the rows do not exist yet)."""
    n = m.shape[0]
    out = np.full(m.shape, np.nan)
    if n >= p:
        out[: n - p + 1] = _window_min(m, p, np.minimum)
    return out


def _median_rows(x: np.ndarray) -> np.ndarray:
    """Median along axis 1, ignoring NaN; the plain (fast) median when there is none."""
    if np.isnan(x).any():
        return nanmedian(x, axis=1)
    return median(x, axis=1)


def median(x: np.ndarray, axis: int | None = None):
    """np.median(x, axis) of a float64 array without NaN, bit for bit, without importing numpy.ma (which
    np.median's NaN check does): the middle value, or the two middle ones, summed from +0.0 (as numpy's
    mean sums them) and divided by their count."""
    x = np.asarray(x)
    if axis is None:
        x, axis = x.ravel(), 0
    n = x.shape[axis] if x.ndim else 0
    if x.dtype != np.float64 or n == 0:
        return np.median(x, axis=axis)
    ordered = np.sort(x, axis=axis)
    with np.errstate(over="ignore", invalid="ignore"):
        if n % 2:
            out = (0.0 + np.take(ordered, n // 2, axis=axis)) / 1.0
        else:
            out = (0.0 + np.take(ordered, n // 2 - 1, axis=axis) + np.take(ordered, n // 2, axis=axis)) / 2.0
    return out if out.ndim else np.float64(out)


def nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmedian(x, axis) of a float64 array, bit for bit, NaN where every value is NaN (no warning).

    numpy takes these (an axis shorter than 600) through masked arrays: importing numpy.ma and
    its docstrings cost ~10 ms, a fifth of a first `info`'s diagnosis. The same rule here: the
    l-th and h-th smallest values that are not NaN (l = h for an odd count), (low + high) / 2."""
    x = np.asarray(x)
    if x.dtype != np.float64 or not 0 < x.shape[axis] < 600:
        with quiet_nan():
            return np.nanmedian(x, axis=axis)
    nan = np.isnan(x)
    # sorted as numpy.ma sorts (NaN filled with inf, argsort): equal values (0.0 and -0.0) in the same order
    filled = np.where(nan, np.inf, x)
    order = np.argsort(filled, axis=axis)
    count = np.count_nonzero(~nan, axis=axis, keepdims=True)
    high = count // 2
    low = np.where(count % 2 == 1, high, np.maximum(high - 1, 0))

    def nth(k: np.ndarray) -> np.ndarray:
        return np.take_along_axis(filled, np.take_along_axis(order, k, axis), axis)

    with np.errstate(invalid="ignore", over="ignore"):
        out = (0.0 + nth(low) + nth(high)) / 2.0  # (a sum starts from +0.0: numpy's sum of -0.0 and -0.0 is 0.0)
    out[count == 0] = np.nan
    return np.squeeze(out, axis=axis)


def _first_jump(m: np.ndarray, window: int, *, factor: float | None = None, rise: float | None = None,
                persist: int = 1, floor: np.ndarray | None = None, start: int = 0,
                skip: np.ndarray | None = None):
    """Per column, the first row r where m stays (for `persist` rows) far above its median before r.

    "Far above": > factor x median (factor rule) or > median + rise (rise
    rule), for rows r >= start; columns in `skip` are left out. Returns
    (row [T] or -1, median before that row [T]). The rolling
    minimum is a cheap lower bound of the median, so exact medians are taken
    only for the candidate cells, in row order, until each column is settled.
    """
    n, t = m.shape
    rows = np.full(t, -1, dtype=np.int64)
    base = np.full(t, np.nan)
    if n <= window:
        return rows, base
    # Only a column whose largest value is far above its smallest can jump (the rolling minimum is never
    # below the smallest, the value ahead never above the largest): the others are settled here, without
    # the rolling windows (a first `info` of the 1 GiB log: 50 -> ~5 ms).
    may = _may_jump(m, factor, rise)
    if may is not None:
        cols = np.flatnonzero(may)
        if cols.size:
            rows[cols], base[cols] = _first_jump(
                m[:, cols], window, factor=factor, rise=rise, persist=persist, start=start,
                floor=None if floor is None else floor[cols], skip=None if skip is None else skip[cols])
        return rows, base
    lo = _rolling_min_before(m, window)
    after = _min_ahead(m, persist)
    with np.errstate(invalid="ignore"):
        cand = (after > lo * factor) if factor is not None else (after > lo + rise)
        if floor is not None:
            cand &= after > floor[None, :] * (factor if factor is not None else 1.0)
    cand[: max(window, start)] = False
    if skip is not None:
        cand[:, skip] = False
    rr, cc = np.nonzero(cand)  # row-major: sorted by row
    if not rr.size:
        return rows, base
    view = np.lib.stride_tricks.sliding_window_view(m, window, axis=0)  # view[i, c] = m[i:i+w, c]
    done = np.zeros(t, dtype=bool)
    chunk = 1 << 16
    for start in range(0, rr.size, chunk):
        r, c = rr[start : start + chunk], cc[start : start + chunk]
        keep = ~done[c]
        r, c = r[keep], c[keep]
        if not r.size:
            continue
        med = _median_rows(view[r - window, c])
        a = after[r, c]
        with np.errstate(invalid="ignore"):
            ok = (a > med * factor) & (med > 0) if factor is not None else a > med + rise
            if floor is not None:
                ok &= med > floor[c]
        r, c, med = r[ok], c[ok], med[ok]
        cols, first = np.unique(c, return_index=True)  # first hit per column (rows ascend)
        rows[cols] = r[first]
        base[cols] = med[first]
        done[cols] = True
    return rows, base


def _may_jump(m: np.ndarray, factor: float | None, rise: float | None = None, *,
              inclusive: bool = False) -> np.ndarray | None:
    """Per column of m, whether some value can be more than `factor` times (inclusive: at least), or
    `rise` above, another (NaN left out); None when every column can (nothing to leave out) or the bound
    does not hold (a factor not above 0)."""
    if factor is not None and not factor > 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        top, bottom = np.fmax.reduce(m, axis=0), np.fmin.reduce(m, axis=0)  # (NaN only where all are)
        if factor is None:
            may = top > bottom + rise
        else:
            may = top >= bottom * factor if inclusive else top > bottom * factor
    return None if may.all() else may


class quiet_nan:
    """Silence 'All-NaN slice' warnings: a column without data simply has no median."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _trailing(state: np.ndarray, known: np.ndarray):
    """Per column: how many known rows at the end are in `state`, and the last known row not in it.

    Unknown rows (tensor absent, no delta yet) neither count nor break the run.
    Returns (count [T], last_breaking_row [T] or -1).
    """
    n = state.shape[0]
    idx = np.arange(n)[:, None]
    breaking = known & ~state
    last_break = np.where(breaking, idx, -1).max(axis=0) if n else np.zeros(state.shape[1], dtype=np.int64)
    count = (known & state & (idx > last_break[None, :])).sum(axis=0)
    return count, last_break


# ------------------------------------------------------------------- rules

_TAIL = 64  # snapshots the state rules read first; older ones only for states that began before them
_BLOCK = 4096  # snapshots a rule reads at once over the history: memory stays bounded on any run


class _History:
    """Event-rule results over snapshots already judged, kept between calls.

    The app diagnoses a growing run about once a second, and a replay position
    moves back and forth: snapshots already judged are not read again. Every
    snapshot the store holds is final (the rules read the run's snapshots, not the
    row view, whose newest row may be replaced while it is thinned), so a result
    over snapshots 0..k holds for any later call; a reset, another run or another
    config change the key, and everything is redone.
    """

    def __init__(self, key):
        self.key = key
        self.rules: dict[str, tuple[int, np.ndarray, np.ndarray | None]] = {}  # rule -> (decided, row, extra)
        self.scans: dict[tuple, tuple[int, np.ndarray]] = {}  # (kind, stat) -> (scanned, first finite row)
        # state rule -> (p, count, last break, columns valid): a state over snapshots 0..p-1 (trailing_state)
        self.trailing: dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.tensors: tuple = ()  # (trainable, ndim, size, names) of the key's tensors
        # (rule, column) -> (windows judged, the first window of the stretch outside the band): _state_start
        self.starts: dict[tuple[str, int], tuple[int, int]] = {}
        # (rule, column, snapshot) -> the first snapshot at or after it where the state held: _first_held
        self.held: dict[tuple[str, int, int], int] = {}


_histories: weakref.WeakKeyDictionary[Any, _History] = weakref.WeakKeyDictionary()  # RunData -> _History


def _resolve(run, upto_row: int | None) -> tuple[Any, int]:
    """(the RunData, how many of its snapshots to diagnose): the rows asked for are the row view's
    (upto_row) or a RowsUpTo's (as of its snapshot); the rules read every snapshot up to there."""
    if isinstance(run, RowsUpTo):
        data, count = run.data, run.index + 1
    else:
        data, count = run, run.snapshot_count
    if upto_row is not None:
        index = run.snapshot_index
        if not index.size:
            return data, 0
        count = min(count, int(index[min(max(int(upto_row), 0), index.size - 1)]) + 1)
    return data, max(0, min(count, data.snapshot_count))


class _Context:
    """What every rule needs, for the run's snapshots 0..n-1 (every one, read from the store)."""

    def __init__(self, run, n: int, config: DiagnoseConfig, budget_s: float | None = None):
        self.run = run
        self.n = n
        self.config = config
        self.deadline = None if budget_s is None else time.perf_counter() + budget_s
        self._recent: dict[tuple, np.ndarray] = {}  # _block's reads of the last snapshots, this call only
        self.complete = True  # False: a history scan stopped at the deadline (diagnose_within)
        self.steps = run.snapshot_meta(0, n)[0]
        self.tensors = list(run.tensors)
        t = len(self.tensors)
        self.t = t
        self.alerts: list[Alert] = []
        self.nonfinite: dict[str, np.ndarray] = {}  # kind -> first non-finite snapshot per tensor, or -1
        # steps between the writer's snapshots, per snapshot (what one delta spans; the first borrows
        # the second's); at least 1
        interval = np.ones(n)
        if n >= 2:
            gap = np.diff(self.steps).astype(np.float64)
            interval[1:] = np.where(gap > 0, gap, 1.0)
            interval[0] = interval[1]
        self.interval = interval
        key = (id(run.run), run.resets, t, dataclasses.astuple(config))
        hist = _histories.get(run)
        if hist is None or hist.key != key:
            hist = _History(key)
            hist.tensors = (np.array([bool(i.trainable) for i in self.tensors], dtype=bool),
                            np.array([len(i.shape) for i in self.tensors], dtype=np.int64),
                            np.array([max(1, int(i.size)) for i in self.tensors], dtype=np.float64),
                            [i.name for i in self.tensors])
            _histories[run] = hist
        self.history = hist
        self.trainable, self.ndim, self.size, self.names = hist.tensors

    def rows(self, kind: str, stat: str, lo: int, hi: int | None = None, cols=None) -> np.ndarray:
        """Snapshots lo..hi-1 (default: to n) of one statistic, [snapshots, tensors] (or `cols`),
        read from the store: callers read a block or a few columns at a time."""
        return np.ascontiguousarray(self._block(kind, stat, lo, hi, cols), dtype=np.float64)

    def present(self, lo: int, hi: int | None = None, cols=None) -> np.ndarray:
        """Which tensors (or `cols`) snapshots lo..hi-1 covered."""
        return self._block("weights", None, lo, hi, cols)

    def _block(self, kind: str, stat: str | None, lo: int, hi: int | None, cols) -> np.ndarray:
        hi = max(0, self.n if hi is None else min(hi, self.n))
        lo = min(max(0, lo), hi)
        if cols is not None or hi - lo > _TAIL:
            return self.run.snapshot_block(kind, stat, lo, hi, cols)
        # the last snapshots, read by several rules in one call: read once (at most _TAIL rows each)
        key = (kind, stat, lo, hi)
        got = self._recent.get(key)
        if got is None:
            got = self._recent[key] = self.run.snapshot_block(kind, stat, lo, hi)
            got.flags.writeable = False  # (shared: a rule that wants to change it copies it)
        return got

    def add(self, rule: str, col: int | np.integer, row: int | np.integer, severity: str, message: str,
            step: int | None = None) -> None:
        self.alerts.append(Alert(rule=rule, tensor=self.names[col], step=int(self.steps[row]) if step is None else step,
                                 severity=severity, message=message, advice=ADVICE[rule]))

    def first_held(self, key: str, col: int | np.integer, lo: int, held) -> int:
        """The first snapshot at or after `lo` (and before n) where held(a, b) -> bool [b - a] is
        true for a column, read forward a block at a time and remembered (snapshots are final);
        `lo` when there is none."""
        k = (key, int(col), int(lo))
        hit = self.history.held.get(k)
        if hit is not None and hit < self.n:
            return hit
        for a in range(lo, self.n, _BLOCK):
            got = held(a, min(self.n, a + _BLOCK))
            if got.any():
                self.history.held[k] = r = a + int(np.argmax(got))
                return r
        return lo

    def first_present_row(self, col: int | np.integer, lo: int = 0) -> int:
        return self.first_held("present", col, lo, lambda a, b: self.present(a, b, [int(col)])[:, 0])

    def first_event(self, name: str, window: int, persist: int, detect):
        """First snapshot per column where an event rule fires, using and extending the history.

        detect(lo, hi, start, skip) -> (row [T] absolute or -1, extra [T, k]):
        candidate snapshots start..hi-persist, data lo..hi-1, columns in skip
        (booleans) already settled. Called a block of snapshots at a time, in
        order. Returns (row [T], extra [T, k]) valid for snapshots < n.
        """
        n, t = self.n, self.t
        decided, row, extra = self.history.rules.get(name, (0, np.full(t, -1, dtype=np.int64), None))
        last = n - persist  # the last snapshot that can be judged with n of them
        visible = (row >= 0) & (row <= last)
        out_row = np.where(visible, row, -1)
        out_extra = extra
        if last >= decided:
            done = visible.copy()
            upto = last + 1
            for b0 in range(decided, last + 1, _BLOCK):
                if done.all():
                    break
                if b0 > decided and self.over_time():
                    upto = b0  # the rest on the next call
                    break
                b1 = min(last + 1, b0 + _BLOCK)
                new_row, new_extra = detect(max(0, b0 - window), b1 + persist - 1, b0, done)
                fresh = (new_row >= 0) & ~done
                out_row = np.where(fresh, new_row, out_row)
                out_extra = new_extra if out_extra is None else np.where(fresh[:, None], new_extra, out_extra)
                done |= fresh
            # every snapshot is final: what snapshots 0..upto-1 decided holds for good
            self.history.rules[name] = (upto, out_row, out_extra)
        if out_extra is None:
            out_extra = np.full((t, 1), np.nan)
        return out_row, out_extra

    def over_time(self) -> bool:
        """The deadline passed (diagnose_within): a history scan stops after its current block."""
        if self.deadline is None or time.perf_counter() <= self.deadline:
            return False
        self.complete = False
        return True

    def first_finite(self, kind: str, stat: str) -> np.ndarray:
        """Per column, the first snapshot whose `stat` is finite, or -1 (before n): scanned once,
        extended as the run grows."""
        done, first = self.history.scans.get((kind, stat), (0, np.full(self.t, -1, dtype=np.int64)))
        upto = self.n
        for lo in range(done, self.n, _BLOCK):
            hi = min(self.n, lo + _BLOCK)
            cols = np.flatnonzero(first < 0)
            if not cols.size:
                break
            if lo > done and self.over_time():
                upto = lo
                break
            found = np.isfinite(self.rows(kind, stat, lo, hi, cols=cols))
            has = found.any(axis=0)
            first[cols[has]] = lo + np.argmax(found[:, has], axis=0)
        if upto > done:
            self.history.scans[(kind, stat)] = (upto, first)
        return np.where(first < self.n, first, -1)

    def trailing_state(self, name: str, states, min_count: int = 1, only: np.ndarray | None = None):
        """(count [T], last_break [T] absolute or -1) of a state holding over the last snapshots.

        states(lo, hi, cols) -> (state, known) [snapshots lo..hi-1, cols] booleans.
        The last _TAIL snapshots are read first; a column whose state holds over
        all of them (at least min_count times; in `only` if given) is followed
        back to where it began: from the history (what the last call found before
        its own tail, extended by the snapshots since) or, where it has none, read
        backwards a block at a time until the state breaks.
        """
        n = self.n
        p = max(0, n - _TAIL)
        state, known = states(p, n, None)
        count, last_break = _trailing(state, known)
        last_break = np.where(last_break >= 0, last_break + p, -1)
        open_ = (last_break < 0) & (count >= min_count) & (p > 0)
        if only is not None:
            open_ &= only
        if open_.any():
            before, broke = self._trailing_before(name, states, p, open_)
            count[open_] += before[open_]
            last_break[open_] = broke[open_]
        return count, last_break

    def _trailing_before(self, name: str, states, p: int, open_: np.ndarray):
        """(count, last_break) of the state over snapshots 0..p-1 for the `open_` columns."""
        count = np.zeros(self.t, dtype=np.int64)
        broke = np.full(self.t, -1, dtype=np.int64)
        todo = open_.copy()
        hit = self.history.trailing.get(name)
        if hit is not None and hit[0] <= p:  # snapshots are final: extend what the last call found
            m, c0, b0, valid = hit
            use = open_ & valid
            cols = np.flatnonzero(use)
            if cols.size:
                c1, b1 = c0[cols].copy(), b0[cols].copy()
                for lo in range(m, p, _BLOCK):
                    hi = min(p, lo + _BLOCK)
                    c, b = _trailing(*states(lo, hi, cols))
                    c1 = np.where(b >= 0, c, c1 + c)
                    b1 = np.where(b >= 0, b + lo, b1)
                count[cols], broke[cols] = c1, b1
                todo &= ~use
        hi = p
        while todo.any() and hi > 0:  # backwards until the state breaks
            cols = np.flatnonzero(todo)
            lo = max(0, hi - _BLOCK)
            c, b = _trailing(*states(lo, hi, cols))
            count[cols] += c
            broke[cols] = np.where(b >= 0, b + lo, -1)
            todo[cols] = b < 0
            hi = lo
        self.history.trailing[name] = (p, count, broke, open_)
        return count, broke


def _jump_detector(ctx: _Context, kind: str, stat: str, window: int, **kw):
    def detect(lo, hi, start, skip):
        m = ctx.rows(kind, stat, lo, hi)
        rows, base = _first_jump(m, window, start=start - lo, skip=skip, **kw)
        return np.where(rows >= 0, rows + lo, -1), base[:, None]
    return detect


def _count(x) -> str:
    """A NaN/Inf count from the log: an integer, or whatever else a hostile log put there."""
    x = float(x)
    return str(int(x)) if np.isfinite(x) and x == int(x) else three_digits(x)


def _rule_nonfinite(ctx: _Context) -> None:
    """First non-finite values per tensor; sets ctx.nonfinite[kind] (first snapshot [T] or -1) for the quieting."""
    for kind, rule, severity in (("weights", "nonfinite", "error"), ("grad", "nonfinite_grad", "warning")):
        if not ctx.run.has_kind(kind):
            continue

        # every snapshot, scanned once in blocks and extended as the run grows (the store keeps it)
        rows, nan, inf = ctx.run.first_nonfinite(kind, ctx.n - 1)
        extra = np.stack([nan, inf], axis=1)
        ctx.nonfinite[kind] = rows
        cols = np.nonzero(rows >= 0)[0]
        if not cols.size or rule in ctx.config.disabled:
            continue
        lo = max(0, ctx.n - _TAIL)
        nan_now, inf_now = ctx.rows(kind, "nan", lo), ctx.rows(kind, "inf", lo)
        present = ctx.present(lo)
        what = "values" if kind == "weights" else "gradients"
        for c in cols:
            r0 = int(rows[c])
            here = np.nonzero(present[:, c])[0]
            now = ""
            if here.size:
                k = here[-1]
                if nan_now[k, c] > 0 or inf_now[k, c] > 0:
                    now = (f"; at step {int(ctx.steps[lo + k])}: {_count(nan_now[k, c])} NaN, "
                           f"{_count(inf_now[k, c])} Inf")
                else:  # the first snapshot after the last non-finite one, where the rows read hold it
                    bad = np.nonzero((nan_now[here, c] > 0) | (inf_now[here, c] > 0))[0]
                    now = (f"; finite again at step {int(ctx.steps[lo + here[bad[-1] + 1]])}" if bad.size
                           else f"; finite again by step {int(ctx.steps[lo + k])}")
            held = ("other alerts for this tensor are held back from then on (they assume finite values)"
                    if kind == "weights" else
                    "gradient alerts for it are held back while its gradients are not finite")
            ctx.add(rule, c, r0, severity,
                    f"non-finite {what}: {_count(extra[c, 0])} NaN, {_count(extra[c, 1])} Inf when first seen"
                    f"{now}; {held}")


def _rule_stagnant(ctx: _Context) -> set[int]:
    """Trainable tensors that did not change over the last K snapshots; returns their columns."""
    cfg = ctx.config
    if "stagnant" in cfg.disabled or ctx.n < 2:
        return set()
    if ctx.run.has_kind("delta"):
        def states(lo, hi, cols):
            changed = ctx.rows("delta", "changed_frac", lo, hi, cols=cols)
            ratio = ctx.rows("delta", "ratio", lo, hi, cols=cols)
            present = ctx.present(lo, hi, cols)
            known = present & (np.isfinite(changed) | np.isfinite(ratio))
            with np.errstate(invalid="ignore"):
                return (changed == 0) | (ratio < cfg.stagnant_ratio), known
    else:  # no update statistics in the log: identical statistics count as no change
        def states(lo, hi, cols):
            lo1 = max(0, lo - 1)
            st = np.stack([ctx.rows("weights", s, lo1, hi, cols=cols) for s in ("mean", "std", "min", "max", "norm")])
            present = ctx.present(lo1, hi, cols)
            still = np.zeros(present.shape, dtype=bool)
            known = np.zeros(present.shape, dtype=bool)
            still[1:] = (st[:, 1:] == st[:, :-1]).all(axis=0)
            known[1:] = present[1:] & present[:-1] & np.isfinite(st[:, 1:]).all(axis=0)
            return still[lo - lo1:], known[lo - lo1:]
    count, last_break = ctx.trailing_state("stagnant", states, only=ctx.trainable)
    hits = np.nonzero((count >= cfg.stagnant_window) & ctx.trainable)[0]
    for c in hits:
        r = int(last_break[c]) if last_break[c] >= 0 else ctx.first_present_row(c)
        ctx.add("stagnant", c, r, "warning",
                f"trainable but unchanged for the last {int(count[c])} snapshots "
                f"(no element changed or update ratio < {three_digits(cfg.stagnant_ratio)}) "
                f"since step {int(ctx.steps[r])}")
    return set(hits.tolist())


def _rule_ratio(ctx: _Context, skip: set[int]) -> None:
    cfg = ctx.config
    wanted = [r for r in ("ratio_high", "ratio_low") if r not in cfg.disabled]
    w = cfg.ratio_window
    if not wanted or not ctx.run.has_kind("delta") or ctx.n < max(2, w):
        return  # not enough history to call anything persistent
    interval = ctx.interval
    recent = ctx.rows("delta", "ratio", ctx.n - w) / interval[-w:, None]
    eligible = ctx.trainable & (ctx.ndim >= cfg.ratio_min_ndim)
    eligible[list(skip)] = False
    with quiet_nan(), np.errstate(invalid="ignore"):
        enough = np.isfinite(recent).sum(axis=0) >= max(1, w // 2)
        med = nanmedian(recent, axis=0)
        high = eligible & enough & (med > cfg.ratio_high)
        low = eligible & enough & (med < cfg.ratio_low)
        # A tensor slow while the others learn is an outlier; all of them slow together is
        # usually an annealed or converged run, worth an alert only if it was so from the start.
        pool = med[eligible & enough]
        pool = pool[~np.isnan(pool)]  # (np.nanmedian's rule)
        typical = float(median(pool)) if pool.size else np.nan
    others_learn = typical >= cfg.ratio_low
    for rule, mask, word, bound in (("ratio_high", high, "above", cfg.ratio_high),
                                    ("ratio_low", low, "below", cfg.ratio_low)):
        if rule not in wanted:
            continue
        for c in np.nonzero(mask)[0]:
            start = _state_start(ctx, rule, int(c), w, (lambda m, b=bound: m > b) if word == "above"
                                 else (lambda m, b=bound: m < b))
            if rule == "ratio_low" and not (others_learn or start == 0):
                continue
            why = ""
            if rule == "ratio_low":
                why = (f" while the median tensor's is {three_digits(typical)}" if others_learn
                       else " ever since the first snapshots")
            ctx.add(rule, c, start, "warning",
                    f"update ratio per step {word} {three_digits(bound)} for {ctx.n - start}+ snapshots "
                    f"(median of the last {w}: {three_digits(med[c])}){why}")


def _state_start(ctx: _Context, rule: str, c: int, w: int, outside) -> int:
    """The snapshot where the trailing stretch of 'rolling median of the per-step update ratio outside
    the band' began, for column c: read backwards a block at a time until a window inside it; or,
    when an earlier call found it, only the windows since that call (a window's median is final)."""
    n = ctx.n
    top = n - w + 1  # windows i in [0, top): ratio[i:i+w]
    hit = ctx.history.starts.get((rule, c))
    floor, found = (hit[0], hit[1]) if hit is not None and hit[0] <= top else (0, None)
    i1 = top
    first = 0
    while i1 > floor:
        i0 = max(floor, i1 - _BLOCK)
        series = ctx.rows("delta", "ratio", i0, i1 + w - 1, cols=[c])[:, 0] / ctx.interval[i0 : i1 + w - 1]
        view = np.lib.stride_tricks.sliding_window_view(series, w)  # row i: series[i:i+w]
        with quiet_nan(), np.errstate(invalid="ignore"):
            out = outside(nanmedian(view, axis=1))
        inside = np.nonzero(~out)[0]
        if inside.size:
            first = i0 + int(inside[-1]) + 1  # the first window of the stretch starts here
            break
        i1 = i0
    else:
        first = found if found is not None else 0
    ctx.history.starts[(rule, c)] = (max(top, 0), first)
    return min(n - 1, first)


def _rule_norm_growth(ctx: _Context) -> None:
    cfg = ctx.config
    if "norm_growth" in cfg.disabled:
        return
    floor = cfg.norm_floor * np.sqrt(ctx.size)  # an RMS of norm_floor, as a norm
    detect = _jump_detector(ctx, "weights", "norm", cfg.norm_window, factor=cfg.norm_growth, floor=floor)
    _report_jumps(ctx, "norm_growth", "weights", cfg.norm_window, 1, detect, "warning", "weight", "")


def _rule_grad_explode(ctx: _Context) -> None:
    cfg = ctx.config
    if "grad_explode" in cfg.disabled or not ctx.run.has_kind("grad"):
        return
    detect = _jump_detector(ctx, "grad", "norm", cfg.grad_window, factor=cfg.grad_explode,
                            persist=cfg.grad_persist)
    _report_jumps(ctx, "grad_explode", "grad", cfg.grad_window, cfg.grad_persist, detect, "error", "gradient",
                  ", and stayed up", only=ctx.trainable)


def _report_jumps(ctx: _Context, rule: str, kind: str, window: int, persist: int, detect, severity: str,
                  noun: str, tail: str, only: np.ndarray | None = None) -> None:
    """One alert per tensor at the first jump `detect` finds in its `kind` norm (tensors in `only`)."""
    rows, extra = ctx.first_event(rule, window, persist, detect)
    hit = rows >= 0
    for c in np.nonzero(hit if only is None else hit & only)[0]:
        r = int(rows[c])
        value = float(ctx.rows(kind, "norm", r, r + 1, cols=[c])[0, 0])
        ctx.add(rule, c, r, severity,
                f"{noun} norm jumped to {three_digits(value)}, {value / extra[c, 0]:.0f}x its median "
                f"{three_digits(extra[c, 0])} over the {window} snapshots before{tail}")


def _rule_grad_vanish(ctx: _Context) -> None:
    cfg = ctx.config
    if "grad_vanish" in cfg.disabled or not ctx.run.has_kind("grad"):
        return
    root = np.sqrt(ctx.size)
    typical_cache: dict[tuple[int, int], tuple] = {}

    def rms_typical(lo, hi):
        if (lo, hi) not in typical_cache:
            rms = ctx.rows("grad", "norm", lo, hi) / root[None, :]
            live = ctx.present(lo, hi) & ctx.trainable[None, :] & np.isfinite(rms)
            typical = _median_rows(np.where(live, rms, np.nan))  # the median tensor, per snapshot
            typical_cache.clear()  # (one block at a time)
            typical_cache[lo, hi] = (rms, live, typical, live.sum(axis=1) >= 2)
        return typical_cache[lo, hi]

    def states(lo, hi, cols):
        rms, live, typical, several = rms_typical(lo, hi)
        if cols is not None:
            rms, live = rms[:, cols], live[:, cols]
        with np.errstate(invalid="ignore"):
            vanish = (rms == 0) | (several[:, None] & (rms < cfg.grad_vanish * typical[:, None]))
        return vanish, live

    count, last_break = ctx.trailing_state("grad_vanish", states, only=ctx.trainable)
    off = max(0, ctx.n - _TAIL)
    for c in np.nonzero((count >= cfg.grad_vanish_window) & ctx.trainable)[0]:
        lo = int(last_break[c]) + 1 if last_break[c] >= 0 else 0
        rms, live, typical, _several = rms_typical(off, ctx.n)
        here = np.nonzero(live[:, c])[0]
        k = here[-1] if here.size else rms.shape[0] - 1
        r = ctx.first_present_row(c, lo)
        # the state is "zero or tiny" over the whole span; the words say which it is at its latest snapshot
        if rms[k, c] == 0:
            what = "exactly zero"
        else:
            what = f"{three_digits(rms[k, c])} RMS, {three_digits(rms[k, c] / typical[k])}x the median tensor's"
        ctx.add("grad_vanish", c, r, "warning", f"gradient zero or below {cfg.grad_vanish:g}x the median tensor's "
                f"RMS for the last {int(count[c])} snapshots (since step {int(ctx.steps[r])}); at step "
                f"{int(ctx.steps[off + k])}: {what}")


def _rule_dead_units(ctx: _Context) -> None:
    cfg = ctx.config
    if "dead_units" in cfg.disabled:
        return
    for kind, what in (("weights", "zero weights"), ("grad", "zero gradients")):
        if not ctx.run.has_kind(kind):
            continue
        detect = _jump_detector(ctx, kind, "zero_frac", cfg.zero_window, rise=cfg.zero_rise,
                                persist=cfg.zero_persist)
        rows, extra = ctx.first_event(f"dead_units:{kind}", cfg.zero_window, cfg.zero_persist, detect)
        for c in np.nonzero(rows >= 0)[0]:
            r = int(rows[c])
            value = float(ctx.rows(kind, "zero_frac", r, r + 1, cols=[c])[0, 0])
            ctx.add("dead_units", c, r, "warning",
                    f"{what} rose from {extra[c, 0]:.0%} to {value:.0%} of the elements at step "
                    f"{int(ctx.steps[r])} and stayed up")


def _rule_norm_jump(ctx: _Context) -> None:
    """A weight norm `norm_jump` times its value one or two snapshots before: divergence under way.

    norm_growth compares with a median over norm_window snapshots, so a run that
    blows up within its first few snapshots, or within two, is caught here. The
    alert is dated to the first snapshot that showed the jump: the first after
    the base that was at least halfway there in orders of magnitude.
    """
    cfg = ctx.config
    if "norm_jump" in cfg.disabled or ctx.n < 2:
        return
    floor = cfg.norm_floor * np.sqrt(ctx.size)
    factor = cfg.norm_jump

    def detect(lo, hi, start, skip):
        m = ctx.rows("weights", "norm", lo, hi)
        k, t = m.shape
        rows = np.full(t, -1, dtype=np.int64)
        extra = np.full((t, 3), np.nan)  # dated row, base value, base row
        if k < 2:
            return rows, extra
        # only columns whose largest norm is `factor` times their smallest (or more) can jump: the rest
        # are settled without the [snapshots, tensors] passes below
        may = _may_jump(m, factor, inclusive=True)
        cols = np.arange(t) if may is None else np.flatnonzero(may)
        if not cols.size:
            return rows, extra
        if cols.size < t:
            m = m[:, cols]
        prev1 = np.full_like(m, np.nan)
        prev1[1:] = m[:-1]
        prev2 = np.full_like(m, np.nan)
        prev2[2:] = m[:-2]
        base = np.fmin(prev1, prev2)
        with np.errstate(invalid="ignore", over="ignore"):
            hit = (m >= base * factor) & (base > floor[None, cols])
        hit[: max(start - lo, 1)] = False
        if skip is not None:
            hit[:, skip[cols]] = False
        has = hit.any(axis=0)
        first = np.argmax(hit, axis=0)
        for c in np.nonzero(has)[0]:
            r = int(first[c])
            b = float(base[r, c])
            brow = r - 2 if r >= 2 and not prev1[r, c] < prev2[r, c] else r - 1
            dated = next(j for j in range(brow + 1, r + 1) if m[j, c] >= b * np.sqrt(factor))
            rows[cols[c]] = r + lo
            extra[cols[c]] = (dated + lo, b, brow + lo)
        return rows, extra

    rows, extra = ctx.first_event("norm_jump", 2, 1, detect)
    jumped = {ctx.names[c]: int(ctx.steps[int(extra[c, 0])]) for c in np.nonzero(rows >= 0)[0]}
    # the same run-up seen later against a 10-snapshot median says nothing new
    ctx.alerts = [a for a in ctx.alerts if not (a.rule == "norm_growth" and a.tensor in jumped
                                                and a.step >= jumped[a.tensor])]
    for c in np.nonzero(rows >= 0)[0]:
        r, dated, b, brow = int(rows[c]), int(extra[c, 0]), float(extra[c, 1]), int(extra[c, 2])
        value = float(ctx.rows("weights", "norm", r, r + 1, cols=[c])[0, 0])
        span = f"{r - brow} snapshot{'s' if r - brow > 1 else ''}"
        ctx.add("norm_jump", int(c), dated, "error",
                f"weight norm {three_digits(b)} at step {int(ctx.steps[brow])} -> {three_digits(value)} at step "
                f"{int(ctx.steps[r])} ({three_digits(value / b)}x within {span})")


def _rule_nonfinite_scalars(ctx: _Context) -> None:
    """A logged scalar (the loss ...) that is NaN or Inf: named, from the first step it was."""
    if "nonfinite_scalar" in ctx.config.disabled:
        return
    last_step = int(ctx.steps[ctx.n - 1])
    for name in ctx.run.scalar_names:
        steps, values = ctx.run.scalars(name)
        upto = int(np.searchsorted(steps, last_step, side="right"))
        bad = ~np.isfinite(values[:upto])
        if not bad.any():
            continue
        i = int(np.argmax(bad))
        latest = values[upto - 1]
        last_bad = int(np.flatnonzero(bad)[-1])
        now = (f"; still {latest} at step {int(steps[upto - 1])}" if not np.isfinite(latest)
               else f"; finite again at step {int(steps[last_bad + 1])}")
        ctx.alerts.append(Alert(rule="nonfinite_scalar", tensor=None, step=int(steps[i]), severity="error",
                                message=f"scalar {name!r} is {values[i]} from step {int(steps[i])} "
                                        f"({int(bad.sum())} non-finite value(s)){now}",
                                advice=ADVICE["nonfinite_scalar"]))


# states and gradient events that non-finite values fake: a NaN element freezes the rest of the
# tensor's update statistics (stagnant), a NaN gradient is not a small one (grad_vanish)
_STATES = ("stagnant", "ratio_high", "ratio_low", "grad_vanish")


def _quiet_after_nonfinite(ctx: _Context) -> None:
    """Once a tensor's values are NaN/Inf, rules that assume finite values say nothing more about it.

    Weights: events dated before the first non-finite snapshot stay (they may be
    how it began); states and later events go. Gradients: states and gradient
    events are quiet while the gradients were non-finite within the rule's window
    (a loss scaler's occasional Inf gradient skips a step, which looks like a
    stagnant tensor; it must not silence the rules for the rest of the run).
    """
    none = np.full(ctx.t, -1, dtype=np.int64)
    weights = ctx.nonfinite.get("weights", none)
    grad = ctx.nonfinite.get("grad", none)
    w_any, g_any = bool((weights >= 0).any()), bool((grad >= 0).any())
    if not (w_any or g_any):
        return
    col = {name: i for i, name in enumerate(ctx.names)}
    cfg = ctx.config
    windows = {"stagnant": cfg.stagnant_window, "ratio_high": cfg.ratio_window, "ratio_low": cfg.ratio_window,
               "grad_vanish": cfg.grad_vanish_window}

    def grad_bad_in(c: int, lo: int, hi: int) -> bool:
        nan = ctx.rows("grad", "nan", lo, hi, cols=[c])
        inf = ctx.rows("grad", "inf", lo, hi, cols=[c])
        with np.errstate(invalid="ignore"):
            return bool(((nan > 0) | (inf > 0)).any())

    keep = []
    for a in ctx.alerts:
        c = col.get(a.tensor) if a.tensor is not None else None
        if c is None or a.rule.startswith("nonfinite") or a.rule == "nan_origin":
            keep.append(a)
            continue
        if weights[c] >= 0 and (a.rule in _STATES or a.step >= int(ctx.steps[weights[c]])):
            continue
        if grad[c] >= 0:
            if a.rule in _STATES:
                lo, hi = ctx.n - windows[a.rule], ctx.n
            elif a.rule == "grad_explode":
                row = int(np.searchsorted(ctx.steps, a.step))
                lo, hi = row - cfg.grad_window, row + cfg.grad_persist
            else:
                lo = hi = 0
            if hi > lo and grad_bad_in(c, lo, hi):
                continue
        keep.append(a)
    ctx.alerts = keep


def _rule_cosines(ctx: _Context) -> None:
    """oscillation and ascent: the update cosines (delta cos_prev, cos_grad) persistently past a bound."""
    cfg = ctx.config
    run = ctx.run
    if not run.has_kind("delta"):
        return
    for rule, stat, bound, window, sign in (("oscillation", "cos_prev", cfg.osc_cos, cfg.osc_window, -1),
                                            ("ascent", "cos_grad", cfg.ascent_cos, cfg.ascent_window, 1)):
        if rule in cfg.disabled or stat not in run.columns("delta"):
            continue

        def states(lo, hi, cols, stat=stat, bound=bound, sign=sign):
            m = ctx.rows("delta", stat, lo, hi, cols=cols)
            known = np.isfinite(m)
            with np.errstate(invalid="ignore"):
                state = m <= bound if sign < 0 else m >= bound
                if sign > 0 and state.any():  # ascent: not where the update shrinks the weights (decay)
                    state &= ~(_update_weight_cosine(ctx, lo, hi, cols) <= cfg.ascent_decay_cos)
            return state, known

        count, last_break = ctx.trailing_state(rule, states, window, only=ctx.trainable)
        for c in np.nonzero((count >= window) & ctx.trainable)[0]:
            lo = int(last_break[c]) + 1 if last_break[c] >= 0 else 0
            r = ctx.first_held(rule, c, lo, lambda a, b, c=c, states=states: states(a, b, [c])[0][:, 0])
            # (r: the first snapshot that showed it)
            latest = ctx.rows("delta", stat, ctx.n - 1, cols=[c])[0, 0]
            word = "at or below" if sign < 0 else "at or above"
            ctx.add(rule, c, r, "warning",
                    f"{stat} {word} {bound:g} for the last {int(count[c])} snapshots "
                    f"(since step {int(ctx.steps[r])}; latest {three_digits(latest)})")


def _update_weight_cosine(ctx: _Context, lo: int, hi: int, cols) -> np.ndarray:
    """cos(d, W_prev) of each snapshot's update d = W - W_prev, from the exact norms the log has:
    |W|^2 = |W_prev|^2 + 2 W_prev.d + |d|^2. NaN where it cannot be known (the first snapshot, a delta
    from samples, a tensor missing from the snapshot before: its W_prev is further back)."""
    start = max(lo - 1, 0)
    w = ctx.rows("weights", "norm", start, hi, cols=cols)  # from the snapshot before lo
    d = ctx.rows("delta", "norm", lo, hi, cols=cols)
    exact = ctx.rows("delta", "exact", lo, hi, cols=cols) if "exact" in ctx.run.columns("delta") else None
    if lo > 0:
        prev, now = w[:-1], w[1:]
    else:
        prev, now = np.vstack([np.full((1, w.shape[1]), np.nan), w[:-1]]), w
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (now * now - prev * prev - d * d) / (2.0 * prev * d)
    if exact is not None:
        cos[exact != 1] = np.nan
    return cos


def _rule_units(ctx: _Context) -> None:
    """units_dead / units_exploding: the per-unit counts (docs/instruments.md) nonzero now,
    with which units from the writer's latest event about the tensor."""
    run = ctx.run
    for rule, kind, stat, event in (("units_dead", "grad", "dead_units", "dead_units"),
                                    ("units_exploding", "weights", "exploding_units", "exploding_units")):
        if rule in ctx.config.disabled or not run.has_kind(kind) or stat not in run.columns(kind):
            continue

        def states(lo, hi, cols, kind=kind, stat=stat):
            m = ctx.rows(kind, stat, lo, hi, cols=cols)
            return m > 0, np.isfinite(m)

        count, last_break = ctx.trailing_state(rule, states)
        last_step = int(ctx.steps[ctx.n - 1])
        for c in np.nonzero(count >= 1)[0]:
            lo = int(last_break[c]) + 1 if last_break[c] >= 0 else 0
            r = ctx.first_held(rule, c, lo, lambda a, b, c=c, states=states: states(a, b, [c])[0][:, 0])
            now = ctx.rows(kind, stat, ctx.n - 1, cols=[c])[0, 0]
            tid = ctx.tensors[c].id
            which = [e for e in getattr(run, "events", ()) if e.kind == event and e.tensor == tid
                     and e.step is not None and e.step <= last_step]
            detail = which[-1].message.split(": ", 1)[-1] if which else f"{int(now)} units"
            ctx.add(rule, c, r, "warning", f"{detail} (since step {int(ctx.steps[r])})")


def _rule_alpha(ctx: _Context) -> None:
    """alpha_band: the latest alpha fit below alpha_low (dated at the first of the fits below it in a
    row), or the last alpha_fits fits all above alpha_high; matrices with fewer than alpha_min_evals
    eigenvalues are left out (their fit says nothing: see DiagnoseConfig)."""
    cfg = ctx.config
    if "alpha_band" in cfg.disabled or "alpha" not in ctx.run.columns("weights"):
        return
    k = cfg.alpha_fits
    first = ctx.first_finite("weights", "alpha")  # (tensors never fitted are not read back)
    fits: dict[int, list[tuple[int, float]]] = {  # newest first
        int(c): [] for c in np.flatnonzero(first >= 0) if _eigenvalue_count(ctx, int(c)) >= cfg.alpha_min_evals}
    want = [c for c in fits]
    hi = ctx.n
    while want and hi > 0:  # backwards, a block at a time, until each tensor's last k fits are read
        lo = max(0, hi - _BLOCK)
        m = ctx.rows("weights", "alpha", lo, hi, cols=want)
        for j, c in enumerate(want):
            rows = np.flatnonzero(np.isfinite(m[:, j]))[::-1]
            fits[c].extend((lo + int(r), float(m[r, j])) for r in rows)
        # on, for a tensor with fewer than k fits read, or all of them below alpha_low (where did it begin?)
        want = [c for c in want if lo > first[c] and (
            len(fits[c]) < k or all(v < cfg.alpha_low for _r, v in fits[c]))]
        hi = lo
    for c, got in fits.items():
        if not got:
            continue
        last = got[0][1]
        if last < cfg.alpha_low:
            below = 0
            while below + 1 < len(got) and got[below + 1][1] < cfg.alpha_low:
                below += 1
            ctx.add("alpha_band", c, got[below][0], "warning",
                    f"alpha {last:.2f} below {cfg.alpha_low:g} (heavy-tailed spectrum)")
        elif len(got) >= k and all(v > cfg.alpha_high for _r, v in got[:k]):
            ctx.add("alpha_band", c, got[k - 1][0], "warning",
                    f"alpha above {cfg.alpha_high:g} in the last {k} fits (latest {last:.2f}): "
                    f"the spectrum still looks random")


def _eigenvalue_count(ctx: _Context, c: int) -> int:
    """How many eigenvalues the alpha fit of tensor column c had: the smaller side of its matrix (the
    writer's layout: Keras/Flax kernels keep their units last, record/instruments.py)."""
    # (here, not at the top: the viewer's first screen imports this module, not the recording code)
    from weighttui.record.instruments import matrix_shape, units_last_by_name

    name = ctx.names[c]
    mn = matrix_shape(tuple(ctx.tensors[c].shape), units_last_by_name(name))
    return 0 if mn is None else min(mn)


def _rule_nan_origin(ctx: _Context) -> None:
    """The writer's nan_origin event (docs/instruments.md) as an alert, once it is in the rows
    diagnosed; when it is the weights of a tensor whose `nonfinite` alert starts at the same
    step, that alert gets the flat index instead of a second alert."""
    if "nan_origin" in ctx.config.disabled or not ctx.n:
        return
    last_step = int(ctx.steps[ctx.n - 1])
    cols = {info.id: c for c, info in enumerate(ctx.tensors)}
    for ev in getattr(ctx.run, "events", ()):
        if ev.kind != "nan_origin" or ev.step is None or ev.step > last_step or ev.tensor not in cols:
            continue
        name = ctx.names[cols[ev.tensor]]
        if ev.where == "weights":
            for i, a in enumerate(ctx.alerts):
                if a.rule == "nonfinite" and a.tensor == name and a.step >= ev.step:  # (rows thinned)
                    at = "" if ev.index is None else f" at flat index {ev.index}"
                    ctx.alerts[i] = dataclasses.replace(
                        a, message=f"{a.message}; the first non-finite value of the run{at}")
                    return
        ctx.alerts.append(Alert(rule="nan_origin", tensor=name, step=int(ev.step), severity="error",
                                message=ev.message, advice=ADVICE["nan_origin"]))
        return


def diagnose(run, config: DiagnoseConfig | None = None, *, upto_row: int | None = None) -> list[Alert]:
    """The alerts for a run (a RunData, or a RowsUpTo: as of its snapshot), looking only at its
    snapshots up to the row view's row `upto_row` (default: all).

    Every rule reads every snapshot up to there from the store, whatever the row view keeps
    (max_rows thins it), a block at a time. Sorted: errors first, then by step, then by tensor
    name. Results over snapshots already judged are remembered per RunData, so calling this
    again as the run grows reads only the new snapshots (and a short tail), and a replay position
    moved back reads only what the state rules need.
    """
    return diagnose_within(run, config, upto_row=upto_row)[0]


def diagnose_within(run, config: DiagnoseConfig | None = None, *, upto_row: int | None = None,
                    budget_s: float | None = None) -> tuple[list[Alert], bool]:
    """diagnose(), and whether it is complete: with `budget_s`, the rules' first read of a long
    history stops after the block during which the budget ran out (a viewer's UI thread on a log
    of many GiB), and the alerts are those of the history read so far (each right as far as it
    goes: what was read is remembered, and the next call goes on from there). (alerts, complete)."""
    config = DiagnoseConfig() if config is None else config
    data, n = _resolve(run, upto_row)
    if n == 0 or not data.tensors:
        return [], True
    ctx = _Context(data, n, config, budget_s)
    _rule_nonfinite(ctx)
    stagnant = _rule_stagnant(ctx)
    _rule_ratio(ctx, stagnant)
    _rule_norm_growth(ctx)
    _rule_grad_explode(ctx)
    _rule_grad_vanish(ctx)
    _rule_dead_units(ctx)
    _rule_norm_jump(ctx)
    _rule_nonfinite_scalars(ctx)
    _rule_cosines(ctx)
    _rule_units(ctx)
    _rule_alpha(ctx)
    _rule_nan_origin(ctx)
    _quiet_after_nonfinite(ctx)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    alerts = sorted(ctx.alerts, key=lambda a: (order.get(a.severity, 9), a.step, a.tensor or "", a.rule))
    return alerts, ctx.complete
