"""Instruments across the shards of a sharded (FSDP2 `fully_shard`, DTensor) run
(docs/instruments.md, "Paths"): every rank computes its shard's part with torch
ops on its device and the parts are summed over the mesh's process group (a few
all-reduces per snapshot, batched over every tensor); rank 0 writes.

The rules are record/instruments.py's (the tests hold the values to its float64
references over the whole tensors). Per instrument:
- dist_init: each rank keeps a copy of its shard's initial values; the squared
  distances of the shards are summed.
- units: each unit's (row's) squared norm: a rank holding whole rows (Shard(0))
  puts them at the rows' global offset, a rank holding part of every row (Shard
  on another dimension) adds its partial sums; summed over ranks.
- cos: the cosines' coordinates, each held by one rank, gathered into a vector of
  zeros and summed; the cosines themselves on the host as everywhere.
- optim: the state's shards' squared norms (over the finite elements) and
  non-finite counts, summed.
- sigma (tensors sharded by rows, Shard(0), and tensors whole on a rank): the
  block iteration Q = orth(W V), B = Q^T W with orth from the summed Gram matrix
  Y^T Y of Y = W V (its eigenvectors: Q = Y U S^-1/2, the same subspace as a QR
  of the whole Y) and B summed over ranks; V is the same on every rank. A
  tensor sharded on another dimension gets NaN, said once.
- alpha: the matrix gathered (full_tensor, a collective) every alpha_every
  snapshots, up to alpha_max elements; its singular values on rank 0.
- nan_origin: when the summed counts show a non-finite value, every rank finds the
  first one in its shard and the smallest global flat index wins (MIN).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from weighttui.integrations import torch_dist
from weighttui.integrations.torch_instruments import optim_states
from weighttui.record import instruments as ref
from weighttui.record.raw_rows import _INF, _NAN
from weighttui.record.stats import Block

_BIG = float(2 ** 62)  # "no non-finite element on this rank" in the MIN reduction


class _Layout:
    """Where this rank's local tensor sits in the whole: mode "rows" (whole rows from global row
    `row0`), "cols" (part of every row), "none" (nothing: counted by another rank)."""

    __slots__ = ("mode", "row0", "shape", "lshape", "offset")

    def __init__(self, mode: str, row0: int, shape, lshape, offset):
        self.mode, self.row0, self.shape, self.lshape, self.offset = mode, row0, shape, lshape, offset


def layout(entry) -> _Layout:
    t = entry.tensor
    shape = tuple(int(s) for s in t.shape)
    if torch_dist.shardable(t):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        lshape, offset = compute_local_shape_and_global_offset(shape, t.device_mesh, t.placements)
        lshape, offset = tuple(int(s) for s in lshape), tuple(int(o) for o in offset)
        dim = t.placements[0].dim
        return _Layout("rows" if dim == 0 else "cols", offset[0] if shape else 0, shape, lshape, offset)
    # a plain tensor (rank 0 counts it; the others see an empty view) or a DTensor every rank
    # gathers whole: rank 0's copy is the one counted
    mine = torch_dist.rank() == 0
    return _Layout("rows" if mine else "none", 0, shape, shape if mine else (0,) * len(shape), (0,) * len(shape))


def _local(lay: _Layout, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1)[:0] if lay.mode == "none" else x


def _sq(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    return (x * x).sum()


class _Spectral:
    """ref.Spectral's iteration over a matrix sharded by rows (V replicated on every rank)."""

    __slots__ = ("name", "settings", "v", "group")

    def __init__(self, name: str, settings: ref.Settings, group):
        self.name, self.settings, self.group = name, settings, group
        self.v: torch.Tensor | None = None

    def first_v(self, w2: torch.Tensor, m: int, n: int) -> torch.Tensor:
        """The subspace to iterate from: the kept one, or a warm-up's (collectives of its own)."""
        p = self.settings.vectors(m, n)
        if self.v is not None and tuple(self.v.shape) == (n, p) and self.v.device == w2.device:
            return self.v
        v = torch.as_tensor(ref.start_block(self.name, n, max(p, min(ref.WARMUP_BLOCK, m, n))),
                            dtype=torch.float32, device=w2.device)
        gram = None
        for _ in range(max(1, self.settings.warmup)):
            y = w2 @ v
            g = self._sum(y.to(torch.float64).T @ y.to(torch.float64))
            b = self._sum(_coeffs_apply(y, g).T @ w2)
            v, gram = b.T.contiguous(), b.to(torch.float64) @ b.to(torch.float64).T
        assert gram is not None
        if v.shape[1] > p:
            v = ref.top_vector(v, gram.to(torch.float32), _TorchXp) if p == 1 else v[:, :p].contiguous()
        return v

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def refine(self, w2: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ref.lanczos from the snapshot's step (v = B^T, replicated) over the sharded rows: each step's
        W^T W q is the sum over the ranks of W_r^T (W_r q), one all-reduce; every rank takes the same
        host decisions from the same replicated numbers. (top p Ritz vectors, p x p matrix whose
        largest eigenvalue is sigma^2, float64)."""
        def apply(q: torch.Tensor) -> torch.Tensor:
            z = ((q.mT.contiguous() @ w2.mT) @ w2).mT.contiguous().to(torch.float64)
            return self._sum(z).to(q.dtype)

        sigma, _bound, v_new, _ = ref.lanczos(apply, v, steps=self.settings.sigma_steps,
                                              host=lambda t: t.detach().cpu().numpy(),
                                              like=lambda a, r: torch.from_numpy(np.array(a, order="C")).to(
                                                  device=r.device, dtype=r.dtype))
        gram = torch.zeros((v.shape[1], v.shape[1]), dtype=torch.float64, device=v.device)
        gram[0, 0] = sigma * sigma
        return v_new.contiguous(), gram

    def commit(self, v: torch.Tensor, sigma: float) -> None:
        if sigma > 0:
            self.v = v
        elif sigma == 0:
            self.v = torch.as_tensor(ref.start_block(self.name, v.shape[0], v.shape[1]), dtype=v.dtype,
                                     device=v.device)


def _coeffs_apply(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Q = Y U S^-1/2 from the summed Gram matrix G = Y^T Y = U S U^T (float32 Q): orthonormal
    columns spanning Y's column space; directions below 1e-10 of the largest are dropped (zero)."""
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))  # NaN: the Ritz value says so
    s, u = torch.linalg.eigh((g + g.T) / 2)
    keep = s > s[-1].clamp_min(0) * 1e-10
    inv = torch.where(keep, s.clamp_min(1e-300).rsqrt(), torch.zeros_like(s))
    return (y.to(torch.float64) @ (u * inv)).to(torch.float32)


