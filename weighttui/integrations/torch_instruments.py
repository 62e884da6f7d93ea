"""Instruments of the torch path (docs/instruments.md), computed with torch ops on
the tensors' own device; what they need on the host (a few numbers and the
sampled coordinates per tensor) joins the snapshot's one device-to-host copy.

The definitions, and the float64 reference the tests hold these to, are
weighttui.record.instruments'. Per tensor this keeps: the spectral iteration's
subspace (n x block float32, and one for the update), the initial values (a
copy, within `budget_bytes` per device) and the cosines' coordinates, previous
sampled values and previous sampled update (host float64, cos_sample each).

Tensors whose statistics the fused CPU kernel computes (RowRouter.takes) get the
instruments that read every element computed in the kernel's own two passes
(kernel.Extras: distance from the initial copy, per-unit norms, optimizer state
norms, one power-iteration step of W and of the update, the sampled
coordinates), so that memory is read once; torch ops do the rest and every
tensor the kernel hands back (NaN/Inf).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weighttui.integrations import torch_native
from weighttui.log.schema import DELTA_INSTRUMENTS, OPTIM_STATS, WEIGHT_INSTRUMENTS
from weighttui.record import instruments as ref
from weighttui.record import kernel
from weighttui.record.stats import Block


def _spectral_step(w2: torch.Tensor, v: torch.Tensor, iters: int):
    """Block power iteration (two passes over w2 each): (next V, B B^T) with
    Q = orth(W V), B = Q^T W; B B^T's largest eigenvalue is sigma_max^2 (Ritz).
    One vector: u = W v / |W v|, b = u^T W (two matrix-vector products).

    The products are taken as V^T W^T (p x m) and Q^T W (p x n), with V kept as the transpose of
    the contiguous B: MKL computes these wide forms 1.3-3x faster than the tall W V (n x p), and
    the QR reads V^T W^T as W V in column-major order without a copy."""
    b = None
    for _ in range(iters):
        if v.shape[1] == 1:  # torch's matrix-vector paths; a QR of one column is a normalisation
            y = torch.mv(w2, v[:, 0].contiguous())
            b = (y / torch.linalg.vector_norm(y).clamp_min(1e-30) @ w2)[None, :]  # W v = 0: b = 0
        else:
            q, _ = torch.linalg.qr((v.mT.contiguous() @ w2.mT).mT)
            b = q.mT @ w2
        v = b.mT  # (n x p), the transpose of the contiguous B
    assert b is not None
    return v, b @ b.mT


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _like(a: np.ndarray, ref: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.array(a, order="C")).to(device=ref.device, dtype=ref.dtype)


def _lanczos(w2: torch.Tensor, v: torch.Tensor, steps: int, z: torch.Tensor | None = None):
    """sigma_max of w2 by ref.lanczos from the kept vectors v (n x p): (the top p Ritz vectors, sigma, a
    float on the host already: lanczos read what it decided from). CPU tensors go through numpy views
    (no copy): its calls cost a few microseconds against torch's tens, which is most of the time on the
    small matrices this path takes. z: W^T W v where the caller has it, with v orthonormal (the steps go on
    from there)."""
    if w2.device.type == "cpu":
        vn = v.detach().numpy()

        def apply_np(q: np.ndarray) -> np.ndarray:  # torch's products (its threads), numpy views both ways
            return ((torch.from_numpy(np.ascontiguousarray(q.T)) @ w2.mT) @ w2).numpy().T

        sigma, _bound, v_new, _ = ref.lanczos(apply_np, vn, None if z is None else z.detach().numpy(), steps=steps,
                                              orthonormal=z is not None)
        v_out = torch.from_numpy(np.ascontiguousarray(v_new, dtype=vn.dtype))
    else:
        def apply(q):
            if q.shape[1] == 1:
                return (torch.mv(w2, q[:, 0].contiguous()) @ w2)[:, None]
            return ((q.mT.contiguous() @ w2.mT) @ w2).mT  # the wide layout (see _spectral_step)

        sigma, _bound, v_new, _ = ref.lanczos(apply, v, steps=steps, host=_host, like=_like)
        v_out = v_new.contiguous()
    return v_out, sigma


class _Pending:
    """What one snapshot started on the device, decoded by finish() from the host copy."""

    def __init__(self, t: int):
        self.parts: list[torch.Tensor] = []
        # the torch ops' spectral steps: (part index of k B B^T, [(row, of the update?)] * k, next V [k, n, p])
        self.grams: list[tuple] = []
        self.sigmas: dict[tuple[int, bool], tuple] = {}  # the Lanczos estimates: (row, False) -> (sigma, next V)
        self.small: list[tuple] = []  # (row, name, W) of the CPU float32 matrices checked together: _small_sigmas
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
        self.extras: dict[int, kernel.Extras] = {}  # row -> what the fused kernel computes in its passes
        self.g_host: dict[int, np.ndarray] = {}  # row -> sampled gradient already on the host (kernel)
        self.gunits_host: dict[int, np.ndarray] = {}  # row -> per-unit gradient norms on the host (kernel)
        # row -> (has m, has v, lr, step, beta2, eps, n): optimizer state norms from the kernel's extras
        self.optim_fused: dict[int, tuple] = {}
        self.optimizer = None
        self.grad_samples: dict = {}  # name -> sampled gradient (device tensor or host array)
        self.grad_units: dict = {}  # name -> per-unit gradient norms (device tensor or host array)
        self.t = t

    def add(self, x: torch.Tensor) -> int:
        self.parts.append(x.reshape(-1).to(torch.float64))
        return len(self.parts) - 1


def _svdvals_or_nan(m: torch.Tensor) -> torch.Tensor:
    """The singular values of m, NaN where m holds a NaN/Inf (svdvals raises on those, and a diverged
    run must keep its snapshot: no alpha, as on the numpy path). No host sync: decided on the device."""
    finite = torch.isfinite(m).all()
    sv = torch.linalg.svdvals(torch.where(finite, m, torch.zeros_like(m)))
    return torch.where(finite, sv, torch.full_like(sv, float("nan")))


class TorchInstruments:
    def __init__(self, chosen, settings: ref.Settings = ref.DEFAULTS, *, budget_bytes: int = 1 << 30):
        self.chosen = frozenset(chosen)
        self.settings = settings
        self.budget_bytes = int(budget_bytes)
        # the spectral iteration's vectors (n x p) of W and of the update: torch tensors, or the kernel's
        # float64 host arrays (n x 1) where it iterates (handed to it again as they are)
        self._v: dict[str, torch.Tensor | np.ndarray] = {}
        self._vd: dict[str, torch.Tensor | np.ndarray] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._init_norm: dict[str, float] = {}
        self._init_bytes: dict[torch.device, int] = {}
        self._idx: dict[str, tuple[torch.Tensor | None, torch.device]] = {}
        self.cosines = ref.UpdateCosines()  # keyed by name
        self._grads: dict[str, torch.Tensor] = {}  # sampled gradients of the coming snapshot
        self._gunits: dict[str, torch.Tensor] = {}  # per-unit gradient norms of the coming snapshot
        self.units = ref.UnitHealth()
        self.alpha = settings.alpha_schedule()
        self.alpha_col = np.zeros((0, 1))
        self._scratch: dict[tuple, torch.Tensor] = {}
        self._hidx: dict[tuple[str, int], np.ndarray] = {}  # host coordinates of the kernel's gather
        self._flats: dict[int, tuple] = {}  # id(tensor) -> (tensor, data_ptr, its kernel view): see _flat
        self._states: dict[int, tuple] = {}  # id(param) -> (param, m, v, their data_ptrs, kernel views): _states_fused
        self._gpending: list = []  # gradients given to the kernel with extras (take_grads -> grads_done)
        self._gplan: tuple | None = None  # (entries, router, rows, plan): see _grad_plan
        self._splan: tuple | None = None  # (entries, router, plan): see _start_plan

    def __bool__(self) -> bool:
        return bool(self.chosen)

    def clear(self) -> None:
        for d in (self._v, self._vd, self._init, self._idx, self._grads, self._scratch, self._hidx, self._flats,
                  self._states):
            d.clear()
        self._gplan = self._splan = None

    # ------------------------------------------------------------ helpers

    def _buf(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Scratch of x's shape and device, in x's dtype or `dtype` (one flat buffer per dtype and device)."""
        key = (x.device, dtype or x.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < x.numel():
            buf = self._scratch[key] = torch.empty(x.numel(), dtype=key[1], device=x.device)
        return buf[: x.numel()].view(x.shape)

    def _difference(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x - x0 in scratch memory, in float32 for 16-bit tensors: their difference in their own dtype
        rounds to 8 (bfloat16) or 11 (float16) bits, and dist_init came out 1e-3 off."""
        if x.dtype in (torch.float32, torch.float64):
            return torch.sub(x, x0, out=self._buf(x))
        return self._buf(x, torch.float32).copy_(x).sub_(x0)  # (widened exactly, then subtracted in float32)

    def _coords(self, name: str, x: torch.Tensor) -> torch.Tensor:
        idx = self._idx.get(name)
        if idx is None or idx[1] != x.device:
            host = ref.sample_index(name, x.numel(), self.settings.cos_sample)
            idx = self._idx[name] = (None if host is None else torch.as_tensor(host, device=x.device), x.device)
        flat = x.detach().reshape(-1)
        return flat if idx[0] is None else flat.index_select(0, idx[0])

    def _spectral(self, pend: _Pending, i: int, name: str, a: torch.Tensor, b: torch.Tensor | None) -> None:
        """One iteration on a (b None: W) or on a - b (the update), warm-started from the kept vectors."""
        store = self._v if b is None else self._vd
        m, n = a.shape
        p = self.settings.vectors(m, n)
        w2 = a if b is None else torch.sub(a, b, out=self._buf(a))
        if w2.dtype != torch.float32:
            w2 = w2.to(torch.float32)
        v = store.get(name)
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if v is None or tuple(v.shape) != (n, p) or v.device != w2.device:
            v = self._warm(name, w2, p)
        # W's estimate goes on until its bound says SIGMA_TOL; the update's keeps one step (as in the kernel's passes)
        if b is None and self.settings.sigma_steps:  # sigma on the host already: no B B^T to copy and decompose
            v_new, sigma = _lanczos(w2, v.to(torch.float32), self.settings.sigma_steps)
            pend.sigmas[(i, False)] = (sigma, v_new)
            return
        v_new, gram = _spectral_step(w2, v.to(torch.float32), 1)
        pend.grams.append((pend.add(gram), [(i, b is not None)], v_new[None]))

    def _batched(self, name: str, x: torch.Tensor, mn, p: int) -> bool:
        """Whether x's sigma_max check goes with the other small matrices' (_small_sigmas): a float32 CPU
        matrix with its kept p vectors (torch float32, n x p), Lanczos steps allowed."""
        v = self._v.get(name)
        return (p > 1 and self.settings.sigma_steps > 0 and x.dtype == torch.float32 and x.device.type == "cpu"
                and isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.device.type == "cpu"
                and tuple(v.shape) == (mn[1], p))

    def _small_sigmas(self, pend: _Pending) -> None:
        """The start of lanczos() for every queued matrix at once: per matrix only the products (torch,
        V^T W^T W and one Gram matrix of [V Z]^T in float64), then the p x p work of all of them in a few
        batched numpy calls: Rayleigh-Ritz of W^T W on span(V) as the generalised problem H y = lam G y
        (G = V^T V: no orthogonalisation of V), the top Ritz pair's residual norm from the same Gram
        matrix, lanczos_bound. Where the bound is above SIGMA_TOL (or anything is not finite), that
        matrix goes through _lanczos as before. On the ResNet-50 shapes: 19 matrices, some 30 calls
        each before."""
        by_p: dict[int, list] = {}
        for i, name, w2 in pend.small:
            v = self._v[name]
            assert isinstance(v, torch.Tensor)  # (_batched)
            vt = v.mT.contiguous()  # p x n (a view when v is the transpose of a contiguous block: no copy)
            zt = (vt @ w2.mT) @ w2  # (W^T W V)^T: the wide layout (see _spectral_step)
            both = torch.cat((vt, zt)).double()
            by_p.setdefault(vt.shape[0], []).append((i, w2, vt, zt, both @ both.mT))
        for p, got in by_p.items():
            m = np.stack([g[4].numpy() for g in got])  # [k, 2p, 2p]: V^T V, V^T Z; Z^T V, Z^T Z
            g, h, zz = m[:, :p, :p], m[:, :p, p:], m[:, p:, p:]
            h = (h + h.transpose(0, 2, 1)) / 2
            ok = np.isfinite(m).all(axis=(1, 2))
            lam = np.full((len(got), p), np.nan)
            c = np.zeros((len(got), p, p))
            if ok.any():
                try:
                    li = np.linalg.inv(np.linalg.cholesky(g[ok]))  # G = L L^T; y = L^-T s
                except np.linalg.LinAlgError:  # a rank-deficient V: each through _lanczos
                    ok[:] = False
                else:
                    lam[ok], s = np.linalg.eigh(li @ h[ok] @ li.transpose(0, 2, 1))
                    c[ok] = li.transpose(0, 2, 1) @ s  # V c: the Ritz vectors, unit (c^T G c = I)
            top = np.maximum(lam[:, -1], 0.0)
            y = c[:, :, -1]
            # |Z y - top V y|^2 = y^T Z^T Z y - 2 top y^T V^T Z y + top^2 y^T V^T V y
            rr = (np.einsum("ka,kab,kb->k", y, zz, y) - 2 * top * np.einsum("ka,kab,kb->k", y, h, y)
                  + top * top * np.einsum("ka,kab,kb->k", y, g, y))
            for j, (i, w2, vt, zt, _m) in enumerate(got):
                if not ok[j]:  # from the start
                    v_new, sigma = _lanczos(w2, vt.mT, self.settings.sigma_steps)
                    pend.sigmas[(i, False)] = (sigma, v_new)
                    continue
                cj = torch.from_numpy(np.ascontiguousarray(c[j][:, ::-1].T, dtype=np.float32))
                if ref.lanczos_bound(lam[j], math.sqrt(max(float(rr[j]), 0.0))) <= ref.SIGMA_TOL:
                    pend.sigmas[(i, False)] = (math.sqrt(top[j]), (cj @ vt).mT)  # the top p Ritz vectors
                else:  # Lanczos steps from the Ritz basis V c (orthonormal) and W^T W V c
                    v_new, sigma = _lanczos(w2, (cj @ vt).mT, self.settings.sigma_steps, (cj @ zt).mT)
                    pend.sigmas[(i, False)] = (sigma, v_new)

    def _warm(self, name: str, w2: torch.Tensor, p: int) -> torch.Tensor:
        """The first subspace of a tensor (n x p float32): a block of vectors iterated `warmup` times
        from a Gaussian block drawn from its name, then the top p Ritz vectors (as ref.Spectral)."""
        m, n = w2.shape
        if w2.dtype != torch.float32:
            w2 = w2.to(torch.float32)
        gen = ref.start_block(name, n, max(p, min(ref.WARMUP_BLOCK, m, n)))
        v, gram = _spectral_step(w2, torch.as_tensor(gen, dtype=torch.float32, device=w2.device),
                                 max(1, self.settings.warmup))
        if v.shape[1] > p:
            if p == 1 and bool(torch.isfinite(gram).all()):  # (eigh raises on NaN: a tensor first seen with NaN)
                _w, y = torch.linalg.eigh((gram + gram.T) / 2)
                v = v @ y[:, -1:]
            else:
                v = v[:, :p]
        return v

    def _fused_vector(self, store: dict, name: str, n: int, w2, warm_name: str | None = None) -> np.ndarray:
        """The kernel's iteration vector (float64 [n]) of w2 (m x n): the one kept, else a warm-up's
        on w2 (a function giving the matrix: the update's is computed only then)."""
        v = store.get(name)
        if isinstance(v, np.ndarray) and v.shape == (n, 1):  # the kernel's own, as it left it
            return v.reshape(-1)
        m2 = w2() if callable(w2) else w2
        if v is None or tuple(v.shape) != (n, 1) or v.device != m2.device:
            v = self._warm(name if warm_name is None else warm_name, m2, 1)
        return v.reshape(-1).to(torch.float64).contiguous().numpy()

    def _flat(self, t: torch.Tensor) -> np.ndarray:
        """torch_native.flat(t), kept for tensors that stay (initial copies, optimizer state: updated in place)."""
        got = self._flats.get(id(t))
        if got is not None and got[0] is t and got[1] == t.data_ptr():
            return got[2]
        view = torch_native.flat(t)
        if len(self._flats) > 4 * (len(self._init) + len(self._v)) + 1024:
            self._flats.clear()
        self._flats[id(t)] = (t, t.data_ptr(), view)
        return view

    def _host_idx(self, name: str, size: int) -> np.ndarray:
        """The cosines' coordinates of a tensor as the kernel gathers them (every element when small)."""
        key = (name, size)
        idx = self._hidx.get(key)
        if idx is None:
            idx = ref.sample_index(name, size, self.settings.cos_sample)
            idx = self._hidx[key] = np.arange(size, dtype=np.int64) if idx is None else idx
        return idx

    # ------------------------------------------------------------ per snapshot

    def take_grads(self, entries, rows, grads, router=None) -> list | None:
        """Sampled gradients (at the cosines' coordinates) and per-unit gradient norms for the
        next snapshot. With the router whose kernel computes the gradients' rows: returns the
        kernel.Extras to give router.rows(grads, extras=...) (None: none), then call grads_done()."""
        self._grads, self._gunits, self._gpending = {}, {}, []
        fuse = router is not None and torch_native.has_extras()
        plan = self._grad_plan(entries, rows, grads, router if fuse else None)
        extras: list | None = [None] * len(grads) if fuse else None
        with torch.no_grad():
            for k, name, size, dtype, cos, units, ex in plan:
                g = grads[k]
                if g.dtype != dtype or g.numel() != size:
                    continue
                if ex is not None and extras is not None:
                    ex.w_done = False  # (kept from snapshot to snapshot: a row the kernel skips is not done)
                    extras[k] = ex
                    self._gpending.append((name, g, ex, cos, units))
                else:
                    self._grads_torch(name, g, cos, units)
        return extras if extras is not None and self._gpending else None

    def _grad_plan(self, entries, rows, grads, router) -> list:
        """What take_grads does per gradient: (position, name, size, dtype, cos, units, the kernel.Extras
        when the router's kernel takes it), built when the tensors or the rows with a gradient change,
        else kept (the Extras too: their inputs are the same, the kernel writes fresh outputs). A
        gradient the kernel does not take after all (not contiguous) is handed back to torch ops."""
        got = self._gplan
        if got is not None and got[0] is entries and got[1] is router and got[2] == rows:
            return got[3]
        plan = []
        for k, (i, g) in enumerate(zip(rows, grads, strict=True)):
            size = entries[i].tensor.numel()
            if not (g.is_floating_point() and g.numel() == size):
                continue
            name = entries[i].name
            mn = ref.matrix_shape(tuple(g.shape))
            cos, units = "cos" in self.chosen, "units" in self.chosen and mn is not None
            if not (cos or units):
                continue
            ex = None
            if router is not None and router.takes(g):
                ex = kernel.Extras(rows=mn[0] if units and mn else 0, units=units,
                                   idx=self._host_idx(name, size) if cos else None)
            plan.append((k, name, size, g.dtype, cos, units, ex))
        self._gplan = (entries, router, list(rows), plan)
        return plan

    def _grads_torch(self, name: str, g: torch.Tensor, cos: bool, units: bool) -> None:
        if cos:
            self._grads[name] = self._coords(name, g).to(torch.float64)
        mn = ref.matrix_shape(tuple(g.shape))
        if units and mn is not None:
            self._gunits[name] = _row_norms(g.reshape(mn))

    @torch.no_grad()
    def grads_done(self) -> None:
        """After the kernel ran on the gradients: its results, torch ops for those it handed back."""
        for name, g, ex, cos, units in self._gpending:
            if ex.w_done:
                if cos:
                    self._grads[name] = ex.gathered
                if units:
                    self._gunits[name] = ex.unit_norms
            else:
                self._grads_torch(name, g, cos, units)
        self._gpending = []

    @torch.no_grad()
    def start(self, entries, xs, prevs, optimizer=None, router=None) -> _Pending:
        """Start every instrument on the device; prevs[i]: the exact previous values or None.

        Call before the fused kernel moves x into its previous copy. With the router
        whose kernel computes the rows, the tensors it takes get their instruments in
        its passes: give pend.extras to router.rows() and call after_kernel() then."""
        pend = _Pending(len(entries))
        pend.grad_samples, self._grads = self._grads, {}
        pend.grad_units, self._gunits = self._gunits, {}
        fuse = router is not None and torch_native.has_extras()
        plan, fresh = self._start_plan(entries, xs, router if fuse else None)
        dist, init = "dist_init" in self.chosen, self._init
        for i, (e, x, (mn, takes)) in enumerate(zip(entries, xs, plan, strict=True)):
            if mn is False:  # not a float tensor, or empty
                continue
            prev = prevs[i] if prevs is not None else None
            if prev is not None and prev.shape != x.shape:
                prev = None
            if "alpha" in self.chosen and mn is not None and self.alpha.due(e.info, mn):
                pend.alpha[i] = pend.add(_svdvals_or_nan(x.reshape(mn).to(torch.float32)))
            if dist and (fresh or e.name not in init):  # (same plan: same shapes and devices as checked)
                self._take_init(pend, i, e.name, x)
            if takes:
                pair = "sigma" in self.chosen and prev is not None and torch_native.takes_pair(x, prev)
                pend.extras[i] = self._extras(pend, i, e.name, x, prev, mn, pair)
                continue
            self._sigma_torch(pend, i, e.name, x, prev, mn, weights=True, delta=True, batch=True)
            self._rest_torch(pend, i, e.name, x, mn)
        if pend.small:
            self._small_sigmas(pend)
        if "optim" in self.chosen and optimizer is not None:
            pend.optimizer = optimizer
            self._optim_start(pend, entries, optimizer)
        for i, ex in list(pend.extras.items()):
            if ex.x0 is None and not ex.rows and ex.idx is None and not ex.states:
                del pend.extras[i]  # nothing for the kernel to do: no extras (whole-tensor passes)
        return pend

    def _start_plan(self, entries, xs, router) -> tuple[list, bool]:
        """Per tensor (its matrix shape, None below 2-D, False where start() skips it; whether the
        router's kernel takes it), and whether the plan is new: kept while the tensors are the same
        (the entries list the TensorPlan keeps until a tensor, shape, dtype or device changes). A
        tensor the kernel does not take after all is handed back to torch ops (after_kernel)."""
        got = self._splan
        if got is not None and got[0] is entries and got[1] is router:
            return got[2], False
        plan = [(False if not x.is_floating_point() or x.numel() == 0 else ref.matrix_shape(tuple(x.shape)),
                 router is not None and router.takes(x)) for x in xs]
        self._splan = (entries, router, plan)
        return plan, True

    def _take_init(self, pend: _Pending, i: int, name: str, x: torch.Tensor) -> None:
        """The initial copy of x for dist_init, the first time (within the budget)."""
        x0 = self._init.get(name)
        if x0 is None or x0.shape != x.shape or x0.device != x.device:
            size = x.numel() * x.element_size()
            used = self._init_bytes.get(x.device, 0)
            if used + size <= self.budget_bytes:
                self._init[name] = x.detach().clone()
                self._init_bytes[x.device] = used + size
                pend.fresh_init.add(i)

    def _extras(self, pend: _Pending, i: int, name: str, x: torch.Tensor, prev, mn, pair: bool) -> kernel.Extras:
        """What the kernel computes for x in its passes; the rest with torch ops now."""
        ex = kernel.Extras()
        if "sigma" in self.chosen and mn is not None:
            p = self.settings.vectors(*mn)
            w2 = x.reshape(mn)
            if p == 1:  # one vector: the kernel's two passes are the iteration's two products
                ex.rows, ex.v = mn[0], self._fused_vector(self._v, name, mn[1], w2)
            else:
                self._sigma_torch(pend, i, name, x, None, mn, weights=True, delta=False, batch=True)
            if prev is not None:
                if p == 1 and pair:  # warm-up on the update, once
                    update = lambda: torch.sub(x, prev, out=self._buf(x)).reshape(mn)
                    ex.rows, ex.vd = mn[0], self._fused_vector(self._vd, name, mn[1], update, name + "/delta")
                else:
                    self._sigma_torch(pend, i, name, x, prev, mn, weights=False, delta=True)
        if "units" in self.chosen and mn is not None:
            ex.rows, ex.units = mn[0], True
            self._grad_units(pend, i, name)
        if "dist_init" in self.chosen and i not in pend.fresh_init:
            x0 = self._init.get(name)
            if x0 is not None and x0.dtype == x.dtype and x0.shape == x.shape and x0.is_contiguous():
                ex.x0 = self._flat(x0)
            else:  # W0 in another dtype (the model cast since): torch ops, which take either
                self._rest_torch(pend, i, name, x, mn, units=False, cos=False)
        if "cos" in self.chosen:
            ex.idx = self._host_idx(name, x.numel())
            self._grad_sample(pend, i, name)
        return ex

    @staticmethod
    def _grad_sample(pend: _Pending, i: int, name: str) -> None:
        """Row i's sampled gradient into the snapshot (a device part or a host array), once."""
        g = pend.grad_samples.get(name)
        if i in pend.gs or i in pend.g_host or g is None:
            return
        if isinstance(g, np.ndarray):
            pend.g_host[i] = g
        else:
            pend.gs[i] = len(pend.parts)
            pend.parts.append(g)

    @staticmethod
    def _grad_units(pend: _Pending, i: int, name: str) -> None:
        """Row i's per-unit gradient norms into the snapshot, once."""
        g = pend.grad_units.get(name)
        if i in pend.gunits or i in pend.gunits_host or g is None:
            return
        if isinstance(g, np.ndarray):
            pend.gunits_host[i] = g
        else:
            pend.gunits[i] = pend.add(g)

    @torch.no_grad()
    def after_kernel(self, pend: _Pending, entries, xs, prevs) -> None:
        """After router.rows(): torch ops for the instruments of the tensors the kernel handed back
        (their values and previous copies untouched: NaN/Inf, a range too narrow to bin)."""
        for i, ex in pend.extras.items():
            e, x = entries[i], xs[i]
            mn = ref.matrix_shape(tuple(x.shape))
            prev = prevs[i] if prevs is not None else None
            if not ex.w_done:
                if ex.v is not None:
                    self._sigma_torch(pend, i, e.name, x, None, mn, weights=True, delta=False)
                self._rest_torch(pend, i, e.name, x, mn, units=ex.units, dist=ex.x0 is not None,
                                 cos=ex.idx is not None)
                if i in pend.optim_fused:
                    self._optim_torch(pend, i, e.tensor)
            if ex.vd is not None and not ex.d_done:
                self._sigma_torch(pend, i, e.name, x, prev, mn, weights=False, delta=True)
            if "sigma" in self.chosen and mn is not None:
                self._refine(ex, x, mn)

    def _refine(self, ex: kernel.Extras, x: torch.Tensor, mn) -> None:
        """The Lanczos steps (ref.lanczos, torch products) after the kernel's one step on W (W^T W v =
        |W v| b from its two passes) while its bound is above SIGMA_TOL; b becomes sigma times the top
        Ritz vector, which finish() reads as the kernel's output. (Not of the update: the kernel's
        pass has already made the previous copy x.)"""
        v, b, steps = ex.v, ex.b, self.settings.sigma_steps
        if not steps or v is None or b is None or not ex.w_done:
            return
        # the start's bound from dot products (z = y b, y = |W v|): most snapshots stop here, where
        # lanczos() would take no step and leave the kernel's b
        y = float(ex.out[1])
        vb = float(v @ b)
        if not ref.warm_bound(float(v @ v), y * vb, y * y * float(b @ b)) > ref.SIGMA_TOL:
            return
        w2 = x.reshape(mn)
        if w2.dtype != torch.float32:
            w2 = w2.to(torch.float32)

        def apply(q: np.ndarray) -> np.ndarray:  # host float64 vectors, torch float32 products
            y = torch.mv(w2, torch.from_numpy(q[:, 0].astype(np.float32)))
            return (y @ w2).double().numpy()[:, None]

        sigma, _bound, v_new, taken = ref.lanczos(apply, v[:, None], (b * y)[:, None],
                                                  steps=steps)
        if taken and sigma > 0:  # else the kernel's b: |b| is above the start vector's Rayleigh quotient
            b[:] = v_new[:, 0] * sigma

    def _sigma_torch(self, pend: _Pending, i: int, name: str, x, prev, mn, *, weights: bool, delta: bool,
                     batch: bool = False) -> None:
        """sigma_max of x (weights) and of x - prev (delta) with torch ops; batch: W's check may be queued
        for _small_sigmas (called in start(), after every tensor's)."""
        if "sigma" not in self.chosen or mn is None:
            return
        w2 = x.reshape(mn)
        if weights:
            if batch and self._batched(name, x, mn, self.settings.vectors(*mn)):
                pend.small.append((i, name, w2))
            else:
                self._spectral(pend, i, name, w2, None)
        if delta and prev is not None and prev.shape == x.shape:
            self._spectral(pend, i, name, w2, prev.reshape(mn))

    def _rest_torch(self, pend: _Pending, i: int, name: str, x, mn, *, units: bool = True, dist: bool = True,
                    cos: bool = True) -> None:
        """Per-unit norms, dist_init and the sampled values of x with torch ops."""
        if units and "units" in self.chosen and mn is not None:
            pend.units[i] = pend.add(_row_norms(x.reshape(mn)))
            self._grad_units(pend, i, name)
        if dist and "dist_init" in self.chosen and i not in pend.fresh_init:
            x0 = self._init.get(name)
            if x0 is not None and x0.shape == x.shape and x0.device == x.device:
                pend.dist[i] = pend.add(torch.linalg.vector_norm(self._difference(x, x0), dtype=_norm_dtype(x)))
        if cos and "cos" in self.chosen:
            pend.xs[i] = pend.add(self._coords(name, x))
            self._grad_sample(pend, i, name)

    def _optim_start(self, pend: _Pending, entries, optimizer) -> None:
        want: dict[tuple, list[torch.Tensor]] = {}
        states = optim_states(optimizer, [e.tensor if e.is_param else None for e in entries])
        for i, (e, got) in enumerate(zip(entries, states, strict=True)):
            if got is None:
                continue
            m, v, hyper = got
            rest = (*hyper, e.tensor.numel())
            ex = pend.extras.get(i)
            views = self._states_fused(e.tensor, m, v) if ex is not None else None
            if ex is not None and views is not None:  # read in the kernel's first pass, beside x's values
                ex.states = views
                pend.optim_fused[i] = (m is not None, v is not None, *rest)
                continue
            pend.optim[i] = (_queue(want, m), _queue(want, v), *rest)
        # one foreach norm per device and dtype (a kernel launch per list, not per tensor)
        # (float32 norms of 16-bit states: a bfloat16 norm keeps 8 bits, a float16 one overflows above 65504)
        at = {key: pend.add(torch.stack(torch._foreach_norm(ts, 2, dtype=_norm_dtype(ts[0]))))
              for key, ts in want.items()}
        pend.optim = {i: (None if mi is None else (at[mi[:2]], mi[2]), None if vi is None else (at[vi[:2]], vi[2]),
                          *rest) for i, (mi, vi, *rest) in pend.optim.items()}

    def _states_fused(self, x: torch.Tensor, m, v) -> tuple | None:
        """The kernel's views of x's optimizer state (flat() of m and v, None where absent) when it can read
        them beside x (its dtype and size), else None; kept per parameter while its state tensors (and
        their memory) stay the same: the optimizers update them in place."""
        ptrs = (0 if m is None else m.data_ptr(), 0 if v is None else v.data_ptr())
        got = self._states.get(id(x))
        if got is not None and got[0] is x and got[1] is m and got[2] is v and got[3] == ptrs:
            return got[4]
        ok = all(t is None or (torch_native.takes(t) and t.dtype == x.dtype and t.numel() == x.numel())
                 for t in (m, v))
        views = tuple(None if t is None else torch_native.flat(t) for t in (m, v)) if ok else None
        self._states[id(x)] = (x, m, v, ptrs, views)
        return views

    def _optim_torch(self, pend: _Pending, i: int, param) -> None:
        """Row i's optimizer state norms with torch ops (the kernel handed its tensor back)."""
        has_m, has_v, *rest = pend.optim_fused.pop(i)
        state: dict = pend.optimizer.state.get(param, {}) if pend.optimizer is not None else {}
        at = []
        for key, has in ((("exp_avg", "momentum_buffer"), has_m), (("exp_avg_sq",), has_v)):
            t = next((state[k] for k in key if state.get(k) is not None), None) if has else None
            at.append(None if t is None else (pend.add(torch.linalg.vector_norm(t.detach(), dtype=_norm_dtype(t))
                                                        .reshape(1)), 0))
        pend.optim[i] = (at[0], at[1], *rest)

    def finish(self, pend: _Pending, host: list[np.ndarray], entries, fro_norms: np.ndarray,
               optimizer=None) -> tuple[np.ndarray, np.ndarray, Block | None]:
        """(weights columns [T, 3], delta columns [T, 3], optim block or None) from
        the host parts (in pend.parts order); commits the iteration state."""
        t = pend.t
        w = np.full((t, len(WEIGHT_INSTRUMENTS)), np.nan)
        d = np.full((t, len(DELTA_INSTRUMENTS)), np.nan)
        # the torch ops' iterations: every B B^T of one size in one eigvalsh
        by_p: dict[int, list] = {}
        for k, rows, v_new in pend.grams:
            p = v_new.shape[-1]
            by_p.setdefault(p, []).append((host[k].reshape(len(rows), p, p), rows, v_new))
        sigmas = dict(pend.sigmas)  # (row, of the update?) -> (sigma, next V)
        for got in by_p.values():
            flat = ref.ritz_sigmas(np.concatenate([g for g, _, _ in got]))
            j = 0
            for _g, rows, v_new in got:
                for row_d, v in zip(rows, v_new, strict=True):
                    sigmas[row_d] = (float(flat[j]), v)
                    j += 1
        for (i, of_d), (sigma, v) in sigmas.items():
            if not of_d:
                w[i, 0] = sigma
                self._commit(self._v, entries[i].name, v, sigma)
        done = {i: ex for i, ex in pend.extras.items() if ex.w_done}
        for i, ex in done.items():
            b = ex.b
            if b is not None:  # one step: b = W^T u, |u| = 1; |b| is the Ritz value
                w[i, 0] = sigma = float(np.linalg.norm(b))
                self._commit(self._v, entries[i].name, b.reshape(-1, 1), sigma)
        w[:, 1] = ref.stable_rank(fro_norms, w[:, 0])
        for (i, of_d), (sd, v) in sigmas.items():
            if of_d:
                self._commit(self._vd, entries[i].name + "/delta", v, sd, key=entries[i].name)
                d[i, 2] = ref.ratio(sd, w[i, 0])
        for i, ex in pend.extras.items():
            bd = ex.bd
            if bd is not None and ex.d_done:
                sd = float(np.linalg.norm(bd))
                self._commit(self._vd, entries[i].name + "/delta", bd.reshape(-1, 1), sd,
                             key=entries[i].name)
                d[i, 2] = ref.ratio(sd, w[i, 0])
        for i in pend.fresh_init:
            name = entries[i].name
            if math.isfinite(fro_norms[i]):
                self._init_norm[name] = float(fro_norms[i])
                w[i, 2] = 0.0
            else:  # initial values with NaN: take them again at the next snapshot
                x0 = self._init.pop(name)
                self._init_bytes[x0.device] -= x0.numel() * x0.element_size()
        dists = {i: float(host[k][0]) for i, k in pend.dist.items()}
        dists.update({i: ex.dist for i, ex in done.items() if ex.x0 is not None})
        for i, dist in dists.items():
            n0 = self._init_norm.get(entries[i].name)
            if n0 is not None:
                w[i, 2] = ref.ratio(dist, n0)
        # the sampled values, kept until the next snapshot: a copy of the host copy's part (the
        # snapshot's whole host buffer would stay); the kernel's own output buffer, fresh per call, as it is
        samples = {i: host[k].copy() for i, k in pend.xs.items()}
        samples.update({i: ex.gathered for i, ex in done.items() if ex.gathered is not None})
        if samples:
            grads = {i: host[k] for i, k in pend.gs.items()} | pend.g_host
            for i, xs in samples.items():
                d[i, 0], d[i, 1] = self.cosines.update(entries[i].name, xs, grads.get(i))
        optim = None
        if pend.optim or pend.optim_fused:
            rows = np.full((t, len(OPTIM_STATS)), np.nan)
            norms = {i: (math.nan if mi is None else float(host[mi[0]][mi[1]]),
                         math.nan if vi is None else float(host[vi[0]][vi[1]]), mi is None, vi is None, rest)
                     for i, (mi, vi, *rest) in pend.optim.items()}
            norms.update({i: (*pend.extras[i].state_norms, not has_m, not has_v, rest)
                          for i, (has_m, has_v, *rest) in pend.optim_fused.items()})
            for i, (m_norm, v_norm, no_m, no_v, (lr, step, beta2, eps, n)) in norms.items():
                if no_m:
                    m_norm = math.nan
                if no_v:
                    v_norm = math.nan
                bad = 0
                if not (math.isfinite(m_norm) or no_m) or not (math.isfinite(v_norm) or no_v):
                    m_norm, v_norm, bad = self._masked_optim(optimizer, entries[i].tensor)
                rows[i, 0], rows[i, 1], rows[i, 3] = m_norm, v_norm, bad
                rows[i, 2] = ref.adam_eff_lr(lr, v_norm, n, step, beta2, eps) if not no_v else lr
            optim = Block(OPTIM_STATS, rows, None)
        self.alpha_col = np.full((t, 1), np.nan)
        for i, k in pend.alpha.items():
            if np.all(np.isfinite(host[k])):  # (NaN: the matrix held a NaN/Inf, _svdvals_or_nan)
                self.alpha_col[i, 0] = ref.powerlaw_alpha(host[k] ** 2)
        wu = {i: host[k] for i, k in pend.units.items()}
        wu.update({i: ex.unit_norms for i, ex in done.items() if ex.unit_norms is not None})
        gu = {i: host[k] for i, k in pend.gunits.items()}
        gu.update(pend.gunits_host)
        self.unit_norms = (dict(sorted(wu.items())), gu)
        return w, d, optim

    @staticmethod
    def _commit(store: dict, name: str, v: torch.Tensor | np.ndarray, sigma: float, key: str | None = None) -> None:
        """Keep the iteration's vectors for the next snapshot. A NaN matrix leaves them as they
        were; a zero one (a frozen tensor's update) would leave zero vectors that stay zero:
        a fresh random block instead, iterated once from the next snapshot on (no warm-up)."""
        key = name if key is None else key
        if sigma > 0:
            store[key] = v
        elif sigma == 0:
            fresh = ref.start_block(name, v.shape[0], v.shape[1])
            store[key] = fresh if isinstance(v, np.ndarray) else torch.as_tensor(fresh, dtype=v.dtype,
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


def param_groups(optimizer) -> dict[int, dict]:
    """id(parameter) -> its param group."""
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def optim_states(optimizer, params) -> list:
    """Per parameter (None: not one), (m, v, (lr, step, beta2, eps)) under torch's Adam/AdamW (exp_avg,
    exp_avg_sq; max_exp_avg_sq with amsgrad), RMSprop (square_avg, momentum_buffer), Adagrad (sum) or
    SGD momentum (momentum_buffer) state, m or v None where the optimizer keeps none;
    None for a tensor the optimizer does not hold, or before its moments exist (they start at the
    first step). One reading of the state for the whole and the sharded instruments.

    Each parameter group's hyperparameters are read once; the steps torch keeps as tensors (one per
    parameter) are read with float() on the CPU (0.15 us each, against 0.6 us for .item() and more
    for a stack) and, on a device (capturable=True), in one host copy per device instead of an
    .item() (a sync) each."""
    groups = param_groups(optimizer)
    hyper: dict[int, tuple[float, float, float]] = {}
    out: list = []
    tensor_steps: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for param in params:
        group = None if param is None else groups.get(id(param))
        if group is None:
            out.append(None)
            continue
        state = optimizer.state.get(param) or {}
        m = state.get("exp_avg")
        if m is None:
            m = state.get("momentum_buffer")
        v = state.get("exp_avg_sq")
        if v is not None and group.get("amsgrad") and state.get("max_exp_avg_sq") is not None:
            v = state["max_exp_avg_sq"]  # what AMSGrad's step divides by
        if v is None:  # RMSprop's average of g^2, Adagrad's sum: no bias correction (beta2 0 below)
            v = state.get("square_avg")
            if v is None:
                v = state.get("sum")
        if m is None and v is None and ("betas" in group or group.get("momentum")):
            out.append(None)
            continue
        h = hyper.get(id(group))
        if h is None:
            lr = group.get("lr", math.nan)
            # beta2 0 where the group has no betas: 1 - 0^t = 1, Adam's formula without its bias correction
            h = hyper[id(group)] = (float(lr.item() if torch.is_tensor(lr) else lr),
                                    float(group["betas"][1]) if "betas" in group else 0.0,
                                    float(group.get("eps", 1e-8)))
        step = state.get("step", 0)
        if torch.is_tensor(step):
            if step.numel() != 1:  # (no step torch keeps)
                step = float(step.reshape(-1)[0]) if step.numel() else 0.0
            elif step.is_cpu:  # float() of a CPU scalar: a fraction of .item()'s cost, less than a stack
                step = float(step)
            else:  # on a device (capturable=True): one copy for all of them below
                tensor_steps.setdefault((step.device, step.dtype, step.shape), []).append((len(out), step))
                step = math.nan
        out.append((m, v, (h[0], float(step), h[1], h[2])))
    for ts in tensor_steps.values():
        values = torch.stack([t for _, t in ts]).reshape(-1).tolist()
        for (k, _), value in zip(ts, values, strict=True):
            m, v, (lr, _nan, beta2, eps) = out[k]
            out[k] = (m, v, (lr, float(value), beta2, eps))
    return out


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


def _row_norms(m: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row of `m` (float32 of 16/32-bit rows, float64 of float64 ones), each row scaled by
    its largest |value| first: in float32 the squares of a gradient of 1e-25 per element underflow to 0,
    a row read as exactly zero (a false dead unit), and those of 1e20 overflow."""
    dt = _norm_dtype(m)
    if m.shape[1] == 0:  # (amax of nothing raises)
        return torch.linalg.vector_norm(m, dim=1, dtype=dt)
    top = m.abs().amax(dim=1, keepdim=True).to(dt)
    scale = torch.where(torch.isfinite(top) & (top > 0), top, torch.ones_like(top))
    return torch.linalg.vector_norm(m / scale, dim=1, dtype=dt) * scale.squeeze(1)


def _norm_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for the row norms of 16/32-bit tensors, float64 for float64 ones (vector_norm cannot narrow)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32
