"""Instruments of the torch path (docs/instruments.md), computed with torch ops on
the tensors' own device; what they need on the host (a few numbers and the
sampled coordinates per tensor) joins the snapshot's one device-to-host copy.

The definitions, and the float64 reference the tests hold these to, are
weighttui.record.instruments'. Per tensor this keeps: the spectral iteration's
subspace (n x block float32, and one for the update), the initial values (a
copy, within `budget_bytes` per device) and the cosines' coordinates, previous
sampled values and previous sampled update (host float64, cos_sample each).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weighttui.log.schema import DELTA_INSTRUMENTS, OPTIM_STATS, WEIGHT_INSTRUMENTS
from weighttui.record import instruments as ref
from weighttui.record.stats import Block


def _spectral_step(w2: torch.Tensor, v: torch.Tensor, iters: int):
    """Block power iteration (two passes over w2 each): (next V, B B^T) with
    Q = orth(W V), B = Q^T W; B B^T's largest eigenvalue is sigma_max^2 (Ritz).
    One vector: u = W v / |W v|, b = u^T W (two matrix-vector products)."""
    b = None
    for _ in range(iters):
        if v.shape[1] == 1:  # torch's matrix-vector paths (mv, vm); a QR of one column is a normalisation
            y = torch.mv(w2, v[:, 0].contiguous())
            b = (y / torch.linalg.vector_norm(y).clamp_min(1e-30) @ w2)[None, :]  # W v = 0: b = 0
        else:
            b = torch.linalg.qr(w2 @ v).Q.T @ w2
        v = b.T.contiguous()  # a strided V sends the next product down a slow path
    assert b is not None
    return v, b @ b.T


class _Pending:
    """What one snapshot started on the device, decoded by finish() from the host copy."""

    def __init__(self, t: int):
        self.parts: list[torch.Tensor] = []
        self.gram: dict[int, int] = {}  # row -> part index (W)
        self.gram_d: dict[int, int] = {}  # row -> part index (dW)
        self.v_new: dict[int, torch.Tensor] = {}
        self.vd_new: dict[int, torch.Tensor] = {}
        self.dist: dict[int, int] = {}  # row -> part index of ||x - x0||
        self.fresh_init: set[int] = set()  # rows whose initial copy was taken now
        self.xs: dict[int, int] = {}  # row -> part index of the sampled values
        self.gs: dict[int, int] = {}  # row -> part index of the sampled gradient
        # row -> (m norm at, v norm at, lr, step, beta2, eps, n); "at": (device, dtype, position) while
        # queued, then (part index, position) in the foreach norms' parts
        self.optim: dict[int, tuple] = {}
        self.units: dict[int, int] = {}  # row -> part index of the per-unit weight norms
        self.gunits: dict[int, int] = {}  # row -> part index of the per-unit gradient norms
        self.alpha: dict[int, int] = {}  # row -> part index of the singular values (alpha's fit)
        self.t = t

    def add(self, x: torch.Tensor) -> int:
        self.parts.append(x.reshape(-1).to(torch.float64))
        return len(self.parts) - 1


class TorchInstruments:
    def __init__(self, chosen, *, cos_sample: int = ref.DEFAULT_COS_SAMPLE, block: int = ref.DEFAULT_BLOCK,
                 warmup: int = ref.DEFAULT_WARMUP, budget_bytes: int = 1 << 30,
                 alpha_every: int = ref.ALPHA_EVERY, alpha_max: int = ref.ALPHA_MAX_ELEMENTS):
        self.chosen = frozenset(chosen)
        self.cos_sample = int(cos_sample)
        self.block, self.warmup = int(block), int(warmup)
        self.budget_bytes = int(budget_bytes)
        self._v: dict[str, torch.Tensor] = {}
        self._vd: dict[str, torch.Tensor] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._init_norm: dict[str, float] = {}
        self._init_bytes: dict[torch.device, int] = {}
        self._idx: dict[str, tuple[torch.Tensor | None, torch.device]] = {}
        self._xs_prev: dict[str, np.ndarray] = {}
        self._d_prev: dict[str, np.ndarray] = {}
        self._grads: dict[str, torch.Tensor] = {}  # sampled gradients of the coming snapshot
        self._gunits: dict[str, torch.Tensor] = {}  # per-unit gradient norms of the coming snapshot
        self.units = ref.UnitHealth()
        self.alpha = ref.AlphaSchedule(alpha_every, alpha_max)
        self.alpha_col = np.zeros((0, 1))
        self._scratch: dict[tuple, torch.Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.chosen)

    def clear(self) -> None:
        for d in (self._v, self._vd, self._init, self._idx, self._grads, self._scratch):
            d.clear()

    # ------------------------------------------------------------ helpers

    def _buf(self, x: torch.Tensor) -> torch.Tensor:
        """Scratch of x's shape, dtype and device (one flat buffer per dtype and device)."""
        key = (x.device, x.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < x.numel():
            buf = self._scratch[key] = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        return buf[: x.numel()].view(x.shape)

    def _coords(self, name: str, x: torch.Tensor) -> torch.Tensor:
        idx = self._idx.get(name)
        if idx is None or idx[1] != x.device:
            host = ref.sample_index(name, x.numel(), self.cos_sample)
            idx = self._idx[name] = (None if host is None else torch.as_tensor(host, device=x.device), x.device)
        flat = x.detach().reshape(-1)
        return flat if idx[0] is None else flat.index_select(0, idx[0])

    def _spectral(self, store: dict, name: str, w2: torch.Tensor):
        m, n = w2.shape
        p = max(1, min(self.block, m, n))
        v = store.get(name)
        if w2.dtype != torch.float32:
            w2 = w2.to(torch.float32)
        if v is None or tuple(v.shape) != (n, p) or v.device != w2.device:
            # warm-up: a block of vectors, then the top p Ritz vectors go on (as ref.Spectral)
            gen = ref.start_block(name, n, max(p, min(ref.WARMUP_BLOCK, m, n)))
            v, gram = _spectral_step(w2, torch.as_tensor(gen, dtype=torch.float32, device=w2.device),
                                     max(1, self.warmup))
            if v.shape[1] > p:
                if p == 1:
                    _w, y = torch.linalg.eigh((gram + gram.T) / 2)
                    v = v @ y[:, -1:]
                else:
                    v = v[:, :p]
        return _spectral_step(w2, v, 1)

    # ------------------------------------------------------------ per snapshot

    def take_grads(self, entries, rows, grads) -> None:
        """Sampled gradients (at the cosines' coordinates) for the next snapshot."""
        self._grads, self._gunits = {}, {}
        with torch.no_grad():
            for i, g in zip(rows, grads, strict=True):
                if not (g.is_floating_point() and g.numel() == entries[i].tensor.numel()):
                    continue
                name = entries[i].name
                if "cos" in self.chosen:
                    self._grads[name] = self._coords(name, g).to(torch.float64)
                mn = ref.matrix_shape(tuple(g.shape))
                if "units" in self.chosen and mn is not None:
                    # float32 norms of 16/32-bit rows; float64 ones cannot be narrowed by vector_norm
                    self._gunits[name] = torch.linalg.vector_norm(g.reshape(mn), dim=1, dtype=_norm_dtype(g))

    @torch.no_grad()
    def start(self, entries, xs, prevs, optimizer=None) -> _Pending:
        """Start every instrument on the device; prevs[i]: the exact previous values or None.

        Call before the fused kernel moves x into its previous copy."""
        pend = _Pending(len(entries))
        grads, self._grads = self._grads, {}
        gunits, self._gunits = self._gunits, {}
        for i, (e, x) in enumerate(zip(entries, xs, strict=True)):
            if not x.is_floating_point() or x.numel() == 0:
                continue
            mn = ref.matrix_shape(tuple(x.shape))
            if "sigma" in self.chosen and mn is not None:
                w2 = x.reshape(mn)
                pend.v_new[i], gram = self._spectral(self._v, e.name, w2)
                pend.gram[i] = pend.add(gram)
                prev = prevs[i] if prevs is not None else None
                if prev is not None and prev.shape == x.shape:
                    d2 = torch.sub(x, prev, out=self._buf(x)).reshape(mn)
                    pend.vd_new[i], gram_d = self._spectral(self._vd, e.name, d2)
                    pend.gram_d[i] = pend.add(gram_d)
            if "alpha" in self.chosen and mn is not None and self.alpha.due(e.info, tuple(x.shape)):
                pend.alpha[i] = pend.add(torch.linalg.svdvals(x.reshape(mn).to(torch.float32)))
            if "units" in self.chosen and mn is not None:
                pend.units[i] = pend.add(torch.linalg.vector_norm(x.reshape(mn), dim=1, dtype=_norm_dtype(x)))
                if e.name in gunits:
                    pend.gunits[i] = pend.add(gunits[e.name])
            if "dist_init" in self.chosen:
                x0 = self._init.get(e.name)
                if x0 is None or x0.shape != x.shape or x0.device != x.device:
                    size = x.numel() * x.element_size()
                    used = self._init_bytes.get(x.device, 0)
                    if used + size <= self.budget_bytes:
                        self._init[e.name] = x.detach().clone()
                        self._init_bytes[x.device] = used + size
                        pend.fresh_init.add(i)
                else:
                    pend.dist[i] = pend.add(torch.linalg.vector_norm(torch.sub(x, x0, out=self._buf(x))))
            if "cos" in self.chosen:
                pend.xs[i] = pend.add(self._coords(e.name, x))
                g = grads.get(e.name)
                if g is not None:
                    pend.gs[i] = len(pend.parts)
                    pend.parts.append(g)
        if "optim" in self.chosen and optimizer is not None:
            self._optim_start(pend, entries, optimizer)
        return pend

    def _optim_start(self, pend: _Pending, entries, optimizer) -> None:
        groups = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                groups[id(p)] = group
        want: dict[tuple, list[torch.Tensor]] = {}
        for i, e in enumerate(entries):
            if not e.is_param:
                continue
            state = optimizer.state.get(e.tensor) or {}
            group = groups.get(id(e.tensor))
            if group is None:
                continue
            m = state.get("exp_avg")
            if m is None:
                m = state.get("momentum_buffer")
            v = state.get("exp_avg_sq")
            if m is None and v is None and ("betas" in group or group.get("momentum")):
                continue  # the moments start at the first step
            step = state.get("step", 0)
            step = float(step.item() if torch.is_tensor(step) else step)
            betas = group.get("betas", (0.9, 0.999))
            lr = group.get("lr", math.nan)
            lr = float(lr.item() if torch.is_tensor(lr) else lr)
            mi, vi = _queue(want, m), _queue(want, v)
            n = e.tensor.numel()
            pend.optim[i] = (mi, vi, lr, step, float(betas[1]), float(group.get("eps", 1e-8)), n)
        # one foreach norm per device and dtype (a kernel launch per list, not per tensor)
        at = {key: pend.add(torch.stack(torch._foreach_norm(ts))) for key, ts in want.items()}
        pend.optim = {i: (None if mi is None else (at[mi[:2]], mi[2]), None if vi is None else (at[vi[:2]], vi[2]),
                          *rest) for i, (mi, vi, *rest) in pend.optim.items()}

    def finish(self, pend: _Pending, host: list[np.ndarray], entries, fro_norms: np.ndarray,
               optimizer=None) -> tuple[np.ndarray, np.ndarray, Block | None]:
        """(weights columns [T, 3], delta columns [T, 3], optim block or None) from
        the host parts (in pend.parts order); commits the iteration state."""
        t = pend.t
        w = np.full((t, len(WEIGHT_INSTRUMENTS)), np.nan)
        d = np.full((t, len(DELTA_INSTRUMENTS)), np.nan)
        for i, k in pend.gram.items():
            sigma = ref.ritz_sigma(host[k].reshape(int(math.isqrt(host[k].size)), -1))
            w[i, 0] = sigma
            self._commit(self._v, entries[i].name, pend.v_new[i], sigma)
        w[:, 1] = ref.stable_rank(fro_norms, w[:, 0])
        for i, k in pend.gram_d.items():
            sd = ref.ritz_sigma(host[k].reshape(int(math.isqrt(host[k].size)), -1))
            self._commit(self._vd, entries[i].name + "/delta", pend.vd_new[i], sd, key=entries[i].name)
            d[i, 2] = ref.ratio(sd, w[i, 0])
        for i in pend.fresh_init:
            name = entries[i].name
            if math.isfinite(fro_norms[i]):
                self._init_norm[name] = float(fro_norms[i])
                w[i, 2] = 0.0
            else:  # initial values with NaN: take them again at the next snapshot
                x0 = self._init.pop(name)
                self._init_bytes[x0.device] -= x0.numel() * x0.element_size()
        for i, k in pend.dist.items():
            n0 = self._init_norm.get(entries[i].name)
            if n0 is not None:
                w[i, 2] = ref.ratio(float(host[k][0]), n0)
        for i, k in pend.xs.items():
            name = entries[i].name
            xs = host[k]
            prev = self._xs_prev.get(name)
            if prev is not None and prev.shape == xs.shape:
                delta = xs - prev
                dp = self._d_prev.get(name)
                if dp is not None:
                    d[i, 0] = ref.cosine(delta, dp)
                if i in pend.gs:
                    d[i, 1] = ref.cosine(delta, host[pend.gs[i]])
                self._d_prev[name] = delta
            self._xs_prev[name] = xs.copy()
        optim = None
        if pend.optim:
            rows = np.full((t, len(OPTIM_STATS)), np.nan)
            for i, (mi, vi, lr, step, beta2, eps, n) in pend.optim.items():
                m_norm = math.nan if mi is None else float(host[mi[0]][mi[1]])
                v_norm = math.nan if vi is None else float(host[vi[0]][vi[1]])
                bad = 0
                if not (math.isfinite(m_norm) or mi is None) or not (math.isfinite(v_norm) or vi is None):
                    m_norm, v_norm, bad = self._masked_optim(optimizer, entries[i].tensor)
                rows[i, 0], rows[i, 1], rows[i, 3] = m_norm, v_norm, bad
                rows[i, 2] = ref.adam_eff_lr(lr, v_norm, n, step, beta2, eps) if vi is not None else lr
            optim = Block(OPTIM_STATS, rows, None)
        self.alpha_col = np.full((t, 1), np.nan)
        for i, k in pend.alpha.items():
            self.alpha_col[i, 0] = ref.powerlaw_alpha(host[k] ** 2)
        self.unit_norms = ({i: host[k] for i, k in pend.units.items()}, {i: host[k] for i, k in pend.gunits.items()})
        return w, d, optim

    @staticmethod
    def _commit(store: dict, name: str, v: torch.Tensor, sigma: float, key: str | None = None) -> None:
        """Keep the iteration's vectors for the next snapshot. A NaN matrix leaves them as they
        were; a zero one (a frozen tensor's update) would leave zero vectors that stay zero:
        a fresh random block instead, iterated once from the next snapshot on (no warm-up)."""
        key = name if key is None else key
        if sigma > 0:
            store[key] = v
        elif sigma == 0:
            store[key] = torch.as_tensor(ref.start_block(name, v.shape[0], v.shape[1]), dtype=v.dtype,
                                         device=v.device)

    @staticmethod
    def _masked_optim(optimizer, param) -> tuple[float, float, int]:
        """Norms over the finite elements and the non-finite count (the rare path)."""
        state = optimizer.state.get(param, {}) if optimizer is not None else {}
        out, bad = [], 0
        for key in (("exp_avg", "momentum_buffer"), ("exp_avg_sq",)):
            t = next((state[k] for k in key if state.get(k) is not None), None)
            if t is None:
                out.append(math.nan)
                continue
            fin = torch.isfinite(t)
            bad += int((~fin).sum())
            out.append(float(torch.linalg.vector_norm(torch.where(fin, t, torch.zeros_like(t)).double())))
        return out[0], out[1], bad


def _queue(want: dict, t: torch.Tensor | None):
    """Queue t for its (device, dtype) list's foreach norm: (device, dtype, position) or None."""
    if t is None:
        return None
    group = want.setdefault((t.device, t.dtype), [])
    group.append(t.detach())
    return (t.device, t.dtype, len(group) - 1)


def first_nonfinite(t: torch.Tensor | None) -> int | None:
    """Flat index of the first NaN/Inf element of a tensor (a sync; the rare path)."""
    if t is None or not t.is_floating_point():
        return None
    bad = torch.nonzero(~torch.isfinite(t.detach().reshape(-1)))
    return int(bad[0, 0]) if bad.numel() else None


def _norm_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for the row norms of 16/32-bit tensors, float64 for float64 ones (vector_norm cannot narrow)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32