class _TorchXp:
    """What ref.top_vector needs of an array module, for torch tensors."""

    linalg = torch.linalg
    matmul = staticmethod(torch.matmul)

    @staticmethod
    def transpose(a):
        return a.T

    @staticmethod
    def astype(a, dtype):
        return a.to(dtype)


class _Pending:
    def __init__(self, t: int):
        self.t = t
        self.sums: list[torch.Tensor] = []  # float64 vectors summed over ranks in one all-reduce
        self.at: dict[tuple, int] = {}  # (what, row) -> index in sums
        self.spec: dict[int, tuple] = {}  # row -> (_Spectral, y, w2) before the Gram sum
        self.spec_d: dict[int, tuple] = {}
        self.host: list[torch.Tensor] = []  # to the host with the snapshot's copy
        self.hat: dict[tuple, int] = {}  # (what, row) -> index in host
        self.v_new: dict[tuple, torch.Tensor] = {}
        self.fresh: set[int] = set()
        self.optim: dict[int, tuple] = {}  # row -> (has m, has v, lr, step, beta2, eps, n)
        self.alpha: dict[int, int] = {}


class ShardInstruments:
    """The instruments of a sharded run; every rank calls the same methods in the same order."""

    def __init__(self, chosen, group, settings: ref.Settings = ref.DEFAULTS, *, reporter=None):
        self.chosen = frozenset(chosen)
        self.group = group
        self.settings = settings
        self.alpha = settings.alpha_schedule()
        self.units = ref.UnitHealth()
        self.reporter = reporter
        self._layouts: dict[str, tuple] = {}
        self._spec: dict[str, _Spectral] = {}
        self._spec_d: dict[str, _Spectral] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._init_norm: dict[str, float] = {}
        self._coords: dict[str, tuple] = {}
        self.cosines = ref.UpdateCosines()
        self._grad: dict | None = None  # take_grads' reduced parts: name -> (coords, unit sq sums)
        self._origin_done = False
        self.optim_bad = np.zeros(0)
        self.said: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.chosen)

    def clear(self) -> None:
        for d in (self._layouts, self._spec, self._spec_d, self._init, self._coords):
            d.clear()

    # ------------------------------------------------------------ helpers

    def _lay(self, e) -> _Layout:
        got = self._layouts.get(e.name)
        if got is None or got[0] is not e.tensor:
            got = self._layouts[e.name] = (e.tensor, layout(e))
        return got[1]

    def _gather(self, e, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        """The cosines' coordinates of x (float64 [k]): this rank's, zeros elsewhere (summed later)."""
        got = self._coords.get(e.name)
        numel = math.prod(lay.shape)
        if got is None or got[0] is not e.tensor:
            idx = ref.sample_index(e.name, numel, self.settings.cos_sample)
            idx = np.arange(numel, dtype=np.int64) if idx is None else idx
            if torch_dist.shardable(e.tensor):
                pos, loc = torch_dist.local_sample_positions(e.tensor, idx)
            elif lay.mode == "none":
                pos, loc = np.zeros(0, np.int64), np.zeros(0, np.int64)
            else:
                pos, loc = np.arange(idx.size), idx
            got = self._coords[e.name] = (e.tensor, idx.size, torch.as_tensor(pos, device=x.device),
                                          torch.as_tensor(loc, device=x.device))
        _t, k, pos, loc = got
        out = torch.zeros(k, dtype=torch.float64, device=x.device)
        if loc.numel():
            out[pos] = x.reshape(-1)[loc].to(torch.float64)
        return out

    def _unit_sq(self, lay: _Layout, x: torch.Tensor, mn) -> torch.Tensor:
        """Each unit's squared norm, this rank's part ([m] float64, zeros where another rank holds it)."""
        m, n = mn
        out = torch.zeros(m, dtype=torch.float64, device=x.device)
        if lay.mode == "none" or x.numel() == 0:
            return out
        if lay.mode == "rows":
            x2 = x.reshape(-1, n).to(torch.float64)
            out[lay.row0:lay.row0 + x2.shape[0]] = (x2 * x2).sum(dim=1)
        else:
            x2 = x.reshape(m, -1).to(torch.float64)
            out += (x2 * x2).sum(dim=1)
        return out

    def _reduce(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sum every part over the ranks in one all-reduce."""
        if not parts:
            return []
        sizes = [p.numel() for p in parts]
        flat = torch.cat([p.reshape(-1).to(torch.float64) for p in parts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        return list(torch.split(flat, sizes))

    def _once(self, key: str, message: str) -> None:
        """An instrument this path cannot record: said once, on stderr and in the log (rank 0)."""
        if key not in self.said:
            self.said.add(key)
            if self.reporter is not None and self.reporter.once(f"shard-instruments:{key}", f"weighttui: {message}"):
                self.reporter.record_event("instrument_unsupported", message, "warning")

    # ------------------------------------------------------------ per snapshot

    @torch.no_grad()
    def take_grads(self, entries, rows, grads) -> None:
        """The gradients' parts of the next snapshot (cosines' coordinates, per-unit norms), summed now."""
        keys, parts = [], []
        for i, g in zip(rows, grads, strict=True):
            e = entries[i]
            if not g.is_floating_point():
                continue
            lay = self._lay(e)
            g = _local(lay, g)
            mn = ref.matrix_shape(lay.shape)
            if "cos" in self.chosen:
                keys.append((e.name, "c"))
                parts.append(self._gather(e, lay, g))
            if "units" in self.chosen and mn is not None:
                keys.append((e.name, "u"))
                parts.append(self._unit_sq(lay, g, mn))
        self._grad = dict(zip(keys, self._reduce(parts), strict=True))

    @torch.no_grad()
    def start(self, entries, xs, prevs, optimizer=None) -> _Pending:
        """Every rank's part of every instrument, summed; the results wait in pend.host for
        the snapshot's one device-to-host copy."""
        pend = _Pending(len(entries))
        grad, self._grad = self._grad or {}, None
        ch = self.chosen
        keys: list[tuple] = []
        parts: list[torch.Tensor] = []

        def add(key, t):
            keys.append(key)
            parts.append(t)

        for i, (e, x) in enumerate(zip(entries, xs, strict=True)):
            if not x.is_floating_point():
                continue
            lay = self._lay(e)
            x = _local(lay, x)
            mn = ref.matrix_shape(lay.shape)
            if "dist_init" in ch:
                x0 = self._init.get(e.name)
                if x0 is None or x0.shape != x.shape or x0.device != x.device:
                    self._init[e.name] = x.detach().clone()
                    pend.fresh.add(i)
                else:
                    add(("dist", i), _sq(x - x0).reshape(1))
            if "units" in ch and mn is not None:
                add(("units", i), self._unit_sq(lay, x, mn))
                if (e.name, "u") in grad:
                    pend.hat[("gunits", i)] = len(pend.host)
                    pend.host.append(grad[(e.name, "u")])
            if "cos" in ch:
                add(("xs", i), self._gather(e, lay, x))
                if (e.name, "c") in grad:
                    pend.hat[("gs", i)] = len(pend.host)
                    pend.host.append(grad[(e.name, "c")])
            if "sigma" in ch and mn is not None:
                if lay.mode == "cols":
                    self._once("sigma_cols", f"sigma_max, stable_rank and sigma_ratio are not recorded for tensors "
                                f"sharded on a dimension other than their first ({e.name} and any others: NaN)")
                else:
                    self._sigma_start(pend, i, e.name, x, None if prevs is None else prevs[i], mn, add, lay)
            if "alpha" in ch and mn is not None and self.alpha.due(e.info, mn):
                w = torch_dist.full(e.tensor.detach())  # a collective: every rank, the same tensors
                if torch_dist.rank() == 0:
                    pend.alpha[i] = len(pend.host)
                    pend.host.append(torch.linalg.svdvals(w.reshape(mn).to(torch.float32)).to(torch.float64))
        if "optim" in ch and optimizer is not None:
            self._optim_start(pend, entries, optimizer, add)
        reduced = dict(zip(keys, self._reduce(parts), strict=True))
        # the spectral step's second sum: B = Q^T W over every tensor at once
        bkeys, bparts = [], []
        for store, tag in ((pend.spec, "w"), (pend.spec_d, "d")):
            for i, (_spec, y, w2) in store.items():
                q = _coeffs_apply(y, reduced.pop(("gram_" + tag, i)).reshape(y.shape[1], y.shape[1]))
                bkeys.append((tag, i))
                bparts.append((q.T @ w2).to(torch.float64))
        for (tag, i), b in zip(bkeys, self._reduce(bparts), strict=True):
            store = pend.spec if tag == "w" else pend.spec_d
            p = store[i][1].shape[1]
            b = b.reshape(p, -1)
            v_new, gram = b.T.to(torch.float32).contiguous(), b @ b.T
            if tag == "w" and self.settings.sigma_steps:  # W's estimate: Lanczos steps until its bound says 1e-4
                spec, _y, w2 = store[i]
                v_new, gram = spec.refine(w2, v_new)
            pend.v_new[(tag, i)] = v_new
            pend.hat[("gram_" + tag, i)] = len(pend.host)
            pend.host.append(gram)
        for key, t in reduced.items():
            pend.hat[key] = len(pend.host)
            pend.host.append(t)
        return pend

    def _sigma_start(self, pend: _Pending, i: int, name: str, x, prev, mn, add, lay: _Layout) -> None:
        m, n = mn
        prev = None if prev is None else _local(lay, prev)
        w2 = x.reshape(-1, n).to(torch.float32)
        spec = self._spec.get(name)
        if spec is None:
            spec = self._spec[name] = _Spectral(name, self.settings, self.group)
        y = w2 @ spec.first_v(w2, m, n)
        pend.spec[i] = (spec, y, w2)
        add(("gram_w", i), y.to(torch.float64).T @ y.to(torch.float64))
        if prev is not None and prev.shape == x.shape:
            d2 = (x - prev).reshape(-1, n).to(torch.float32)
            sd = self._spec_d.get(name)
            if sd is None:
                sd = self._spec_d[name] = _Spectral(name + "/delta", self.settings, self.group)
            yd = d2 @ sd.first_v(d2, m, n)
            pend.spec_d[i] = (sd, yd, d2)
            add(("gram_d", i), yd.to(torch.float64).T @ yd.to(torch.float64))

    def _optim_start(self, pend: _Pending, entries, optimizer, add) -> None:
        states = optim_states(optimizer, [e.tensor if e.is_param else None for e in entries])
        for i, (e, got) in enumerate(zip(entries, states, strict=True)):
            if got is None:
                continue
            m, v, hyper = got
            lay = self._lay(e)
            for key, s in (("m", m), ("v", v)):
                if s is not None:
                    s = _local(lay, torch_dist.local(s.detach()))
                    ok = torch.isfinite(s)
                    add((key, i), torch.stack([_sq(torch.where(ok, s, torch.zeros_like(s))),
                                               (~ok).sum().to(torch.float64)]))
            pend.optim[i] = (m is not None, v is not None, *hyper, math.prod(lay.shape))

    def finish(self, pend: _Pending, host: list[np.ndarray], entries, fro_norms: np.ndarray, *, write: bool):
        """Every rank: commits the iteration state from the host copy. write (rank 0): returns
        (weights columns [T, 3], delta columns [T, 3], alpha [T, 1], optim Block or None,
        per-unit weight norms {row: [m]}, gradient ones)."""
        t = pend.t

        def h(key):
            k = pend.hat.get(key)
            return None if k is None else host[k]

        w = np.full((t, len(ref.WEIGHT_INSTRUMENTS)), np.nan)
        d = np.full((t, len(ref.DELTA_INSTRUMENTS)), np.nan)
        for i, (spec, _y, _w2) in pend.spec.items():
            g = h(("gram_w", i))
            w[i, 0] = ref.ritz_sigma(g.reshape(int(math.isqrt(g.size)), -1))
            spec.commit(pend.v_new[("w", i)], w[i, 0])
        w[:, 1] = ref.stable_rank(fro_norms, w[:, 0])
        for i, (spec, _y, _w2) in pend.spec_d.items():
            g = h(("gram_d", i))
            sd = ref.ritz_sigma(g.reshape(int(math.isqrt(g.size)), -1))
            spec.commit(pend.v_new[("d", i)], sd)
            if not math.isnan(sd):
                d[i, 2] = ref.ratio(sd, w[i, 0])
        for i in pend.fresh:
            name = entries[i].name
            if math.isfinite(fro_norms[i]):
                self._init_norm[name] = float(fro_norms[i])
                w[i, 2] = 0.0
            else:  # initial values with NaN: taken again at the next snapshot (on every rank)
                self._init.pop(name, None)
        for i in range(t):
            sq = h(("dist", i))
            n0 = self._init_norm.get(entries[i].name)
            if sq is not None and n0 is not None:
                w[i, 2] = ref.ratio(math.sqrt(max(float(sq[0]), 0.0)), n0)
            xs = h(("xs", i))
            if xs is None:
                continue
            d[i, 0], d[i, 1] = self.cosines.update(entries[i].name, xs.copy(), h(("gs", i)))
        # every rank: the optimizer state's non-finite counts (origin() reads them)
        self.optim_bad = np.zeros(t)
        for i in pend.optim:
            self.optim_bad[i] = sum(float(v[1]) for v in (h(("m", i)), h(("v", i))) if v is not None)
        if not write:
            return None
        alpha = np.full((t, 1), np.nan)
        for i, k in pend.alpha.items():
            alpha[i, 0] = ref.powerlaw_alpha(host[k] ** 2)
        optim = None
        if pend.optim:
            from weighttui.record.device_instruments import optim_row

            rows = np.full((t, len(ref.OPTIM_STATS)), np.nan)
            for i, (_has_m, has_v, lr, step, beta2, eps, n) in pend.optim.items():
                mm, vv = h(("m", i)), h(("v", i))
                st: dict = {"lr": lr, "step": step, "beta2": beta2, "eps": eps}
                if has_v:
                    st["v"] = True
                m_norm = math.sqrt(mm[0]) if mm is not None else math.nan
                v_norm = math.sqrt(vv[0]) if vv is not None else math.nan
                bad = int((mm[1] if mm is not None else 0) + (vv[1] if vv is not None else 0))
                rows[i] = optim_row(m_norm, v_norm, bad, st, n)
            optim = Block(ref.OPTIM_STATS, rows, None)
        wu = {i: np.sqrt(np.maximum(host[k], 0)) for (what, i), k in pend.hat.items() if what == "units"}
        gu = {i: np.sqrt(np.maximum(host[k], 0)) for (what, i), k in pend.hat.items() if what == "gunits"}
        return w, d, alpha, optim, wu, gu

    # ------------------------------------------------------------ NaN origin

    @torch.no_grad()
    def origin(self, entries, xs, raw_w: np.ndarray, raw_g, grad_rows, optim_bad: np.ndarray | None,
               optimizer) -> tuple | None:
        """(kind, row, global flat index or None) of the first non-finite value, as find_origin
        orders them, the first time a snapshot holds one; every rank calls it (collectives)."""
        if self._origin_done or "nan_origin" not in self.chosen:
            return None
        bad: dict[str, np.ndarray] = {"grad": np.zeros(0, int), "optim": np.zeros(0, int)}
        if raw_g is not None:
            rows_g = np.asarray(grad_rows)
            bad["grad"] = rows_g[(raw_g[:, _NAN] + raw_g[:, _INF]) > 0]
        if optim_bad is not None:
            bad["optim"] = np.nonzero(optim_bad > 0)[0]
        bad["weights"] = np.nonzero((raw_w[:, _NAN] + raw_w[:, _INF]) > 0)[0]
        found = next(((kind, int(bad[kind][0])) for kind in ("grad", "optim", "weights") if bad[kind].size), None)
        if found is None:
            return None
        self._origin_done = True
        kind, row = found
        e = entries[row]
        lay = self._lay(e)
        if kind == "grad":
            cands = [e.local_grad()]
        elif kind == "optim":
            state = optimizer.state.get(e.tensor, {}) if optimizer is not None else {}
            cands = [state.get(k) for k in ("exp_avg", "momentum_buffer", "exp_avg_sq")]
            cands = [None if s is None else torch_dist.local(s.detach()) for s in cands]
        else:
            cands = [xs[row]]
        for c in cands:
            if c is None:
                continue
            at = self._global_first(lay, _local(lay, c))
            if at is not None:
                return kind, row, at
        return kind, row, None

    def _global_first(self, lay: _Layout, x: torch.Tensor) -> int | None:
        """The smallest global flat index of a non-finite element over the ranks (a MIN all-reduce)."""
        nz = torch.nonzero(~torch.isfinite(x.reshape(-1)))
        best = _BIG
        if nz.numel():
            local = int(nz[0, 0])
            coords = np.unravel_index(local, lay.lshape) if lay.lshape else ()
            best = float(np.ravel_multi_index(tuple(int(c) + o for c, o in zip(coords, lay.offset, strict=True)),
                                              lay.shape)) if lay.shape else 0.0
        v = torch.tensor([best], dtype=torch.float64, device=x.device)
        dist.all_reduce(v, op=dist.ReduceOp.MIN, group=self.group)
        return None if float(v[0]) >= _BIG else int(v[0])
