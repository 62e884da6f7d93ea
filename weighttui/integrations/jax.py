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
last part. Leaves are copied to the host with one `jax.device_get` and only
at the steps the recorder records; statistics are the numpy reference ones.
Pass `params` and `grads` as the same structure (jax.grad's output is).
Never raises into the training loop: problems are reported once.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from weighttui.record.recorder import Recorder


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path, sep: str = "/") -> str:
    return sep.join(_key_name(k) for k in path)


def named_leaves(tree, sep: str = "/") -> dict:
    """{path name: leaf} of the array leaves of a pytree, in tree order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path, sep): leaf for path, leaf in leaves if hasattr(leaf, "shape")}


def recorder(path, **options) -> Recorder:
    """A Recorder whose run record says jax (and flax, if imported)."""
    framework = f"jax {jax.__version__}"
    flax = sys.modules.get("flax")
    if flax is not None:
        framework += f" (flax {getattr(flax, '__version__', '?')})"
    options.setdefault("framework", framework)
    return Recorder(path, **options)


def snapshot(rec: Recorder, step, params, *, grads=None, epoch=None, batch=None, scalars=None,
             full=None, sep: str = "/") -> bool:
    """Record `params` (a pytree of arrays) at `step`; True if a snapshot was taken."""
    try:
        step = int(step)
        if scalars:
            rec.scalars(step, epoch=epoch, **{k: float(v) for k, v in scalars.items()})
        if full is None:
            full = rec.wants_full(step, epoch)
        # a chosen epoch's calls all go through: its last one is its complete values
        if not (rec.should_record(step, epoch) or full or rec.full_epoch_due(epoch)):
            return False
        named = named_leaves(params, sep)
        for name, leaf in named.items():  # declared with JAX's dtype name (bfloat16 ...)
            if rec.selects(name) and name not in rec.tensors:
                rec.declare(name, tuple(leaf.shape), str(leaf.dtype))
        host = jax.device_get(named)
        host_grads = jax.device_get(named_leaves(grads, sep)) if grads is not None else None
        return rec.snapshot(step, {k: np.asarray(v) for k, v in host.items()}, epoch=epoch, batch=batch,
                            grads=host_grads, full=full)
    except Exception as exc:  # never into the training loop
        rec.reporter.failure(exc, "taking a jax snapshot")
        return False
