"""Keras optimizer state for the `optim` instrument (docs/instruments.md).

Keras 3 optimizers keep one slot variable per trainable variable: Adam and
AdamW `_momentums` / `_velocities` (Nadam too; RMSprop `_velocities`, and
`_momentums` with momentum), SGD with momentum `momentums`, indexed by
`optimizer._get_variable_index(variable)`. What a snapshot needs is read on
the host: {name: {"m", "v", "lr", "step", "beta2", "eps"}} for Recorder.snapshot(optim=...).
Anything unexpected (another optimizer, a Keras version without these slots)
gives no state, never an error.
"""

from __future__ import annotations

import keras
import numpy as np


def optimizer_state(model, tracked, read=np.asarray, lr_step=None) -> dict | None:
    """tracked: (name, variable, layer, trainable) as KerasWatcher records them; read: how a
    slot variable is read (numpy on the host; the TF-ops path reads TF tensors); lr_step: the
    learning rate and step count if the caller read them already (else they are read here)."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "_get_variable_index"):
        return None
    m_slots = getattr(opt, "_momentums", None) or getattr(opt, "momentums", None)
    v_slots = getattr(opt, "_velocities", None)
    if not m_slots and not v_slots:
        return None
    try:
        lr, step = lr_step if lr_step is not None else (float(np.asarray(applied_learning_rate(opt))),
                                                        float(np.asarray(opt.iterations)))
    except Exception:  # a symbolic value: no step size, the norms still go
        lr, step = float("nan"), float("nan")
    beta2, eps = getattr(opt, "beta_2", None), getattr(opt, "epsilon", None)
    if beta2 is None and hasattr(opt, "rho"):  # RMSprop: lr / (sqrt(v) + eps), v a rho-average with no bias
        beta2 = 0.0  # correction, which Adam's formula gives with beta2 = 0 (1 - 0^t = 1)
    out = {}
    for name, var, _layer, _trainable in tracked:
        try:
            i = opt._get_variable_index(var)
        except Exception:  # not a variable this optimizer trains
            continue
        st: dict = {"lr": lr, "step": step}
        if m_slots and i < len(m_slots):
            st["m"] = read(m_slots[i])
        if v_slots and i < len(v_slots):
            st["v"] = read(v_slots[i])
            st["beta2"] = float(beta2) if beta2 is not None else 0.999
            st["eps"] = float(eps) if eps is not None else 1e-7
        if "m" in st or "v" in st:
            out[name] = st
    return out or None


def applied_learning_rate(opt):
    """The learning rate of the update just applied: the variable, or a schedule's value at the step it
    was applied at. After an update `iterations` has moved on, and Keras' `learning_rate` gives a
    schedule's value at the next step (half the one applied under a schedule that halves every step)."""
    schedule = getattr(opt, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        done = int(np.asarray(opt.iterations))
        return schedule(max(done - 1, 0))
    return opt.learning_rate
