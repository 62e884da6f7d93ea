"""JAX / Flax: record a parameter pytree, each leaf named by its tree path.

    import weighttui.jax as wj
    rec = wj.recorder("run.sock", every=10)            # a weighttui.Recorder
    for step in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        wj.snapshot(rec, step, params, grads=grads, scalars={"loss": loss})
    rec.close()

Names come from `jax.tree_util.tree_flatten_with_path`, joined with "/":
a Flax `{"params": {"Dense_0": {"kernel": ...}}}` gives `params/Dense_0/kernel`,
a list of layers `layers/0/w`. The layer of a tensor is its path without the
last part. Leaves are read only at the steps the recorder records.

Where the statistics are computed (`stats=`):
- "host": leaves on the CPU are read as numpy views (no copy) and go through
  the Recorder's fused C kernel (record/kernel.py), others come to the host
  with one jax.device_get first;
- "device": jnp on the leaves' device, one host transfer of the results per
  snapshot (jax_stats.py); exact deltas hold the previous leaves (immutable);
- "auto" (default): "device" when a leaf lives on an accelerator, else "host".
The instruments (docs/instruments.md) are computed on either path: the numpy
Recorder's on the host, record/device_instruments.py's with jnp on the device.
Pass `params` and `grads` as the same structure (jax.grad's output is).
Never raises into the training loop: problems are reported once.
"""

from __future__ import annotations

import sys
import weakref

import jax
import numpy as np

from weighttui.record.instruments import units_last_by_name
from weighttui.record.numpy_path import value_copy
from weighttui.record.recorder import Recorder

_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Recorder -> jax_stats.DeviceStats


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path, sep: str = "/") -> str:
    return sep.join(_key_name(k) for k in path)


