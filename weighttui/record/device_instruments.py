"""Instruments (docs/instruments.md) on the paths that compute statistics where the
arrays live: JAX `stats="device"` (integrations/jax_stats.py) and Keras's TF ops
(integrations/keras_tf_stats.py). The same rules as the numpy Recorder
(record/instruments.py: Spectral, sample_index, cosine, stable_rank, ratio,
adam_eff_lr, UnitHealth, AlphaSchedule, powerlaw_alpha, find_origin), written once
against an array module `xp` (jax.numpy, or the TF adapter of keras_tf_stats.py)
that provides matmul, transpose, reshape, take, sqrt, sum, where, isfinite, astype,
asarray, concatenate and linalg.qr / eigh / svdvals.

`start()` launches everything on the device and returns the parts as one flat
float64 vector, which the caller brings to the host in the snapshot's one
transfer (beside the statistics); `finish()` turns the host copy into the
instrument columns, the optim block, the `units` payload and the events.
Per tensor it keeps: the spectral subspaces (n x block, on the device), the
initial values (a copy for jax, whose buffers a training step may donate; TF
reads are copies already) and the cosines' previous sampled values and update
(host float64, cos_sample each).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from weighttui.log.format import FrameType
from weighttui.record import instruments as ref
from weighttui.record.stats import Block


def assemble(chosen, weights: Block, delta: Block | None, grad: Block | None, wcols, dcols, alpha_col,
             unit_result) -> tuple[Block, Block | None, Block | None]:
    """The blocks with the instrument columns the chosen instruments fill (as the numpy Recorder
    writes them: FILLED_BY groups, alpha, unit counts)."""
    if ref.fills(chosen, "weights"):
        weights = ref.with_columns(weights, ref.WEIGHT_INSTRUMENTS, wcols)
    if "alpha" in chosen:
        weights = ref.with_columns(weights, ref.ALPHA_STATS, alpha_col)
    if unit_result is not None:
        wu, gu = unit_result
        weights = ref.with_columns(weights, ref.UNIT_WEIGHT_STATS, wu)
        if grad is not None:
            grad = ref.with_columns(grad, ref.UNIT_GRAD_STATS, gu)
    if delta is not None and ref.fills(chosen, "delta"):
        delta = ref.with_columns(delta, ref.DELTA_INSTRUMENTS, dcols)
    return weights, delta, grad


def optim_row(m_norm: float, v_norm: float, bad: int, st: dict, size: int) -> np.ndarray:
    """One optim block row (OPTIM_STATS) from the state's norms; st as Recorder.snapshot's optim."""
    row = np.full(len(ref.OPTIM_STATS), np.nan)
    row[0], row[1], row[3] = m_norm, v_norm, bad
    if st.get("v") is not None:
        row[2] = ref.adam_eff_lr(float(st.get("lr", math.nan)), v_norm, size, float(st.get("step", 0) or 0),
                                 float(st.get("beta2", 0.999)), float(st.get("eps", 1e-8)))
    elif "lr" in st:
        row[2] = float(st["lr"])
    return row


class _Pending:
    """What start() launched, by row: positions of the parts in the flat vector."""

    def __init__(self, t: int):
        self.t = t
        self.parts: list = []
        self.sizes: list[int] = []
        self.gram: dict[int, int] = {}
        self.gram_d: dict[int, int] = {}
        self.v_new: dict[int, object] = {}
        self.vd_new: dict[int, object] = {}
        self.dist: dict[int, int] = {}
        self.fresh: set[int] = set()
        self.xs: dict[int, int] = {}
        self.gs: dict[int, int] = {}
        self.units: dict[int, int] = {}
        self.gunits: dict[int, int] = {}
        self.alpha: dict[int, int] = {}
        self.optim: dict[int, tuple] = {}  # row -> (m part or None, v part or None, state dict, size)
        self.flat = None  # the device vector: parts concatenated (float64)


class ArrayInstruments:
    """The instruments of one recorder's device snapshots, with array module `xp`."""

    def __init__(self, chosen, xp, settings: ref.Settings = ref.DEFAULTS, *, jit=None):
        self.chosen = frozenset(chosen)
        self.xp = xp
        self._k = self._kernels(jit or (lambda f: f))
        self.settings = settings
        self.alpha = settings.alpha_schedule()
        self.units = ref.UnitHealth()
        self._spec: dict[int, ref.Spectral] = {}
        self._spec_d: dict[int, ref.Spectral] = {}
        self._init: dict[int, Any] = {}
        self._init_norm: dict[int, float] = {}
        self._idx: dict[int, tuple[np.ndarray | None, object]] = {}
        self.cosines = ref.UpdateCosines()
        self.units_last: Callable[[str], bool] = ref.never_units_last  # ref.Instruments.units_last

    @classmethod
    def like(cls, numpy_instruments: ref.Instruments, xp, jit=None) -> ArrayInstruments:
        """The device twin of a Recorder's instruments: the same choice and settings. jit: how the
        per-tensor kernels are compiled (jax.jit: one dispatch each instead of one per op)."""
        ins = numpy_instruments
        twin = cls(ins.chosen, xp, ins.settings, jit=jit)
        twin.units_last = ins.units_last
        return twin

    def _kernels(self, jit) -> dict:
        """The per-tensor computations other than the spectral step, each ending in the flat float64
        part that goes to the host: flat (any array), dist (||x - x0||), rows (per-unit norms; cols: units last),
        state ([norm over the finite elements, non-finite count]), take (the cosines' coordinates)."""
        xp, work = self.xp, self._work

        def flat(a):
            return xp.astype(xp.reshape(a, (-1,)), xp.float64)

        def l2(a, axis=None):
            """sqrt(sum(a*a)) over `axis`, `a` scaled by its largest |value| first: in float32 the squares
            of small values (1e-22, a gradient under a scaled loss, Adam's second moment) underflow to 0 (a
            row read as exactly zero: a false dead unit; v_norm 0), those of large ones overflow."""
            m = xp.max(xp.abs(a), axis=axis, keepdims=True, initial=0.0)  # (initial: an empty tensor's is 0)
            scale = xp.where(xp.isfinite(m) & (m > 0), m, xp.ones_like(m))
            r = a / scale
            return flat(xp.sqrt(xp.sum(r * r, axis=axis, keepdims=True)) * scale)

        def dist(x, x0):
            return l2(work(x) - work(x0))

        def rows(x):
            w = work(x)
            return l2(xp.reshape(w, (w.shape[0], -1)), axis=1)

        def cols(x):  # the units of a tensor whose units are its last axis (ref.matrix_shape)
            w = work(x)
            return l2(xp.reshape(w, (-1, w.shape[-1])), axis=0)

        def state(s):
            s = work(s)
            ok = xp.isfinite(s)
            fin = xp.where(ok, s, xp.zeros_like(s))
            bad = xp.astype(xp.sum(xp.astype(xp.logical_not(ok), xp.int32)), s.dtype)  # counted exactly
            return xp.concatenate([l2(fin), flat(xp.reshape(bad, (1,)))])

        def take(x, idx):
            return flat(xp.take(xp.reshape(x, (-1,)), idx))

        return {f.__name__: jit(f) for f in (flat, dist, rows, cols, state, take)}

    def __bool__(self) -> bool:
        return bool(self.chosen)

    # ---------------------------------------------------------- on the device

    def _add(self, pend: _Pending, x, kernel: str = "flat", *args) -> int:
        """A part for the host: kernel(x, *args), a flat float64 vector."""
        part = self._k[kernel](x, *args)
        pend.parts.append(part)
        pend.sizes.append(int(part.shape[0]))
        return len(pend.parts) - 1

    def _work(self, x):
        """x in the dtype the instruments compute in: float64 stays, other floats go float32."""
        xp = self.xp
        return x if x.dtype == xp.float64 else xp.astype(x, xp.float32)

    def _coords(self, pend: _Pending, info, x) -> int:
        """The part of the values of x at the cosines' coordinates (every element when small)."""
        got = self._idx.get(info.id)
        if got is None:
            host = ref.sample_index(info.name, _size(x), self.settings.cos_sample)
            got = self._idx[info.id] = (host, None if host is None else self.xp.asarray(host))
        return self._add(pend, x) if got[1] is None else self._add(pend, x, "take", got[1])

    def start(self, infos, arrays, prevs=None, grads=None, optim=None) -> _Pending:
        """Launch every chosen instrument of one snapshot on the device.

        arrays: the tensors (row order of infos); prevs: row -> the exact previous values
        (or None); grads: name -> gradient; optim: name -> {"m", "v", "lr", "step", "beta2",
        "eps"} (Recorder.snapshot's optim, arrays of this module)."""
        xp, ch = self.xp, self.chosen
        pend = _Pending(len(infos))
        grads = grads or {}
        for i, (info, x) in enumerate(zip(infos, arrays, strict=True)):
            if not _is_float(x) or not _size(x):
                continue
            w = self._work(x)
            last = self.units_last(info.name)
            mn = ref.matrix_shape(tuple(x.shape), last)
            g = grads.get(info.name)
            g = g if g is not None and tuple(g.shape) == tuple(x.shape) and _is_float(g) else None
            if "sigma" in ch and mn is not None:
                spec = self._spec.get(info.id)
                if spec is None:
                    spec = self._spec[info.id] = ref.Spectral(info.name, self.settings, xp)
                pend.v_new[i], gram = spec.step(xp.reshape(w, mn))
                pend.gram[i] = self._add(pend, gram)
                prev = None if prevs is None else prevs.get(i)
                if prev is not None and tuple(prev.shape) == tuple(x.shape):
                    sd = self._spec_d.get(info.id)
                    if sd is None:
                        sd = self._spec_d[info.id] = ref.Spectral(info.name + "/delta", self.settings, xp)
                    # the update's estimate: one step per snapshot, as on the other paths
                    pend.vd_new[i], gram_d = sd.step(xp.reshape(w - self._work(prev), mn), 0)
                    pend.gram_d[i] = self._add(pend, gram_d)
            if "dist_init" in ch:
                x0 = self._init.get(info.id)
                if x0 is None or tuple(x0.shape) != tuple(x.shape):
                    # a copy where the module makes one (jax: a donated buffer is deleted); TF reads are copies
                    keep = getattr(xp, "array", None)
                    self._init[info.id] = x if keep is None else keep(x, copy=True)
                    pend.fresh.add(i)
                else:
                    pend.dist[i] = self._add(pend, x, "dist", x0)
            if "cos" in ch:
                pend.xs[i] = self._coords(pend, info, x)
                if g is not None:
                    pend.gs[i] = self._coords(pend, info, g)
            if "units" in ch and mn is not None:
                pend.units[i] = self._add(pend, x, "cols" if last else "rows")
                if g is not None:
                    pend.gunits[i] = self._add(pend, g, "cols" if last else "rows")
            if "alpha" in ch and mn is not None and self.alpha.due(info, mn):
                pend.alpha[i] = self._add(pend, xp.linalg.svdvals(xp.reshape(self._work(x), mn)))
            st = (optim or {}).get(info.name) if "optim" in ch else None
            if st:
                pend.optim[i] = tuple(None if st.get(k) is None else self._add(pend, st[k], "state")
                                      for k in ("m", "v")) + (st, _size(x))
        if pend.parts:
            pend.flat = xp.concatenate(pend.parts)
        return pend

    # ---------------------------------------------------------- on the host

    def finish(self, step: int, pend: _Pending, flat: np.ndarray | None, infos, weights: Block,
               delta: Block | None, grad: Block | None, *, origin=None, locate=None):
        """(weights, delta, grad, optim Block or None, units payload or None, event frames) from the
        host copy of pend.flat; commits the spectral subspaces and the cosines' history.
        origin: Recorder.origin_frames, asked with locate (locator()) for the nan_origin event."""
        t = pend.t
        host: list[np.ndarray] = []
        if flat is not None:
            at = 0
            for n in pend.sizes:
                host.append(np.asarray(flat[at:at + n], dtype=np.float64))
                at += n
        w = np.full((t, len(ref.WEIGHT_INSTRUMENTS)), np.nan)
        d = np.full((t, len(ref.DELTA_INSTRUMENTS)), np.nan)
        for i, k in pend.gram.items():
            w[i, 0] = _ritz(host[k])
            self._spec[infos[i].id].commit(pend.v_new[i], w[i, 0])
        norms = weights.stats[:, list(weights.names).index("norm")]
        w[:, 1] = ref.stable_rank(norms, w[:, 0])
        for i, k in pend.gram_d.items():
            sd = _ritz(host[k])
            self._spec_d[infos[i].id].commit(pend.vd_new[i], sd)
            if not math.isnan(sd):
                d[i, 2] = ref.ratio(sd, w[i, 0])
        for i in pend.fresh:
            if math.isfinite(norms[i]):
                self._init_norm[infos[i].id] = float(norms[i])
                w[i, 2] = 0.0
            else:  # initial values with NaN: taken again at the next snapshot
                self._init.pop(infos[i].id, None)
        for i, k in pend.dist.items():
            n0 = self._init_norm.get(infos[i].id)
            if n0 is not None:
                w[i, 2] = ref.ratio(float(host[k][0]), n0)
        for i, k in pend.xs.items():
            d[i, 0], d[i, 1] = self.cosines.update(infos[i].id, host[k],
                                                   host[pend.gs[i]] if i in pend.gs else None)
        alpha = np.full((t, 1), np.nan)
        for i, k in pend.alpha.items():
            alpha[i, 0] = ref.powerlaw_alpha(host[k] ** 2)
        unit_result, payload, events = None, None, []
        if "units" in self.chosen:
            wn = {i: host[k] for i, k in sorted(pend.units.items())}
            wu, gu, payload, events = self.units.update(infos, wn, {i: host[k] for i, k in pend.gunits.items()})
            unit_result = (wu, gu)
        weights, delta, grad = assemble(self.chosen, weights, delta, grad, w, d, alpha, unit_result)
        optim = None
        if pend.optim:
            rows = np.full((t, len(ref.OPTIM_STATS)), np.nan)
            for i, (mk, vk, st, size) in pend.optim.items():
                m_norm, m_bad = (math.nan, 0.0) if mk is None else host[mk]
                v_norm, v_bad = (math.nan, 0.0) if vk is None else host[vk]
                rows[i] = optim_row(m_norm, v_norm, int(m_bad + v_bad), st, size)
            optim = Block(ref.OPTIM_STATS, rows, None)
        frames = [(FrameType.EVENT, {**e, "step": int(step), "time": time.time()}) for e in events]
        if "nan_origin" in self.chosen and origin is not None and locate is not None:
            frames = origin(step, infos, {"weights": weights, "delta": delta, "grad": grad, "optim": optim},
                            locate) + frames
        return weights, delta, grad, optim, payload, frames


def locator(arrays, names, grads, optim, host):
    """locate(kind, row) for Recorder.origin_frames: the flat index of the first non-finite
    element of one tensor, brought to the host with host(array) (the rare path)."""

    def locate(kind, row):
        name = names[row]
        if kind == "grad":
            return ref.first_nonfinite(host(grads[name]))
        if kind == "optim":
            for key in ("m", "v"):
                t = optim[name].get(key)
                at = None if t is None else ref.first_nonfinite(host(t))
                if at is not None:
                    return at
            return None
        return ref.first_nonfinite(host(arrays[row]))

    return locate


def _ritz(gram: np.ndarray) -> float:
    p = int(math.isqrt(gram.size))
    return ref.ritz_sigma(gram.reshape(p, p))


def _is_float(x) -> bool:
    """A floating dtype of any of the modules (numpy, jax incl. bfloat16, TF's DType)."""
    return "float" in str(getattr(x, "dtype", ""))


def _size(x) -> int:
    return math.prod(int(s) for s in tuple(x.shape))
