"""Instruments (docs/instruments.md): spectral norms, distance from initialisation,
update direction, optimizer state and where a NaN began, in numpy.

The float64 reference functions (`sigma_max_ref`, `cosine`, ...) define what
the columns of log/schema.py's WEIGHT_INSTRUMENTS, DELTA_INSTRUMENTS and
OPTIM_STATS mean; `Instruments` computes them for the numpy Recorder, keeping
per tensor only what the next snapshot needs (see `memory` in the docs).
The torch path (integrations/torch_instruments.py) is tested against these.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from weighttui.log.format import encode_array, encode_bf16_bits
from weighttui.log.schema import ALPHA_STATS as ALPHA_STATS  # re-exported for the writers
from weighttui.log.schema import DEAD_WINDOW as DEAD_WINDOW
from weighttui.log.schema import DELTA_INSTRUMENTS, OPTIM_STATS, WEIGHT_INSTRUMENTS
from weighttui.log.schema import EXPLODING_FACTOR as EXPLODING_FACTOR
from weighttui.log.schema import UNIT_GRAD_STATS as UNIT_GRAD_STATS
from weighttui.log.schema import UNIT_WEIGHT_STATS as UNIT_WEIGHT_STATS
from weighttui.record.numpy_path import is_float
from weighttui.record.stats import Block

DEFAULT_COS_SAMPLE = 4096  # coordinates per tensor kept for the update cosines
# vectors of the warm-started block iteration per snapshot (block=1: plain power iteration)
DEFAULT_BLOCK = 8
# ... for matrices up to this many elements; larger ones iterate one vector (plain power iteration),
# whose two matrix-vector products the fused CPU kernel computes in its own two passes over the
# tensor (docs/instruments.md: 8 vectors cost 8x the arithmetic, which dominates on big matrices)
BLOCK_MAX = 1 << 16
WARMUP_BLOCK = 8  # vectors of the block iteration the first time a tensor is seen
DEFAULT_WARMUP = 16  # its iterations (random init has no spectral gap: one vector would converge slowly)
# After a snapshot's first products, the estimate goes on as a Lanczos (Krylov) iteration on W^T W,
# warm-started from the kept vectors, until its own error estimate (lanczos_bound: the residual of
# the top Ritz pair and the gap to the second Ritz value) is under SIGMA_TOL relative, at most
# `sigma_steps` more steps per snapshot (two matrix-vector products each): docs/instruments.md,
# "Spectral norm". Unconverged work carries over in the kept top Ritz vectors.
SIGMA_TOL = 1e-4
RESIDUAL_FLOOR = 1e-6  # a residual below this relative to the top Ritz value is float32 rounding: stop
DEFAULT_SIGMA_STEPS = 12
ALL = ("sigma", "dist_init", "cos", "optim", "nan_origin", "units", "alpha")
# What instruments="default" records: the instruments whose cost is within the noise of a
# snapshot (docs/instruments.md: optimizer state, NaN origin, per-unit norms). The spectral
# estimate (+105 ms on the ResNet-50 shapes, about +120%), the cosines (+45 ms) and the
# distance from initialisation (+13 ms and a copy of the initial weights) are opt-in:
# instruments=True records all of them.
DEFAULT = ("optim", "nan_origin", "units")
ALPHA_EVERY = 10  # the power-law fit every this many snapshots of a tensor ...
ALPHA_MAX_ELEMENTS = 1 << 18  # ... for matrices up to this size (a full SVD: 512 x 512 takes ~30 ms here)


@dataclass(frozen=True)
class Settings:
    """The instruments' settings (docs/instruments.md, "Choosing"): their one home, defaults and checks,
    for every path (numpy Recorder, torch, device, sharded). Users give them as keys of an
    instruments={...} dict (parse_options)."""

    cos_sample: int = DEFAULT_COS_SAMPLE  # coordinates per tensor for the update cosines (0: every element)
    block: int = DEFAULT_BLOCK  # vectors of the spectral iteration of a matrix of at most block_max elements
    warmup: int = DEFAULT_WARMUP  # its iterations the first time a tensor is seen
    block_max: int = BLOCK_MAX  # bigger matrices iterate one vector (0: every matrix)
    alpha_every: int = ALPHA_EVERY  # snapshots of a tensor between alpha fits
    alpha_max: int = ALPHA_MAX_ELEMENTS  # the largest matrix fitted, in elements
    # Lanczos steps (2 matrix-vector products each) a snapshot may add to sigma_max's estimate of a matrix
    # until its error estimate is under SIGMA_TOL (0: the one warm-started step of before)
    sigma_steps: int = DEFAULT_SIGMA_STEPS

    def __post_init__(self) -> None:
        for f in fields(self):
            value, low = getattr(self, f.name), 0 if f.name in ("cos_sample", "block_max", "sigma_steps") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"instruments {f.name} must be an int >= {low}, got {value!r}")

    def vectors(self, m: int, n: int) -> int:
        """How many vectors the spectral iteration of an m x n matrix keeps (see vectors())."""
        return vectors(m, n, self.block, self.block_max)

    def alpha_schedule(self) -> AlphaSchedule:
        return AlphaSchedule(self.alpha_every, self.alpha_max)


DEFAULTS = Settings()
SETTINGS = tuple(f.name for f in fields(Settings))  # the settings' names, beside ALL's in an instruments dict


def matrix_shape(shape, units_last: bool = False) -> tuple[int, int] | None:
    """(rows, cols) of a weight seen as a matrix: (out, everything else), conv kernels
    included; None for 0-D/1-D tensors and empty ones.

    units_last: the output units are the last axis (Keras and Flax kernels: Dense (in, out),
    Conv2D (kh, kw, in, out); units_last_by_name): the matrix is (everything else, out), the
    transpose of the out-first one up to an order of its columns, so with the same singular
    values; its units are its columns (unit_norms)."""
    try:  # asked several times per tensor and snapshot on every path: remembered per shape
        return _matrix_shape(shape, units_last)
    except TypeError:  # an unhashable shape (a list)
        return _matrix_shape(tuple(shape), units_last)


@functools.lru_cache(maxsize=1 << 12)
def _matrix_shape(shape, units_last: bool) -> tuple[int, int] | None:
    if len(shape) < 2:
        return None
    if units_last:
        m, n = math.prod(int(s) for s in shape[:-1]), int(shape[-1])
    else:
        m, n = int(shape[0]), math.prod(int(s) for s in shape[1:])
    return (m, n) if m and n else None


# the last path component of a Keras or Flax variable whose output units are its last axis
_UNITS_LAST_NAMES = ("kernel", "recurrent_kernel", "pointwise_kernel")


def units_last_by_name(name: str) -> bool:
    """Whether a Keras or Flax variable keeps its output units on its last axis: their kernels
    (`dense/kernel`: (in, out); `conv2d/kernel`: (kh, kw, in, out); an LSTM's `recurrent_kernel`)
    do; embeddings ((vocab, dim): a unit per row, as in torch) and the rest do not. A depthwise
    kernel's last axis is its channel multiplier, not its output channels: it is left out-first."""
    return name.rsplit("/", 1)[-1] in _UNITS_LAST_NAMES


def never_units_last(name: str) -> bool:
    """PyTorch and the numpy Recorder's default: the output units are the first axis."""
    return False


# ------------------------------------------------------------ references (float64)


def sigma_max_ref(w) -> float:
    """The largest singular value of w as a matrix (exact, numpy.linalg.svd)."""
    mn = matrix_shape(np.shape(w))
    if mn is None:
        return math.nan
    return float(np.linalg.svd(np.asarray(w, dtype=np.float64).reshape(mn), compute_uv=False)[0])


def stable_rank(fro_norm, sigma):
    """||W||_F^2 / sigma_max^2 (NaN where sigma is 0 or unknown)."""
    fro_norm = np.asarray(fro_norm, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = fro_norm**2 / sigma**2
    return np.where(sigma > 0, out, np.nan)


def ratio(num: float, den: float) -> float:
    """num / den with the delta block's `ratio` convention: Inf if den is 0 and num is not."""
    if not (math.isfinite(num) and math.isfinite(den)):
        return math.nan
    if den > 0:
        return num / den
    return math.inf if num > 0 else 0.0


def dist_init_ref(x, x0) -> float:
    """||x - x0|| / ||x0||, float64."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    return ratio(float(np.linalg.norm(x - x0)), float(np.linalg.norm(x0)))


def cosine(a, b) -> float:
    """Cosine of two vectors in float64; NaN if either is zero or not finite."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return cosine_of_dots(float(np.dot(a, b)), float(np.dot(a, a)), float(np.dot(b, b)))


def cosine_of_dots(ab: float, aa: float, bb: float) -> float:
    """cosine()'s value from the dot products a.b, a.a and b.b (callers that keep a.a between calls)."""
    # sqrt(a . a) is what np.linalg.norm computes for a float64 vector, with less overhead per call
    na, nb = math.sqrt(aa), math.sqrt(bb)
    if not (na > 0 and nb > 0 and math.isfinite(na) and math.isfinite(nb)):
        return math.nan
    return min(1.0, max(-1.0, ab / (na * nb)))


class UpdateCosines:
    """cos_prev and cos_grad of each tensor from its sampled values, snapshot after snapshot: the one
    home of the rule for every path. Keeps per key the previous sampled values and the previous
    update with its squared norm; bare dot products per tensor (numpy's per-call overhead is the
    cost at 4096 coordinates, not the arithmetic)."""

    def __init__(self):
        self._xs: dict = {}
        self._d: dict = {}  # key -> (previous sampled update, its squared norm)

    def update(self, key, xs: np.ndarray, g: np.ndarray | None = None) -> tuple[float, float]:
        """(cos_prev, cos_grad) from this snapshot's sampled values xs (float64, 1-D; kept until the next
        call: a copy where the caller's buffer is reused) and sampled gradient g (or None); NaN until the
        values (cos_grad) and an update (cos_prev) before them are known."""
        cos_prev = cos_grad = math.nan
        prev = self._xs.get(key)
        if prev is not None and prev.size == xs.size:
            delta = xs - prev
            dd = float(np.dot(delta, delta))
            got = self._d.get(key)
            if got is not None and got[0].size == xs.size:
                cos_prev = cosine_of_dots(float(np.dot(delta, got[0])), dd, got[1])
            if g is not None and g.size == xs.size:
                g = g.reshape(-1)
                cos_grad = cosine_of_dots(float(np.dot(delta, g)), dd, float(np.dot(g, g)))
            self._d[key] = (delta, dd)
        self._xs[key] = xs
        return cos_prev, cos_grad


def sample_index(name: str, size: int, k: int) -> np.ndarray | None:
    """The fixed coordinates of a tensor that the update cosines are computed on:
    None (every element) when size <= k, else k sorted indices drawn once from
    the tensor's name (the same on every snapshot, rank and run)."""
    if k <= 0 or size <= k:
        return None
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 0x5EED)
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


def adam_eff_lr(lr: float, v_norm: float, size: int, step: float, beta2: float, eps: float) -> float:
    """The effective step size of Adam for an element whose second moment is the
    tensor's RMS one: lr / (sqrt(rms(v) / (1 - beta2^t)) + eps), rms(v) = ||v|| / sqrt(n)."""
    if size <= 0 or not step or not math.isfinite(v_norm):
        return math.nan
    bc2 = 1.0 - beta2 ** float(step)
    if bc2 <= 0:
        return math.nan
    return float(lr / (math.sqrt(v_norm / math.sqrt(size) / bc2) + eps))


# ------------------------------------------------------------ spectral norm


def _compute(arr: np.ndarray) -> np.ndarray:
    """The dtype the numpy path computes instruments in: float32 arrays stay float32 (BLAS at
    memory speed, no float64 copy of every tensor; results to ~1e-6 relative), others float64."""
    return arr if arr.dtype == np.float32 else arr.astype(np.float64)


def ritz_sigma(gram) -> float:
    """sigma_max estimate from B B^T, B = Q^T W (p x p): sqrt of its largest eigenvalue."""
    return float(ritz_sigmas(np.asarray(gram)[None])[0])


def ritz_sigmas(grams) -> np.ndarray:
    """ritz_sigma of a stack of B B^T [k, p, p] in one eigvalsh call (NaN where one is not finite)."""
    g = np.asarray(grams, dtype=np.float64)
    out = np.full(g.shape[0], np.nan)
    ok = np.isfinite(g).all(axis=(1, 2))
    if ok.any():
        h = g[ok]
        out[ok] = np.sqrt(np.maximum(np.linalg.eigvalsh((h + h.transpose(0, 2, 1)) / 2)[:, -1], 0.0))
    return out


def lanczos_bound(lam, rn: float) -> float:
    """The relative error estimate of sigma_max = sqrt(lam[-1]) (lam: the Ritz values of W^T W, ascending;
    rn: the residual norm |W^T W x - lam[-1] x| of the top Ritz vector x). Some eigenvalue of W^T W lies
    within rn of lam[-1] and, when the second Ritz value is close to its own, within rn^2 / gap
    (Kato-Temple); the Ritz value is from below, and sigma's relative error is half lambda's."""
    top = float(lam[-1])
    if not (top > 0 and math.isfinite(rn)):
        return 0.0 if top == 0 and rn == 0 else math.nan
    gap = top - float(lam[-2]) if len(lam) > 1 else top
    err = min(rn, rn * rn / gap) if gap > 0 else rn
    return err / top / 2


def warm_bound(vv: float, vz: float, zz: float) -> float:
    """lanczos_bound of one vector v and z = W^T W v from three dot products (v.v, v.z, z.z): what
    lanczos() computes before its first step when given z with p = 1, without its n-vectors (the
    fused kernel's matrices, whose warm start mostly meets the tolerance already). NaN where lanczos
    would stop at once (v zero or not finite)."""
    if not (vv > 0 and math.isfinite(vz) and math.isfinite(zz)):
        return math.nan
    top = max(vz / vv, 0.0)
    # |z/|v| - top v/|v||^2 = z.z/v.v - 2 top v.z/v.v + top^2
    rr = zz / vv - 2.0 * top * (vz / vv) + top * top
    return lanczos_bound([top], math.sqrt(max(rr, 0.0)))


def lanczos(apply, v, z=None, *, steps: int, tol: float = SIGMA_TOL, host=np.asarray, like=None,
            orthonormal: bool = False):
    """sigma_max of the matrix W behind apply (q -> W^T W q, q: n x k) by Rayleigh-Ritz on a Krylov space
    of W^T W started from the block v (n x p, the kept vectors): after the start, each step adds the
    residual of the top Ritz pair (the next Lanczos direction, re-orthogonalised) until lanczos_bound is
    under tol or `steps` were taken. z: apply(v) where the caller has it already (the fused kernel's
    passes), only with p = 1 unless orthonormal says v's columns are (then v and z start the basis as they
    are: a caller that made them so, torch_instruments._small_sigmas). host: an array -> numpy; like(a, ref):
    numpy a as ref's kind, dtype and device of array (default: numpy). The arrays need @, .T, slicing and
    assignment (numpy, torch).

    Returns (sigma, bound, the top p Ritz vectors (n x p, unit), steps taken); NaN sigma (and v back)
    where W is not finite. With p = 1 and no step taken, the vector returned is z / |z| (z = W^T W v, made
    anyway): one power step past v. A kept vector near a singular vector that is no longer the top one
    (the top two crossed) always looks converged, as its bound has no second Ritz value to take the gap
    from; the power step lets the new top direction grow in it (docs/instruments.md "Known limit")."""
    n, p = v.shape
    steps = max(0, min(steps, n - p))  # the basis cannot outgrow the space
    cast = (lambda a, ref: np.asarray(a, dtype=ref.dtype)) if like is None else like

    def norm(a) -> float:
        return float(np.sqrt(np.sum(np.square(np.asarray(host(a), dtype=np.float64)))))

    if z is not None and orthonormal:
        vk, zk = v, z
    elif z is not None and p == 1:
        nv = norm(v)
        if not nv > 0:
            return math.nan, math.nan, v, 0
        vk, zk = v / nv, z / nv
    else:
        vk = _orth(v, host, cast)
        zk = apply(vk)
    vb = zb = None  # the basis and its products, allocated at the first step (most calls take none)
    k = p
    while True:
        h = np.asarray(host(vk.T @ zk), dtype=np.float64)
        if not np.all(np.isfinite(h)):
            return math.nan, math.nan, v, k - p
        lam, s = np.linalg.eigh((h + h.T) / 2)
        top = max(float(lam[-1]), 0.0)
        sk = cast(s[:, -1:], vk)
        x = vk @ sk
        r = zk @ sk - x * top
        bound = lanczos_bound(lam, norm(r))
        if not bound > tol or k - p >= steps:
            if k == p == 1:  # no step: z / |z| to start from next time, not v (the docstring's power step)
                nz = norm(zk)
                if nz > 0:
                    return math.sqrt(top), bound, zk / nz, 0
            break
        q = r - vk @ (vk.T @ r)
        q = q - vk @ (vk.T @ q)  # twice: in float32 the basis stays orthogonal to ~1e-7
        nq = norm(q)
        if not nq > RESIDUAL_FLOOR * top:  # converged to the products' rounding
            break
        if vb is None or zb is None:
            vb, zb = _empty_like(v, n, p + steps), _empty_like(v, n, p + steps)
            vb[:, :p], zb[:, :p] = vk, zk
        vb[:, k:k + 1] = q / nq
        zb[:, k:k + 1] = apply(vb[:, k:k + 1])
        k += 1
        vk, zk = vb[:, :k], zb[:, :k]
    return math.sqrt(top), bound, vk @ cast(s[:, ::-1][:, :p].copy(), v), k - p


def lanczos_fixed(w2, v, steps: int, xp=np):
    """lanczos() without host reads, for the device paths (jax.numpy, the TF adapter): always `steps`
    steps (one more basis row each; the basis is kept as rows, V^T, since the adapters concatenate on
    axis 0). Returns (the top p Ritz vectors, n x p; their p x p Rayleigh matrix, whose eigenvalues are
    the top p Ritz values of W^T W): the caller's host copy of the small matrix gives sigma."""
    n, p = v.shape
    t = xp.transpose

    def apply(qt):  # rows q^T -> rows (W^T W q)^T
        return t(xp.matmul(t(w2), xp.matmul(w2, t(qt))))

    q, _ = xp.linalg.qr(v)
    vt = t(q)
    zt = apply(vt)
    for _ in range(max(0, min(steps, n - p))):  # the basis cannot outgrow the space
        h = xp.matmul(vt, t(zt))
        lam, s = xp.linalg.eigh((h + t(h)) / 2)
        s1 = t(s[:, -1:])
        r = xp.matmul(s1, zt) - lam[-1] * xp.matmul(s1, vt)
        for _ in range(2):  # re-orthogonalised twice (float32)
            r = r - xp.matmul(xp.matmul(r, t(vt)), vt)
        nr = xp.sqrt(xp.sum(r * r))
        ok = nr > RESIDUAL_FLOOR * lam[-1]  # else converged to the products' rounding: a zero row
        r = xp.where(ok, r / xp.where(ok, nr, nr * 0 + 1), r * 0)
        vt = xp.concatenate([vt, r])
        zt = xp.concatenate([zt, apply(r)])
    h = xp.matmul(vt, t(zt))
    h = (h + t(h)) / 2
    _lam, s = xp.linalg.eigh(h)
    top = s[:, -p:]  # ascending: the top p, largest last
    return t(xp.matmul(t(top), vt)), xp.matmul(xp.matmul(t(top), h), top)


def _empty_like(a, n: int, k: int):
    """An n x k buffer of a's kind, dtype and device (numpy or torch)."""
    new = getattr(a, "new_empty", None)
    return np.empty((n, k), dtype=a.dtype) if new is None else new((n, k))


def _orth(v, host, cast):
    """An orthonormal basis of v's columns (n x p): v L^-T from the Cholesky factor of the p x p Gram
    matrix (a small host read instead of a device QR); a rank-deficient v goes through numpy's QR."""
    g = np.asarray(host(v.T @ v), dtype=np.float64)
    try:
        li = np.linalg.inv(np.linalg.cholesky((g + g.T) / 2)).T
    except np.linalg.LinAlgError:
        q, _ = np.linalg.qr(np.asarray(host(v), dtype=np.float64))
        return cast(q, v)
    return v @ cast(li, v)


def vectors(m: int, n: int, block: int = DEFAULT_BLOCK, block_max: int = BLOCK_MAX) -> int:
    """How many vectors the spectral iteration of an m x n matrix keeps: `block` up to `block_max`
    elements, one above (never more than min(m, n))."""
    return max(1, min(block if m * n <= block_max else 1, m, n))


def start_block(name: str, n: int, p: int) -> np.ndarray:
    """The first subspace of a tensor: p Gaussian vectors drawn from its name."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.standard_normal((n, p))


def subspace_step(w2, v, xp=np):
    """One warm-started block power iteration (two passes over w2):
    Q = orth(W V), B = Q^T W; returns (next V = B^T, B B^T). `xp`: the array module the
    arrays belong to (numpy here; jax.numpy and a TF adapter on the device paths)."""
    q, _ = xp.linalg.qr(xp.matmul(w2, v))
    b = xp.matmul(xp.transpose(q), w2)
    return xp.transpose(b), xp.matmul(b, xp.transpose(b))


def top_vector(v, gram, xp=np):
    """The top Ritz vector (n x 1) of a block iteration's (V = B^T, B B^T)."""
    if xp is np:
        gram = np.asarray(gram, dtype=np.float64)
    g = (gram + xp.transpose(gram)) / 2
    _w, y = xp.linalg.eigh(g)
    return xp.matmul(v, xp.astype(y[:, -1:], v.dtype) if xp is not np else y[:, -1:])


class Spectral:
    """sigma_max of a sequence of matrices (one tensor's snapshots), each estimate
    one block iteration warm-started from the previous snapshot's subspace
    (settings: block, block_max, warmup).

    `step` (no host sync: device arrays stay on their device with xp) then `commit`
    with the Ritz value of its B B^T; `update` does both on numpy arrays."""

    __slots__ = ("name", "settings", "v", "xp", "bound")

    def __init__(self, name: str, settings: Settings = DEFAULTS, xp=np):
        self.name, self.settings, self.xp = name, settings, xp
        self.v = None
        self.bound = math.nan  # the last estimate's relative error estimate (lanczos_bound)

    def update(self, w2: np.ndarray) -> float:
        """sigma_max of w2 (numpy): lanczos() from the kept vectors until its bound is under SIGMA_TOL
        (at most settings.sigma_steps more steps); keeps the top Ritz vectors. self.bound: its estimate."""
        v = self.start(w2)
        if not self.settings.sigma_steps:  # one block power step (the estimate before sigma_steps)
            v, gram = subspace_step(w2, v)
            sigma, self.bound = ritz_sigma(gram), math.nan
        else:
            sigma, self.bound, v, _ = lanczos(lambda q: w2.T @ (w2 @ q), v, steps=self.settings.sigma_steps)
        self.commit(v, sigma)
        return sigma

    def step(self, w2, steps: int | None = None):
        """(next V, a p x p matrix whose largest eigenvalue is sigma^2) of w2 on the device, no host sync (a
        warm-up the first time): lanczos_fixed's `steps` (default settings.sigma_steps) Lanczos steps, or
        with 0 one block power step (next V = B^T, B B^T)."""
        steps = self.settings.sigma_steps if steps is None else steps
        if not steps:
            return subspace_step(w2, self.start(w2), self.xp)
        return lanczos_fixed(w2, self.start(w2), steps, self.xp)

    def start(self, w2):
        """The vectors the snapshot's iteration on w2 starts from: the kept ones, else a warm-up's."""
        xp = self.xp
        m, n = w2.shape
        p = self.settings.vectors(m, n)
        if self.v is None or tuple(self.v.shape) != (n, p) or self.v.dtype != w2.dtype:
            # warm-up: a block of vectors, then the top p Ritz vectors go on
            v = xp.asarray(start_block(self.name, n, max(p, min(WARMUP_BLOCK, m, n))), dtype=w2.dtype)
            for _ in range(max(1, self.settings.warmup)):
                v, gram = subspace_step(w2, v, xp)
            # numpy's eigh raises on NaN; the device modules give NaN, and commit() drops it
            if v.shape[1] > p and (xp is not np or np.all(np.isfinite(gram))):
                v = top_vector(v, gram, xp) if p == 1 else v[:, :p]
                if xp is np:
                    v = v.astype(w2.dtype)
        else:
            v = self.v
        return v

    def commit(self, v, sigma: float) -> None:
        """Keep the subspace for the next snapshot: a NaN matrix leaves it as it was; a zero
        matrix gets a fresh block, iterated once from the next snapshot on."""
        if sigma > 0:
            self.v = v
        elif sigma == 0:
            n, p = v.shape
            self.v = self.xp.asarray(start_block(self.name, n, p), dtype=v.dtype)


# ------------------------------------------------------------ NaN origin

ORIGIN_ORDER = ("grad", "optim", "delta", "weights")  # the order a training step computes them
ORIGIN_WORDS = {"grad": "gradient", "optim": "optimizer state", "delta": "update", "weights": "weights"}


def first_nonfinite(arr) -> int | None:
    """Flat (C order) index of the first NaN/Inf element, or None."""
    a = np.asarray(arr).reshape(-1)
    if not is_float(a):
        return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    return int(np.argmax(bad))


@dataclass
class Origin:
    step: int
    tensor: int  # id
    name: str
    kind: str  # grad, optim, delta, weights
    index: int | None
    others: int  # other tensors non-finite in this snapshot

    def event(self) -> dict:
        at = "" if self.index is None else f" at flat index {self.index}"
        more = f"; {self.others} more tensor(s) non-finite in this snapshot" if self.others else ""
        return {
            "step": self.step, "level": "error", "kind": "nan_origin", "tensor": self.tensor,
            "where": self.kind, "index": self.index,
            "message": (f"first non-finite value: {ORIGIN_WORDS[self.kind]} of {self.name}{at}, "
                        f"step {self.step}{more}"),
        }


def nonfinite_rows(block: Block | None, kind: str) -> np.ndarray:
    """Bool [T]: rows of a block that hold NaN/Inf (by its counts or non-finite stats)."""
    if block is None:
        return np.zeros(0, dtype=bool)
    names = list(block.names)
    if kind == "optim":
        col = names.index("nonfinite") if "nonfinite" in names else None
        return np.zeros(block.stats.shape[0], bool) if col is None else block.stats[:, col] > 0
    if kind == "delta":
        # a delta over elements finite in both is finite; the weights tell NaN apart
        return np.zeros(block.stats.shape[0], dtype=bool)
    out = np.zeros(block.stats.shape[0], dtype=bool)
    for c in ("nan", "inf"):
        if c in names:
            out |= block.stats[:, names.index(c)] > 0
    return out


def find_origin(step: int, infos, blocks: dict, locate) -> Origin | None:
    """The first non-finite tensor of a snapshot, in ORIGIN_ORDER then tensor order.

    blocks: kind -> Block or None; locate(kind, row) -> flat index or None, asked
    only for the row reported (the search costs nothing on healthy snapshots).
    """
    found = None
    tensors: set[int] = set()
    for kind in ORIGIN_ORDER:
        bad = nonfinite_rows(blocks.get(kind), kind)
        rows = np.nonzero(bad)[0]
        tensors.update(rows.tolist())
        if found is None and rows.size:
            found = (kind, int(rows[0]))
    if found is None:
        return None
    kind, row = found
    info = infos[row]
    try:
        index = locate(kind, row)
    except Exception:  # the counts stand; the index is a courtesy
        index = None
    return Origin(int(step), info.id, info.name, kind, index, len(tensors) - 1)


# ------------------------------------------------------------ numpy Recorder


# The instruments that fill each group of columns; a group none of them fills is left out
# of the block (a block without instrument columns is complete: FORMAT.md), so a log
# recorded with the cheap default set carries no columns of NaN.
FILLED_BY = {"weights": frozenset({"sigma", "dist_init"}), "delta": frozenset({"cos", "sigma"})}


def fills(chosen, kind: str) -> bool:
    """Whether the chosen instruments fill the instrument columns of this kind of block."""
    return bool(FILLED_BY[kind] & frozenset(chosen))


def with_columns(block: Block, names, values: np.ndarray) -> Block:
    """The block with more statistics columns appended."""
    return Block(tuple(block.names) + tuple(names), np.hstack([block.stats, values]), block.hist)


def parse_options(instruments) -> tuple[frozenset, Settings]:
    """(chosen instruments, Settings) from instruments="default" (DEFAULT), True (all), False/None (none),
    an iterable of ALL's names, or a dict: names -> bool (the rest stay on) and the
    SETTINGS' names -> int (checked by Settings)."""
    if isinstance(instruments, str) and instruments == "default":
        return frozenset(DEFAULT), DEFAULTS
    if instruments is True:
        return frozenset(ALL), DEFAULTS
    if instruments in (False, None):
        return frozenset(), DEFAULTS
    if isinstance(instruments, dict):
        chosen, given = set(ALL), {}
        for key, value in instruments.items():
            if key in SETTINGS:
                given[key] = value
            elif key in ALL:
                if not value:
                    chosen.discard(key)
            else:
                raise ValueError(f"unknown instruments option {key!r}; choose from {ALL + SETTINGS}")
        return frozenset(chosen), Settings(**given)
    if isinstance(instruments, str):
        instruments = [instruments]
    names = frozenset(str(i) for i in instruments)
    unknown = names - set(ALL)
    if unknown:
        raise ValueError(f"unknown instruments {sorted(unknown)}; choose from {ALL}")
    return names, DEFAULTS


class Instruments:
    """The instrument columns of numpy snapshots, one tensor id at a time.

    Per tensor it keeps: the subspace of the spectral iteration (n x 4 float64)
    and one for the update; the initial values (a copy, for dist_init); and for
    the cosines the previous values and update at `cos_sample` coordinates.
    """

    def __init__(self, chosen=ALL, settings: Settings = DEFAULTS):
        self.chosen = frozenset(chosen)
        self.settings = settings
        self.alpha = settings.alpha_schedule()
        self._spec: dict[int, Spectral] = {}
        self._spec_d: dict[int, Spectral] = {}
        self._init: dict[int, tuple[np.ndarray, float]] = {}
        self._idx: dict[int, np.ndarray | None] = {}
        self.cosines = UpdateCosines()
        self.units = UnitHealth()
        # which tensors keep their output units on the last axis (set by the Keras and JAX integrations)
        self.units_last: Callable[[str], bool] = never_units_last

    def __bool__(self) -> bool:
        return bool(self.chosen)

    def matrix(self, info, shape) -> tuple[int, int] | None:
        """matrix_shape of this tensor, its units where units_last says."""
        return matrix_shape(shape, self.units_last(info.name))

    def _coords(self, info, arr: np.ndarray) -> np.ndarray:
        if info.id not in self._idx:
            self._idx[info.id] = sample_index(info.name, arr.size, self.settings.cos_sample)
        idx = self._idx[info.id]
        flat = arr.reshape(-1)
        return (flat if idx is None else flat[idx]).astype(np.float64)

    def weights_columns(self, infos, arrays, fro_norms) -> np.ndarray:
        """[T, 3]: sigma_max, stable_rank, dist_init."""
        out = np.full((len(infos), len(WEIGHT_INSTRUMENTS)), np.nan)
        for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
            if not is_float(arr):
                continue
            mn = self.matrix(info, arr.shape)
            if "sigma" in self.chosen and mn is not None:
                spec = self._spec.setdefault(info.id, Spectral(info.name, self.settings))
                out[i, 0] = spec.update(_compute(arr).reshape(mn))
            if "dist_init" in self.chosen:
                init = self._init.get(info.id)
                if init is None and np.all(np.isfinite(arr)):
                    x0 = np.array(arr, copy=True)
                    init = self._init[info.id] = (x0, float(np.linalg.norm(_compute(x0).reshape(-1))))
                if init is not None:
                    x0, n0 = init
                    d = float(np.linalg.norm((_compute(arr) - _compute(x0)).reshape(-1)))
                    out[i, 2] = ratio(d, n0)
        out[:, 1] = stable_rank(fro_norms, out[:, 0])
        return out

    def alpha_columns(self, infos, arrays) -> np.ndarray:
        """[T, 1]: alpha where due (AlphaSchedule), NaN elsewhere."""
        out = np.full((len(infos), 1), np.nan)
        for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
            mn = self.matrix(info, arr.shape) if is_float(arr) else None
            if mn is not None and self.alpha.due(info, mn) and np.all(np.isfinite(arr)):
                sv = np.linalg.svd(arr.reshape(mn).astype(np.float64), compute_uv=False)
                out[i, 0] = powerlaw_alpha(sv**2)
        return out

    def update_sigmas(self, infos, arrays, prevs) -> np.ndarray:
        """[T]: sigma_max of each update W - W_prev, where prevs[i] (the exact previous
        values, or None) is kept; call before the previous copies are replaced."""
        out = np.full(len(infos), np.nan)
        if "sigma" not in self.chosen or prevs is None:
            return out
        for i, (info, arr, prev) in enumerate(zip(infos, arrays, prevs, strict=True)):
            mn = self.matrix(info, arr.shape)
            if not is_float(arr) or mn is None or prev is None or prev.shape != arr.shape:
                continue
            d2 = (_compute(arr) - _compute(prev)).reshape(mn)
            spec = self._spec_d.setdefault(info.id, Spectral(info.name + "/delta", self.settings))
            out[i] = spec.update(d2)
        return out

    def delta_columns(self, infos, arrays, grads: dict, update_sigma: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """[T, 3]: cos_prev, cos_grad, sigma_ratio; grads name -> gradient array,
        update_sigma from update_sigmas(), sigma the weights' sigma_max."""
        out = np.full((len(infos), len(DELTA_INSTRUMENTS)), np.nan)
        for i, (info, arr) in enumerate(zip(infos, arrays, strict=True)):
            if not is_float(arr):
                continue
            if "cos" in self.chosen:
                g = grads.get(info.name)
                g = self._coords(info, np.asarray(g)) if g is not None and np.size(g) == arr.size else None
                out[i, 0], out[i, 1] = self.cosines.update(info.id, self._coords(info, arr), g)
            if not math.isnan(update_sigma[i]):
                out[i, 2] = ratio(float(update_sigma[i]), float(sigma[i]))
        return out

    @staticmethod
    def optim_block(infos, state: dict) -> Block | None:
        """The optim block from `state`: name -> {"m": array, "v": array (Adam),
        "lr", "step", "beta2", "eps"} (SGD momentum: "m" only)."""
        rows = np.full((len(infos), len(OPTIM_STATS)), np.nan)
        seen = False
        for i, info in enumerate(infos):
            st = state.get(info.name)
            if not st:
                continue
            seen = True
            bad = 0
            m = st.get("m")
            if m is not None:
                m64 = np.asarray(m, dtype=np.float64)
                rows[i, 0] = _norm(m64[np.isfinite(m64)])
                bad += int(np.count_nonzero(~np.isfinite(m64)))
            v = st.get("v")
            if v is not None:
                v64 = np.asarray(v, dtype=np.float64)
                rows[i, 1] = _norm(v64[np.isfinite(v64)])
                bad += int(np.count_nonzero(~np.isfinite(v64)))
                rows[i, 2] = adam_eff_lr(float(st.get("lr", math.nan)), rows[i, 1], v64.size,
                                         float(st.get("step", 0) or 0), float(st.get("beta2", 0.999)),
                                         float(st.get("eps", 1e-8)))
            elif "lr" in st:
                rows[i, 2] = float(st["lr"])
            rows[i, 3] = bad
        return Block(OPTIM_STATS, rows, None) if seen else None


def _norm(a: np.ndarray) -> float:
    """The L2 norm of a 1-D float64 array without BLAS: np.linalg.norm's dot product wakes
    OpenBLAS's threads, which then spin beside the training's (a Keras fit recording Adam's state
    every 10 batches on 2 cores: +260% CPU, against +27% with this)."""
    return math.sqrt(float(np.einsum("i,i->", a, a)))


# ------------------------------------------------------------ per-unit health


def unit_norms_ref(x, units_last: bool = False) -> np.ndarray | None:
    """L2 norm of each unit (row of x as a matrix, its column with units_last), float64; None below
    two dimensions."""
    mn = matrix_shape(np.shape(x), units_last)
    if mn is None:
        return None
    return np.linalg.norm(np.asarray(x, dtype=np.float64).reshape(mn), axis=0 if units_last else 1)


# below this a float32 norm may have lost its squares to underflow (elements under 1e-19 square to subnormals)
TINY_NORM = 1e-15


def unit_norms(x: np.ndarray, units_last: bool = False) -> np.ndarray:
    """Per-unit L2 norms as the numpy path records them (float32 input in float32; a unit whose float32
    norm is tiny again in float64: its squares underflowed, and a gradient of 1e-22 per element read as
    exactly zero, a false dead unit)."""
    mn = matrix_shape(x.shape, units_last)
    assert mn is not None
    axis = 0 if units_last else 1
    m = _compute(np.asarray(x)).reshape(mn)
    out = np.linalg.norm(m, axis=axis)
    small = out < TINY_NORM
    if m.dtype != np.float64 and small.any():
        part = m[:, small] if units_last else m[small]
        out[small] = np.linalg.norm(part.astype(np.float64), axis=axis)
    return out


def bf16_bits(x) -> np.ndarray:
    """float values as bfloat16 bits (round to nearest even; NaN stays NaN)."""
    f = np.ascontiguousarray(x, dtype=np.float32)
    u = f.view(np.uint32)
    # in uint32: the largest finite or infinite pattern (0xFF800000) plus 0x8000 does not wrap; the NaN
    # patterns that would are replaced below
    rounded = ((u + ((u >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)
    return np.where(np.isnan(f), np.uint16(0x7FC0), rounded)


def median(w: np.ndarray) -> float:
    """np.median of a 1-D float64 array (NaN if it holds one or is empty), without np.median's
    overhead per call (tens of microseconds: it runs for every tensor of every snapshot)."""
    n = w.size
    if n == 0:
        return math.nan
    k = n // 2
    # n - 1 among the kth: the largest last, so a NaN (sorted last) shows there
    part = np.partition(w, (k, n - 1) if n % 2 else (k - 1, k, n - 1))
    if math.isnan(part[-1]):
        return math.nan
    return float(part[k]) if n % 2 else float((part[k - 1] + part[k]) / 2)


class UnitHealth:
    """Counts of dead and exploding units per tensor, and the snapshot's `units` payload.

    A unit is a row of W seen as a matrix (an output feature of a Linear, an output
    channel of a conv). Dead: its gradient row was exactly zero in each of the last
    DEAD_WINDOW snapshots that had a gradient (kept: one int32 streak per unit).
    Exploding: its weight norm is above EXPLODING_FACTOR times the tensor's median
    unit norm. The per-unit norms go into the log as bfloat16: 2 bytes per unit
    for the weights and 2 for the gradient, per snapshot.
    """

    def __init__(self, window: int = DEAD_WINDOW, factor: float = EXPLODING_FACTOR):
        self.window, self.factor = window, factor
        # dead-unit streaks: one int32 per unit, of the tensors that had a gradient at the last update,
        # concatenated in their order (ids); _streak[id] is a view of that tensor's part
        self._streak_ids: tuple[int, ...] = ()
        self._streak_all = np.zeros(0, dtype=np.int32)
        self._streak: dict[int, np.ndarray] = {}
        self._reported: dict[tuple[int, str], np.ndarray] = {}  # the units the last event named

    def update(self, infos, w_norms: dict, g_norms: dict):
        """w_norms / g_norms: row -> per-unit norms (host arrays). Returns (weights column
        [T, 1], grad column [T, 1], units payload or None, event payloads).

        The tensors' units are concatenated and compared at once (only the medians go tensor
        by tensor): a Python step per tensor for each comparison cost more than the comparisons."""
        t = len(infos)
        wcol = np.full((t, 1), np.nan)
        gcol = np.full((t, 1), np.nan)
        rows = sorted(w_norms)
        if not rows:
            return wcol, gcol, None, []
        ws = [np.asarray(w_norms[i], dtype=np.float64).reshape(-1) for i in rows]
        sizes = np.fromiter((w.size for w in ws), dtype=np.int64, count=len(ws))
        starts = np.zeros(len(ws), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        w_all = np.concatenate(ws)
        meds = self._medians(ws, w_all, starts, sizes)
        with np.errstate(invalid="ignore"):
            limit = np.where(meds > 0, self.factor * meds, np.inf)  # a NaN or zero median: none exploding
            hot = w_all > np.repeat(limit, sizes)
        counts = np.add.reduceat(hot, starts) if w_all.size else np.zeros(len(rows), np.int64)
        wcol[rows, 0] = counts
        events = []
        for j in np.nonzero(counts)[0].tolist():
            i = rows[j]
            units = np.nonzero(hot[starts[j]:starts[j] + sizes[j]])[0]
            events += self._event(infos[i], "exploding", units, int(sizes[j]), f"weight norm above "
                                  f"{self.factor:g}x the median unit's ({three(meds[j])})")
        g_size = [np.size(g_norms[i]) if i in g_norms else -1 for i in rows]
        with_g = np.nonzero(np.asarray(g_size) == sizes)[0].tolist()
        g_all = None
        if with_g:
            g_ids = tuple(infos[rows[j]].id for j in with_g)
            gs = np.concatenate([np.asarray(g_norms[rows[j]], dtype=np.float64).reshape(-1) for j in with_g])
            streak = self._streaks(g_ids, sizes[with_g])
            streak += 1
            streak[gs != 0] = 0
            dead = streak >= self.window
            g_starts = np.concatenate([[0], np.cumsum(sizes[with_g])[:-1]])
            dead_counts = np.add.reduceat(dead, g_starts) if dead.size else np.zeros(len(with_g), np.int64)
            g_rows = [rows[j] for j in with_g]
            gcol[g_rows, 0] = dead_counts
            for k in np.nonzero(dead_counts)[0].tolist():
                j = with_g[k]
                i = rows[j]
                units = np.nonzero(dead[g_starts[k]:g_starts[k] + sizes[j]])[0]
                events += self._event(infos[i], "dead", units, int(sizes[j]),
                                      f"gradient exactly zero for {self.window}+ snapshots")
            if len(with_g) == len(rows):  # every tensor had its gradient (the usual case)
                g_all = gs.astype(np.float32)
            else:
                g_all = np.full(w_all.size, np.nan, dtype=np.float32)
                at = np.concatenate([np.arange(starts[j], starts[j] + sizes[j]) for j in with_g])
                g_all[at] = gs
        ids = np.array([infos[i].id for i in rows], dtype="<u4")
        payload = {"ids": encode_array(ids), "weights": encode_bf16_bits(bf16_bits(w_all.astype(np.float32))),
                   "grad": None if g_all is None else encode_bf16_bits(bf16_bits(g_all))}
        if any(int(sizes[j]) != _first_dim(infos[i]) for j, i in enumerate(rows)):
            # units on a tensor's last axis (Keras, Flax kernels): how many each has (docs/FORMAT.md)
            payload["sizes"] = encode_array(sizes.astype("<u4"))
        return wcol, gcol, payload, events

    def _medians(self, ws: list, w_all: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The median unit norm of each tensor where a unit could be exploding, else NaN (no unit is):
        where max <= factor * min (min > 0), no unit is above factor x the median (>= min), so its
        partition is skipped: two reductions over all tensors instead of a partition per tensor."""
        calm = np.zeros(len(ws), dtype=bool)
        if sizes.size and sizes.min() > 0:  # (reduceat gives no identity for empty parts)
            with np.errstate(invalid="ignore"):
                lo, hi = np.minimum.reduceat(w_all, starts), np.maximum.reduceat(w_all, starts)
                calm = (lo > 0) & (hi <= self.factor * lo)
        meds = np.full(len(ws), np.nan)
        for j in np.nonzero(~calm)[0].tolist():
            meds[j] = median(ws[j])
        return meds

    def _streaks(self, ids: tuple[int, ...], sizes) -> np.ndarray:
        """The streaks of these tensors, concatenated (their own if kept at this size, else zeros)."""
        if ids != self._streak_ids:
            parts = []
            for tid, n in zip(ids, sizes, strict=True):
                old = self._streak.get(tid)
                parts.append(old if old is not None and old.size == n else np.zeros(int(n), dtype=np.int32))
            self._streak_all = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
            self._streak_ids = ids
            ends = np.cumsum(sizes)
            self._streak.update({tid: self._streak_all[e - n:e] for tid, n, e in zip(ids, sizes, ends, strict=True)})
        return self._streak_all

    def _event(self, info, what: str, units: np.ndarray, total: int, why: str) -> list:
        """An event when a tensor's such units are not those its last event named (units that died since,
        or others that recovered: the alert quotes the latest event, which must name the units of now)."""
        key = (info.id, what)
        last = self._reported.get(key)
        if last is not None and np.array_equal(last, units):
            return []
        self._reported[key] = units
        shown = ", ".join(str(int(u)) for u in units[:20]) + (" ..." if units.size > 20 else "")
        return [{"level": "warning", "kind": f"{what}_units", "tensor": info.id, "count": int(units.size),
                 "units": [int(u) for u in units[:1000]],
                 "message": f"{info.name}: {units.size} of {total} units {what} ({why}): {shown}"}]


def _first_dim(info) -> int:
    """shape[0] of a declared tensor (-1 where its shape is not known: `sizes` is then written)."""
    shape = getattr(info, "shape", None)
    return int(shape[0]) if shape else -1


def three(x: float) -> str:
    return f"{x:.3g}"


# ------------------------------------------------------------ power-law tail (alpha)


def powerlaw_alpha(eigs, *, min_tail: int = 10) -> float:
    """WeightWatcher's alpha: the exponent of a power law p(x) ~ x^-alpha fitted to the
    tail of the eigenvalues (x = sigma^2 of W) by maximum likelihood (Clauset, Shalizi and
    Newman 2009), the tail's start xmin chosen among the eigenvalues to minimise the
    Kolmogorov-Smirnov distance; NaN with fewer than min_tail positive eigenvalues."""
    x = np.sort(np.asarray(eigs, dtype=np.float64))
    x = x[np.isfinite(x) & (x > 0)]
    n = x.size
    if n < min_tail:
        return math.nan
    logs = np.log(x)
    # suffix sums: for xmin = x[k], the tail is x[k:], sum(log(x/xmin)) = S[k] - (n - k) log x[k]
    suffix = np.cumsum(logs[::-1])[::-1]
    best, best_d = math.nan, math.inf
    for k in range(0, n - min_tail + 1):
        m = n - k
        denom = suffix[k] - m * logs[k]
        if denom <= 0:
            continue
        a = 1.0 + m / denom
        tail = x[k:]
        fit = 1.0 - (tail / x[k]) ** (1.0 - a)  # the fitted CDF at each tail point
        emp = np.arange(m) / m
        d = float(np.max(np.maximum(np.abs(fit - emp), np.abs(fit - (emp + 1.0 / m)))))
        if d < best_d:
            best, best_d = a, d
    return best


class AlphaSchedule:
    """Which snapshots of which tensors get the alpha fit."""

    def __init__(self, every: int = ALPHA_EVERY, max_elements: int = ALPHA_MAX_ELEMENTS):
        self.every, self.max_elements = int(every), int(max_elements)
        self._count: dict[int, int] = {}

    def due(self, info, mn: tuple[int, int] | None) -> bool:
        """Whether this snapshot fits alpha on this tensor, mn its matrix_shape (counts the call)."""
        if mn is None or mn[0] * mn[1] > self.max_elements or min(mn) < 10:
            return False
        k = self._count.get(info.id, 0)
        self._count[info.id] = k + 1
        return k % max(1, self.every) == 0