def named_leaves(tree, sep: str = "/", collided: list | None = None) -> dict:
    """{path name: leaf} of the array leaves of a pytree, in tree order. Two leaves whose paths read the
    same (`{"a": [x], "a/0": y}`): the first is kept, the later one's name goes into `collided`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out: dict = {}
    for path, leaf in leaves:
        if not hasattr(leaf, "shape"):
            continue
        name = path_name(path, sep)
        if name in out:
            if collided is not None:
                collided.append(name)
            continue
        out[name] = leaf
    return out


def recorder(path, **options) -> Recorder:
    """A Recorder whose run record says jax (and flax, if imported)."""
    framework = f"jax {jax.__version__}"
    flax = sys.modules.get("flax")
    if flax is not None:
        framework += f" (flax {getattr(flax, '__version__', '?')})"
    options.setdefault("framework", framework)
    rec = Recorder(path, **options)
    rec.instruments.units_last = units_last_by_name  # Flax kernels: (in, out), (kh, kw, in, out)
    return rec


def _on_accelerator(leaves) -> bool:
    for leaf in leaves:
        for d in getattr(leaf, "devices", lambda: ())():
            if getattr(d, "platform", "cpu") != "cpu":
                return True
    return False


def _host(named: dict) -> dict:
    """numpy arrays of the leaves: views of CPU buffers, one device_get for the others."""
    out, remote = {}, {}
    for k, v in named.items():
        if isinstance(v, jax.Array) and not _on_accelerator([v]):
            out[k] = np.asarray(v)  # a view of the CPU buffer, no copy
        else:
            remote[k] = v
    if remote:
        out.update({k: np.asarray(v) for k, v in jax.device_get(remote).items()})
    return {k: out[k] for k in named}


def snapshot(rec: Recorder, step, params, *, grads=None, epoch=None, batch=None, scalars=None,
             full=None, sep: str = "/", stats: str = "auto", optim=None) -> bool:
    """Record `params` (a pytree of arrays) at `step`; True if a snapshot was taken.

    stats: "auto", "host" or "device" (see the module's docstring). optim: the
    optimizer state for the `optim` instrument, {name: {"m", "v", "lr", "step",
    "beta2", "eps"}} as Recorder.snapshot takes it (arrays may be jax.Arrays);
    `adam_state()` builds it from optax's Adam state.
    """
    if stats not in ("auto", "host", "device"):
        raise ValueError(f"stats must be 'auto', 'host' or 'device', got {stats!r}")
    try:
        step = int(step)
        if scalars:
            rec.scalars(step, epoch=epoch, **{k: float(v) for k, v in scalars.items()})
        if full is None:
            full = rec.wants_full(step, epoch)
        # a chosen epoch's calls all go through: its last one is its complete values
        if not (rec.should_record(step, epoch) or full or rec.full_epoch_due(epoch)):
            return False
        collided: list = []
        named = {k: v for k, v in named_leaves(params, sep, collided).items() if rec.selects(k)}
        for name in collided:  # said once, as the numpy Recorder says of keys whose strings repeat
            rec.left_out(f"dup:{name}", f"a leaf named {name!r} skipped: an earlier leaf's path reads the same "
                                        f"(sep {sep!r}), and that one is recorded")
        for name, leaf in named.items():  # declared with JAX's dtype name (bfloat16 ...)
            if name not in rec.tensors:
                rec.declare(name, tuple(leaf.shape), str(leaf.dtype))
        named_grads = named_leaves(grads, sep) if grads is not None else None
        device = stats == "device" or (stats == "auto" and _on_accelerator(named.values()))
        if device and rec.delta_policy != "sample":
            due, keep = rec.epoch_call(step, epoch, bool(full))  # as Recorder.snapshot does on the host
            if not named:
                return False
            if keep:
                infos = [rec.declare(n, tuple(a.shape), str(a.dtype)) for n, a in named.items()]
                rec.keep_epoch_values(step, epoch, infos, [value_copy(a) for a in jax.device_get(list(named.values()))])
            if not due:
                return False
            return _device_snapshot(rec, step, named, named_grads, epoch, batch, full, optim)
        host_grads = _host(named_grads) if named_grads is not None else None
        host_optim = None
        if optim:
            host_optim = {k: {**st, **_host({key: st[key] for key in ("m", "v") if st.get(key) is not None})}
                          for k, st in optim.items()}
        return rec.snapshot(step, _host(named), epoch=epoch, batch=batch, grads=host_grads, full=full,
                            optim=host_optim)
    except Exception as exc:  # never into the training loop
        rec.reporter.failure(exc, "taking a jax snapshot")
        return False


def _device_snapshot(rec: Recorder, step: int, named: dict, named_grads, epoch, batch, full, optim) -> bool:
    """Statistics and instruments with jnp where the leaves live (jax_stats.py,
    record/device_instruments.py), one host transfer, then Recorder.submit."""
    import jax.numpy as jnp

    from weighttui.integrations.jax_stats import DeviceStats
    from weighttui.record.device_instruments import ArrayInstruments, locator

    if not named:
        return False
    got = _engines.get(rec)
    if got is None:
        # the instruments' per-tensor kernels jitted (one dispatch each, cached per shape)
        got = _engines[rec] = (DeviceStats(rec.bins, rec.reporter),
                               ArrayInstruments.like(rec.instruments, jnp, jax.jit))
    engine, ins = got
    names = list(named)
    infos = [rec.declare(n, tuple(named[n].shape), str(named[n].dtype)) for n in names]
    leaves = [named[n] for n in names]
    exact = rec.delta_policy == "exact"
    pend = None
    if ins:
        with jax.enable_x64(True):  # the parts go to the host as float64
            pend = ins.start(infos, leaves, engine.previous(infos, leaves, delta=exact), named_grads, optim)
    weights, delta, grad, sample, flat = engine(infos, leaves, delta=exact, names=names, grads=named_grads,
                                                extra=None if pend is None else pend.flat)
    frames: list = []
    optim_block = units = None
    if pend is not None:
        weights, delta, grad, optim_block, units, frames = ins.finish(
            step, pend, flat, infos, weights, delta, grad, origin=rec.origin_frames,
            locate=locator(leaves, names, named_grads, optim, lambda t: np.asarray(jax.device_get(t))))
    values = [value_copy(a) for a in jax.device_get(leaves)] if full else None
    return rec.submit(step, infos, weights, epoch=epoch, batch=batch, delta=delta, grad=grad,
                      sample=sample, values=values, optim=optim_block, units=units, extra_frames=frames)


def adam_state(params, state, *, lr: float, beta2: float = 0.999, eps: float = 1e-8, sep: str = "/") -> dict:
    """`optim=` for snapshot() from optax's Adam/AdamW state: the ScaleByAdamState found in
    `state` (its `mu`, `nu` pytrees shaped like `params`, and `count`)."""
    found = _find_adam(state)
    if found is None:
        return {}
    mu, nu = named_leaves(found.mu, sep), named_leaves(found.nu, sep)
    step = float(np.asarray(found.count))
    return {name: {"m": mu[name], "v": nu.get(name), "lr": float(lr), "step": step, "beta2": beta2, "eps": eps}
            for name in named_leaves(params, sep) if name in mu}


def _find_adam(state):
    if all(hasattr(state, a) for a in ("mu", "nu", "count")):
        return state
    if isinstance(state, (tuple, list)):
        for s in state:
            got = _find_adam(s)
            if got is not None:
                return got
    return None
