"""Keras 3: `WeightCallback` records a model's weights during `model.fit`.

Works on every Keras 3 backend. On the CPU, weights are read as host numpy
arrays without a copy (a view of the TF tensor or torch tensor) and go through
`Recorder.snapshot`, whose statistics, histograms and exact deltas come from
the fused C kernel (record/kernel.py) in one call per snapshot; TF variables
on a GPU/TPU use the TF-ops path (keras_tf_stats.py) instead, so that only the
results leave the device. Gradients inside `fit` are taken where the
optimizer applies them (keras_grads.py). Torch variables on a GPU get the
PyTorch integration's device statistics (keras_torch_stats.py).

Tensor names are Keras variable paths (`sequential/dense/kernel`), the layer
is the name of the layer that owns the variable. Steps count training
batches across all `fit` calls of one callback; epochs are Keras' own
(0-based, as `on_epoch_end` receives them).
"""

from __future__ import annotations

import fnmatch
import sys

import keras
import numpy as np

from weighttui.integrations.keras_grads import GradientTap, capture_for, innermost
from weighttui.integrations.keras_instruments import optimizer_state
from weighttui.record.instruments import units_last_by_name
from weighttui.record.recorder import Recorder
from weighttui.record.reporting import Reporter
from weighttui.record.schedule import epoch_selector
from weighttui.record.stats import DELTA_STATS, Block, delta_stats, empty_block, grad_block

__all__ = ["WeightCallback"]


def _host_array(variable) -> np.ndarray:
    """A numpy array of a Keras variable's current value, without a copy on the CPU.

    May be a view of the live buffer: use it before the next optimizer step,
    and copy what must outlive that (Recorder.snapshot does).
    """
    if keras.backend.backend() == "tensorflow":
        return _to_host(_tf_value(variable))  # MirroredVariable: the primary replica's value
    return _to_host(variable.value)


def _owners(model) -> dict[int, str]:
    """id(variable) -> name of the innermost layer that owns it."""
    owners: dict[int, str] = {}
    layers = [model]
    try:
        layers += list(model._flatten_layers(include_self=False, recursive=True))
    except Exception:  # private API moved: fall back to the variable path
        pass
    for layer in layers:  # pre-order: inner layers overwrite their parents
        for v in list(getattr(layer, "_trainable_variables", [])) + list(
                getattr(layer, "_non_trainable_variables", [])):
            owners[id(v)] = layer.name
    return owners


class WeightCallback(keras.callbacks.Callback):
    """Record a model's weights to a weighttui run log during `model.fit`.

    path_or_recorder: a log path, or a `weighttui.Recorder` the caller owns
        (and closes); with a path the callback closes the log when `fit` ends
        and a later `fit` appends a new run to it.
    epochs: None (every epoch end), an int N (epochs 0, N, 2N ...) or a list
        of epoch numbers, 0-based as Keras counts them.
    every_batches: also record every N training batches (step = global batch count).
    full_epochs: epochs (same forms as `epochs`) whose complete weights are
        stored: `weighttui.open(path).weights(epoch=N)`.
    layers: names or glob patterns of layers (or enclosing models) to record.
    trainable_only: False also records non-trainable weights (BatchNorm
        moving statistics), marked trainable=False.
    initial: record the weights before the first batch (step 0, no epoch).
    grads: also record the gradients `fit` applies (after clipping; unscaled
        under a LossScaleOptimizer) at the batches and epoch ends recorded,
        by wrapping the model's optimizer for the duration of `fit`
        (TensorFlow and torch backends; on TensorFlow one extra copy of the
        trainable weights holds them between the graph and the host).
    stats: "auto" (TF ops for TensorFlow variables on a GPU/TPU, numpy
        otherwise; torch ops for torch variables on a GPU), "device" (TF or torch ops, wherever
        the variables are; TensorFlow and torch backends) or "numpy".
    recorder_options: passed to `Recorder` (bins, sample, delta, include,
        exclude, meta, full_every ...).
    """

    def __init__(self, path_or_recorder, *, epochs=None, every_batches=None, full_epochs=None,
                 layers=None, trainable_only=True, initial=True, stats="auto", grads=True,
                 **recorder_options):
        super().__init__()
        if every_batches is not None and (isinstance(every_batches, bool) or not isinstance(
                every_batches, (int, np.integer)) or every_batches < 1):
            raise ValueError(f"every_batches must be None or an int >= 1, got {every_batches!r}")
        for bad in ("every", "epochs", "full_epochs", "framework"):
            if bad in recorder_options:
                raise TypeError(f"{bad}= is not a WeightCallback option (use epochs, every_batches, full_epochs)")
        if stats not in ("auto", "device", "numpy"):
            raise ValueError(f"stats must be 'auto', 'device' or 'numpy', got {stats!r}")
        if stats == "device" and keras.backend.backend() not in ("tensorflow", "torch"):
            raise ValueError("stats='device' needs the TensorFlow or torch backend")
        self.stats = stats
        self._device = None if stats == "auto" else stats == "device"  # auto: decided on first use
        self._epochs = epoch_selector(epochs, "epochs")
        self._full_epochs = epoch_selector(full_epochs, "full_epochs")
        self.every_batches = None if every_batches is None else int(every_batches)
        if isinstance(layers, str):
            layers = [layers]
        self.layers = None if layers is None else [str(p) for p in layers]
        self.trainable_only = bool(trainable_only)
        self.initial = bool(initial)
        self.grads = bool(grads)
        self._capture: GradientTap | None = None  # this callback's view of the optimizer's capture
        self._capture_later = False  # the model had no weights at fit's start: capture once its first batch built them
        self._built_at: tuple[int, int] | None = None  # (step, weights) when the capture was installed
        if isinstance(path_or_recorder, Recorder):
            if recorder_options:
                raise TypeError("recorder options go to the Recorder you passed, not to WeightCallback")
            self._owns = False
            self.recorder = path_or_recorder
        else:
            self._owns = True
            self._path = path_or_recorder
            self._options = dict(recorder_options)
            self.recorder = self._new_recorder(mode=self._options.pop("mode", "w"))
        self.step = 0  # training batches finished, over every fit of this callback
        self._epoch = None
        self._epoch_base = 0
        self._begin_plan: tuple | None = None  # (steps per call, steps per epoch, epoch end recorded): _batch_begin
        self._last_recorded = -1  # step of the latest weights snapshot
        self._variables = None  # [(name, variable, layer, trainable)]
        self._tf_stats = None  # TFStats for the current variable list
        self._tf_instruments = None  # TFInstruments of the current recorder
        self._torch_stats = None  # keras_torch_stats.TorchStats (torch backend, stats on the device)
        self._reads: _ReadSet | None = None  # what the CPU path reads: _read_set()
        self._prev = {}  # name -> value at the previous snapshot (TF tensor, or sample)
        self._weights_key: tuple | None = None  # (how many weights, which train) when _variables was chosen
        # one reporter for every fit; its events go to the log of the fit at hand
        self._reporter = Reporter(event=lambda kind, message, level: self.recorder.event(kind, message, level=level))
        self._closed_by_fit = False
        # whether no callback before this one in fit's list can change the weights or the learning rate at a
        # batch's end (on_train_begin): then the reads the storing train function made after the update are
        # what an eager read after those callbacks would give
        self._nothing_changes_weights = False

    def _new_recorder(self, mode: str) -> Recorder:
        framework = f"keras {keras.__version__} ({keras.backend.backend()})"
        rec = Recorder(self._path, mode=mode, framework=framework, **self._options)
        rec.instruments.units_last = units_last_by_name  # Keras kernels: (in, out), (kh, kw, in, out)
        return rec

    # ------------------------------------------------------------ variables

    def _tracked(self, refresh: bool = True):
        """The variables to record, refreshed when the model's weights change
        (a subclassed model builds its weights on the first batch). refresh=False (a batch's
        snapshot) looks again only while there are none: `model.weights` walks every layer."""
        if not refresh and self._variables:
            return self._variables
        weights = self.model.weights
        # which weights there are, and which train: layers unfrozen between two fits are recorded in the
        # second (with a Recorder the caller owns, the callback's selection outlives the first fit)
        key = (len(weights), tuple(bool(v.trainable) for v in weights) if self.trainable_only else ())
        if self._variables is None or key != self._weights_key:
            self._weights_key = key
            self._variables = self._select(weights)
            self._tf_stats = None
            self._reads = None
        return self._variables

    def _select(self, weights):
        owners = _owners(self.model)
        chosen, seen = [], set()
        for v in weights:
            if self.trainable_only and not v.trainable:
                continue
            dtype = keras.backend.standardize_dtype(v.dtype)
            if not (dtype.startswith("float") or dtype == "bfloat16"):
                continue  # counters and seed states are not weights
            path = str(getattr(v, "path", v.name))
            layer = owners.get(id(v)) or (path.rsplit("/", 2)[-2] if "/" in path else self.model.name)
            if self.layers is not None and not self._layer_selected(layer, path):
                continue
            if not self.recorder.selects(path):
                continue
            name, k = path, 1
            while name in seen:  # paths can repeat across nested functional models
                k += 1
                name = f"{path}#{k}"
            seen.add(name)
            chosen.append((name, v, layer, bool(v.trainable)))
        for name, v, layer, trainable in chosen:
            self.recorder.declare(name, tuple(v.shape), keras.backend.standardize_dtype(v.dtype),
                                  layer=layer, trainable=trainable)
        return chosen

    def _layer_selected(self, layer: str, path: str) -> bool:
        # a layer name, or any enclosing model/layer in the variable path
        candidates = [layer] + path.split("/")[:-1]
        return any(fnmatch.fnmatchcase(c, p) for p in self.layers for c in candidates)

    # ---------------------------------------------------------- recording

    def _record(self, *, epoch, batch, full, scalars=None, grads=None, step=None, lr=False,
                batch_end=False) -> None:
        """A snapshot now. lr: add the learning rate to `scalars` (read with the weights). batch_end: in
        on_train_batch_end, right after the batch's train function (nothing else ran since but callbacks)."""
        rec = self.recorder
        if not rec.active:
            return
        step = self.step if step is None else int(step)
        tracked = self._tracked(refresh=batch is None)  # looked at again at epoch ends, not every batch
        lr_value = self._learning_rate(scalars) if lr and scalars is not None else None
        if not tracked or self._device or self._device is None:
            if lr_value is not None:  # read now (no CPU-path read of the weights to join)
                self._add_learning_rate(scalars, lr_value)
                lr_value = None
        if not tracked:
            if scalars:
                rec.scalars(step, epoch=epoch, **scalars)
            return  # a subclassed model before fit built it
        grad_arrays = None
        slots = False  # the grads are the capture's slot variables (TF): filled by this batch only if applied
        if grads is None and self._capture is not None:
            grads = self._capture.take()  # the gradients of the batch just done, if it was wanted
            slots = grads is not None and self._capture.capture._eager is None
        if self._device is None:
            self._device = _on_accelerator(tracked[0][1])
        rs = self._read_set(tracked)
        pairs = [] if grads is None else [(g, rs.names_of[id(v)]) for g, v in grads
                                          if g is not None and id(v) in rs.names_of]
        if self._device:
            if scalars:
                rec.scalars(step, epoch=epoch, **scalars)
            if keras.backend.backend() == "torch":
                done = self._record_torch(step, tracked, epoch, batch, full, pairs if grads is not None else None)
            else:
                if slots and not self._applied(step):
                    grads = None
                grad_arrays = {name: _to_host(g.read_value() if hasattr(g, "read_value") else g)
                               for g, name in pairs} if grads is not None else None
                done = self._record_tf(step, tracked, epoch, batch, full, grad_arrays)
        else:
            # the same items every call (weights, every gradient slot, the learning rate variable), so
            # that one reader, made once per model, reads them; gradients that are not slots (a
            # custom loop's tensors) are read after them
            extra = [g for g, _name in pairs if id(g) not in rs.slot_at]
            try:
                # the batch's gradients kept: the storing train function read them after the update (and the
                # weights and learning rate, used at a batch's end when no callback before can change them)
                reads = None
                if grads is not None and self._capture is not None:
                    reads = self._capture.capture.outputs(weights=batch_end and self._nothing_changes_weights)
                host = _read_host(rs.items, _reader_cache(self.model), reads)
                if extra:
                    host += _read_host(extra)
            except Exception:
                if scalars:  # they survive a failure to read the weights
                    self._add_learning_rate(scalars, lr_value)
                    rec.scalars(step, epoch=epoch, **scalars)
                raise
            if lr_value is not None:
                self._add_learning_rate(scalars, float(host[rs.lr_at]) if lr_value is rs.lr else lr_value)
            arrays = dict(zip(rs.names, host, strict=False))
            grad_arrays = None
            if grads is not None and (not slots or self._applied(step, host[rs.fills_at] if rs.fills_at else None)):
                at, more = rs.slot_at, iter(host[len(rs.items):])
                grad_arrays = {name: host[at[id(g)]] if id(g) in at else next(more) for g, name in pairs}
            # docs/instruments.md: the optimizer's state now
            optim = self._optimizer_state(tracked) if rec.instruments else None
            done = self._snapshot(step, arrays, epoch, batch, grad_arrays, full, optim, scalars)
        if done:
            self._last_recorded = step

    def _applied(self, step: int, fills=None) -> bool:
        """Whether the optimizer applied the batch just done, so that the gradient slots hold its gradients
        (keras_grads.GradientCapture.applied); `fills` as read with the weights, else read here. A step a
        LossScaleOptimizer skipped is a `skipped_step` event, as GradScaler's are in the PyTorch integration."""
        capture = self._capture.capture if self._capture is not None else None
        if capture is None or capture.fills is None:
            return True
        if capture.applied(int(fills if fills is not None else _read_host([capture.fills])[0])):
            return True
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and innermost(opt) is not opt:
            self.recorder.event("skipped_step", f"LossScaleOptimizer skipped the optimizer step at step {step}: "
                                "inf/NaN scaled gradients; no gradient recorded for it", level="warning", step=step)
        return False

    def _optimizer_state(self, tracked) -> dict | None:
        """optimizer_state() with its slot variables (Adam's moments ...) read by one kept reader (views
        of immutable read tensors, as the weights): Keras' own read per slot cost ~50-80 us each, over
        1 ms a snapshot for a 3-layer MLP under Adam."""
        if keras.backend.backend() != "tensorflow":
            return optimizer_state(self.model, tracked)
        slots: list = []

        def later(variable) -> int:  # where its read will be
            slots.append(variable)
            return len(slots) - 1

        # the learning rate variable and the step count join the same call (a schedule's value does not)
        opt = getattr(self.model, "optimizer", None)
        lr_var = getattr(opt, "_learning_rate", None)
        counter = getattr(opt, "iterations", None)
        same_call = isinstance(lr_var, keras.Variable) and isinstance(counter, keras.Variable)
        state = optimizer_state(self.model, tracked, read=later, lr_step=(0.0, 0.0) if same_call else None)
        if not state:
            return state
        host = _read_host(slots + ([lr_var, counter] if same_call else []), _reader_cache(self.model))
        if same_call:
            lr, step = float(host[-2]), float(host[-1])
            for st in state.values():
                st["lr"], st["step"] = lr, step
        for st in state.values():
            for key in ("m", "v"):
                if key in st:
                    st[key] = host[st[key]]
        return state

    def _snapshot(self, step, arrays, epoch, batch, grads, full, optim, scalars) -> bool:
        # the scalars go in the snapshot's job (one queue entry, one wake of the writer thread)
        done = self.recorder.snapshot(step, arrays, epoch=epoch, batch=batch, grads=grads, full=full, optim=optim,
                                      scalars=scalars or None)
        if done:
            self._last_recorded = step
        return done

    def _record_torch(self, step, tracked, epoch, batch, full, pairs) -> bool:
        """Statistics with torch ops on the variables' device (keras_torch_stats.py), then Recorder.submit."""
        from weighttui.integrations import torch_host
        from weighttui.integrations.keras_torch_stats import TorchStats

        rec = self.recorder
        if self._torch_stats is None:
            # stats="device" on CPU variables: torch's ops rather than the fused kernel (what a GPU runs)
            self._torch_stats = TorchStats(rec.bins, delta=rec.delta_policy == "exact",
                                           cpu_kernel="torch" if self.stats == "device" else "fused")
        if rec.instruments and self._reporter.once("torch_device_instruments", (
                "weighttui: the instruments (docs/instruments.md) are not computed for Keras variables on a "
                "torch device; the statistics are")):
            self._reporter.record_event("instruments", "not computed for Keras variables on a torch device", "info")
        infos = [rec.tensors[name] for name, _v, _l, _t in tracked]
        names = [name for name, _v, _l, _t in tracked]
        xs = [v.value.detach() for _n, v, _l, _t in tracked]
        grads = None
        if pairs is not None:
            by_name = {name: g for g, name in pairs}
            grads = [by_name.get(name) for name in names]
        weights, delta, grad, sample = self._torch_stats(infos, xs, grads)
        if rec.delta_policy == "sample":
            delta = self._sample_delta(infos, names, sample)
        values = [torch_host.host_value(x) for x in xs] if full else None
        return rec.submit(step, infos, weights, epoch=epoch, batch=batch, delta=delta, grad=grad,
                          sample=None if sample is None else sample.astype(np.float32), values=values)

    def _record_tf(self, step, tracked, epoch, batch, full, grad_arrays) -> bool:
        """Statistics with TF ops on the variables' device, then Recorder.submit."""
        from weighttui.integrations.keras_tf_stats import TFInstruments, TFStats

        rec = self.recorder
        infos = [rec.tensors[name] for name, _v, _l, _t in tracked]
        exact = rec.delta_policy == "exact"
        if self._tf_stats is None:
            self._tf_stats = TFStats(rec.bins, [i.sample_index for i in infos], delta=exact)
        values = [_tf_value(v) for _n, v, _l, _t in tracked]
        names = [name for name, _v, _l, _t in tracked]
        has_prev = [n in self._prev for n in names]
        prevs = [self._prev.get(n, x) for n, x in zip(names, values, strict=True)]
        ins = self._tf_instruments
        if ins is None or ins.rec is not rec:
            ins = self._tf_instruments = TFInstruments(rec)
        pend = optim = None
        if ins:  # docs/instruments.md, in TF ops (before the previous values are replaced)
            optim = optimizer_state(self.model, tracked, read=_tf_value) if "optim" in ins.ins.chosen else None
            pend = ins.start(infos, values, {i: self._prev[n] for i, n in enumerate(names)
                                             if exact and n in self._prev}, grad_arrays, optim)
        weights, delta, sample = self._tf_stats(values, prevs, has_prev)
        if exact:
            # TF tensors are immutable: holding the read keeps this snapshot's values
            self._prev = dict(zip(names, values, strict=True))
        elif rec.delta_policy == "sample":
            delta = self._sample_delta(infos, names, sample)
        grad = grad_block(names, grad_arrays, rec.bins) if grad_arrays else None
        optim_block = units = None
        frames: list = []
        if pend is not None:
            weights, delta, grad, optim_block, units, frames = ins.finish(step, pend, infos, values, grad_arrays,
                                                                          optim, weights, delta, grad)
        full_values = [_full_value(x) for x in values] if full else None
        return rec.submit(step, infos, weights, epoch=epoch, batch=batch, delta=delta, grad=grad,
                          sample=sample, values=full_values, optim=optim_block, units=units, extra_frames=frames)

    def _sample_delta(self, infos, names, sample) -> Block:
        """delta="sample": update statistics from the sampled elements only."""
        block = empty_block(DELTA_STATS, len(infos), None)
        pos = 0
        for i, (info, name) in enumerate(zip(infos, names, strict=True)):
            if info.sample_index is None:
                continue
            now = sample[pos:pos + info.sample_index.size]
            pos += info.sample_index.size
            prev = self._prev.get(name)
            if prev is not None:
                block.stats[i] = delta_stats(now, prev, exact=False, total=info.size)
            self._prev[name] = now.copy()
        return block

    def _scalars(self, logs, *, lr=True) -> dict:
        """fit's logs as numbers, and the learning rate unless they hold one (lr=False: the
        caller adds it, read with the weights; see _learning_rate)."""
        out = {}
        for k, v in (logs or {}).items():
            try:
                out[str(k)] = float(v)
            except (TypeError, ValueError):
                continue
        if lr:
            self._add_learning_rate(out)
        return out

    def _read_set(self, tracked) -> _ReadSet:
        """The items the CPU path reads at every snapshot, made again when the tracked variables,
        the gradient capture or the learning rate variable change."""
        cap = self._capture
        opt = getattr(self.model, "optimizer", None)
        try:
            lr = opt.learning_rate if opt is not None else None
        except Exception:  # an optimizer without a readable learning rate
            lr = None
        lr = lr if isinstance(lr, keras.Variable) else None
        rs = self._reads
        if rs is None or rs.tracked is not tracked or rs.capture is not cap or rs.lr is not lr:
            rs = self._reads = _ReadSet(tracked, cap, lr)
        return rs

    def _learning_rate(self, scalars: dict):
        """The optimizer's learning rate to add to `scalars`: None (the logs have one, or there
        is no optimizer), a Keras variable (to be read with the weights, in the same TF call), or
        a number (a schedule's current value, read now)."""
        if "learning_rate" in scalars or "lr" in scalars:
            return None
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return None
        try:
            lr = opt.learning_rate  # a variable, or a schedule's current value
            if isinstance(lr, keras.Variable):
                return lr
            return float(lr.numpy() if hasattr(lr, "numpy") else lr)
        except Exception:
            return None  # an optimizer without a readable learning rate

    def _add_learning_rate(self, scalars: dict, value=None) -> None:
        lr = self._learning_rate(scalars) if value is None else value
        if lr is None:
            return
        try:
            scalars["learning_rate"] = float(_host_array(lr) if isinstance(lr, keras.Variable) else lr)
        except Exception:
            pass  # an optimizer without a readable learning rate

    def _guard(self, doing: str, fn, *args) -> None:
        """Run one hook; a problem is reported once and training goes on."""
        self._reporter.guard(doing, fn, *args)

    # -------------------------------------------------------- keras hooks

    def on_train_begin(self, logs=None):
        try:  # fit's CallbackList calls this hook: the callbacks that run before this one at a batch's end
            owner = sys._getframe(1).f_locals.get("self")
            listed = owner.callbacks if isinstance(owner, keras.callbacks.CallbackList) else None
        except Exception:  # another caller (or Python): read the weights eagerly
            listed = None
        self._nothing_changes_weights = listed is not None and _nothing_before_changes_weights(listed, self)
        self._guard("starting to record", self._train_begin)

    def _train_begin(self):
        new_run = self._closed_by_fit
        if new_run:
            # a second fit with the same callback: a new run in the same log
            self._closed_by_fit = False
            self.recorder = self._new_recorder(mode="a")
            self._variables = None
            self._prev = {}  # delta history starts afresh with the new run
            self._torch_stats = None
        if self._capture is not None:  # an earlier fit that ended without on_train_end
            self._release_capture()
        if self.grads and self.recorder.active:  # first: the initial snapshot reads what later ones do
            # a failure here (reported once) leaves the weights recorded, the initial snapshot included
            self._guard("recording gradients inside fit", self._install_capture)
        # the weights before training: also a new run's (its first snapshot then has an update to show)
        if self.initial and (new_run or (self.step == 0 and self._last_recorded < 0)):
            self._record(epoch=None, batch=None, full=False)

    def _install_capture(self):
        tracked = self._tracked()
        trainable = [v for _n, v, _l, t in tracked if t]
        if not trainable:
            # a model fit builds (no keras.Input, an unbuilt subclassed model): its first batch makes the weights
            self._capture_later = not self.model.weights
            return
        capture, why = capture_for(self.model, trainable)
        if capture is None:  # said in the log (once per fit): weights are recorded all the same
            self.recorder.event("keras_grads", str(why), step=self.step)
            return
        self._capture = capture
        # fit's first batch may build more weights (a subclassed model with some built before fit): looked
        # at once, before the next batch
        self._built_at = (self.step, len(self.model.weights))

    def on_train_batch_begin(self, batch, logs=None):
        if self._capture_later and self.model.weights:  # built by the batches before: gradients from now on
            self._capture_later = False
            self._guard("recording gradients inside fit", self._install_capture)
        if self._capture is not None:
            self._guard("preparing gradients", self._batch_begin, int(batch))

    def _batch_begin(self, batch):
        """Whether the batch about to run ends at a step that is recorded: then its gradients are kept."""
        plan = self._begin_plan
        if plan is None:  # once per epoch (most batches are not recorded: this runs at every one)
            k = getattr(self.model, "steps_per_execution", 1)
            k = k if isinstance(k, int) and k > 0 else 1
            epoch = self._epoch
            plan = self._begin_plan = (k, (self.params or {}).get("steps"),
                                       epoch is not None and (self._epochs is None or self._epochs(epoch)))
        k, steps, epoch_end = plan
        before = self._epoch_base + batch
        n = self.every_batches
        # the epoch-end snapshot follows this batch (or may: steps unknown)
        wanted = (n is not None and (before + k) // n != before // n) or (
            epoch_end and (not steps or batch + k >= steps))
        self._capture.batch_begin(wanted, may_be_past_the_end=not steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_base = self.step
        self._begin_plan = None

    def on_train_batch_end(self, batch, logs=None):
        if self._capture is not None:
            self._capture.batch_done()
        before = self.step
        # `batch` is the last batch done (several per call with steps_per_execution)
        self.step = self._epoch_base + int(batch) + 1
        if self._built_at is not None and self.step > self._built_at[0]:  # (once per fit)
            self._guard("recording gradients inside fit", self._weights_built_in_fit)
        n = self.every_batches
        if n is not None and self.step // n != before // n:  # (checked here: most batches are not recorded)
            self._guard("recording a batch", self._batch_end, int(batch), logs)

    def _batch_end(self, batch, logs):
        steps = (self.params or {}).get("steps")
        epoch = self._epoch
        if steps and batch + 1 >= steps and epoch is not None and self._epoch_wanted(epoch):
            return  # the epoch-end snapshot is this same step, with the epoch's logs
        full = self._full_every_due()
        self._record(epoch=epoch, batch=batch, full=full, scalars=self._scalars(logs, lr=False), lr=True,
                     batch_end=True)

    def _full_every_due(self) -> bool:
        every = self.recorder.full_every
        return bool(every) and self.step % every == 0

    def _epoch_wanted(self, epoch: int) -> bool:
        return (self._epochs is None or self._epochs(epoch)) or (
            self._full_epochs is not None and self._full_epochs(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if self._capture is not None:  # data of unknown length: the batch begun last may have been past its end
            self._guard("preparing gradients", self._capture.batch_never_ran)
        self._guard("recording an epoch", self._epoch_end, int(epoch), logs)

    def _epoch_end(self, epoch, logs):
        scalars = self._scalars(logs, lr=False)
        full = (self._full_epochs is not None and self._full_epochs(epoch)) or self._full_every_due()
        wanted = self._epochs is None or self._epochs(epoch)
        if (wanted or full) and (self._last_recorded != self.step or full):
            # the learning rate read with the weights (a Keras variable's own read was ~0.1 ms)
            self._record(epoch=epoch, batch=None, full=full, scalars=scalars, lr=True)
        else:
            self._add_learning_rate(scalars)
            self.recorder.scalars(self.step, epoch=epoch, **scalars)

    def on_train_end(self, logs=None):
        # the end of training is always in the log, whatever `epochs` / `every_batches` chose
        if self.step != self._last_recorded:
            self._guard("taking the final snapshot", lambda: self._record(epoch=self._epoch, batch=None, full=False))
        self._release_capture()
        if self._owns:
            self._closed_by_fit = True
            self._guard("closing the log", self.recorder.close)

    # ------------------------------------------------- custom training loops

    def record(self, step=None, *, grads=None, epoch=None, batch=None, logs=None, full=False) -> None:
        """Record now, from a custom training loop (call `set_model(model)` first).

        grads: `zip(grads, model.trainable_variables)`-style (gradient, variable)
        pairs, as passed to `optimizer.apply_gradients`; gradients may be
        TensorFlow or torch tensors. `step` defaults to `self.step`, the batch
        count `fit` would have used. Never raises.
        """
        pairs = None if grads is None else list(grads)
        self._guard("recording a step", lambda: self._record(
            epoch=epoch, batch=batch, full=bool(full), scalars=self._scalars(logs),
            grads=pairs, step=step))
        if step is not None:
            self.step = max(self.step, int(step))

    def close(self) -> None:
        """Close the log (done by `fit` itself when the callback owns it)."""
        self._release_capture()  # inside a fit: other callbacks keep their gradients, this one stops asking
        self._guard("closing the log", self.recorder.close)

    def _weights_built_in_fit(self) -> None:
        """After fit's first batch: weights it built join the snapshots (this batch's too) and the gradient
        capture, from the next batch on."""
        count, self._built_at = self._built_at[1] if self._built_at else 0, None
        if len(self.model.weights) == count:
            return
        self._tracked()  # (refreshed: the new weights are recorded)
        self._release_capture()
        self._install_capture()
        self._built_at = None  # once per fit

    def _release_capture(self) -> None:
        self._capture_later = False
        if self._capture is not None:
            self._guard("releasing the gradients", self._capture.release)
            self._capture = None


# Keras' own callbacks that override a batch-end hook without changing the weights or the learning rate
_READ_ONLY_AT_BATCH_END = ("ProgbarLogger", "TensorBoard", "ModelCheckpoint", "TerminateOnNaN", "BackupAndRestore")


def _nothing_before_changes_weights(callbacks, me) -> bool:
    """Whether every callback before `me` in fit's list leaves the batch-end hooks as keras.callbacks.Callback
    has them (no-ops), is a WeightCallback, or is one of Keras' own that only read (_READ_ONLY_AT_BATCH_END).
    Any other may change the weights at a batch's end (demos/keras_watch.py restores a frozen layer there)."""
    base = keras.callbacks.Callback
    hooks = ("on_train_batch_end", "on_batch_end")
    for cb in callbacks:
        if cb is me:
            return True
        kind = type(cb)
        if isinstance(cb, WeightCallback) or (kind.__module__.startswith("keras.")
                                              and kind.__name__ in _READ_ONLY_AT_BATCH_END):
            continue
        if any(getattr(kind, h, None) is not getattr(base, h) or h in vars(cb) for h in hooks):
            return False
    return False


class _ReadSet:
    """The tracked variables, the gradient capture's slot variables and the learning rate variable
    as one list, read by one kept reader per snapshot (weights, gradients and learning rate together).
    A batch whose gradients were not kept reads its slots all the same (views, no copy) and leaves
    them: the same list every time, one reader."""

    def __init__(self, tracked, capture, lr):
        self.tracked, self.capture, self.lr = tracked, capture, lr
        self.names = [name for name, _v, _l, _t in tracked]
        self.names_of = {id(v): name for name, v, _l, _t in tracked}
        self.items: list = [v for _n, v, _l, _t in tracked]
        self.slot_at: dict[int, int] = {}  # id(slot variable) -> its position in items
        for slot, v in capture.slots() if capture is not None else ():
            # plain variables only: a distributed one is read on its own, so only when it is wanted
            if id(v) in self.names_of and type(slot).__name__ == "ResourceVariable":
                self.slot_at[id(slot)] = len(self.items)
                self.items.append(slot)
        self.fills_at = None  # the capture's count of filled batches, read with the slots
        fills = capture.capture.fills if capture is not None else None
        if self.slot_at and fills is not None and type(fills).__name__ == "ResourceVariable":
            self.fills_at = len(self.items)
            self.items.append(fills)
        self.lr_at = len(self.items)
        if lr is not None:
            self.items.append(lr)


def _reader_cache(model) -> dict:
    """Readers of a model's variables (_read_plan), kept on the model (object.__setattr__: Keras
    does not track it), so that every callback and fit on that model reuses them."""
    cache = vars(model).get("_weighttui_readers")
    if cache is None:
        cache = {}
        try:
            object.__setattr__(model, "_weighttui_readers", cache)
        except Exception:  # a model that takes no attributes: one cache per call site's lifetime
            pass
    return cache


def _on_accelerator(variable) -> bool:
    """Whether a TensorFlow- or torch-backed variable lives on a GPU or TPU."""
    if keras.backend.backend() == "torch":
        try:
            return variable.value.device.type != "cpu"
        except Exception:
            return False
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        device = str(_tf_value(variable).device).upper()
    except Exception:
        return False
    return ":GPU:" in device or ":TPU:" in device


def _read_host(items, cache: dict | None = None, reads: dict | None = None) -> list:
    """numpy arrays of Keras variables, TF variables and tensors, in order (views on the CPU).

    reads: {id(item): tensor} the storing train function read after the batch's update
    (keras_grads.GradientCapture.outputs): those items are not read again.
    On TensorFlow, plain (not distributed) variables are read by a reader made
    once per list of items and kept in `cache` (_read_plan): a Keras variable's
    own read goes through several layers of Python per variable (12 reads: 240 us)."""
    if reads is not None:  # views of the function's outputs; the other items read as below
        missing = [x for x in items if id(x) not in reads]
        rest = iter(_read_host(missing, cache) if missing else ())
        return [np.asarray(reads[id(x)]) if id(x) in reads else next(rest) for x in items]
    items = list(items)
    if keras.backend.backend() != "tensorflow":
        return [_host_array(x) if hasattr(x, "value") and hasattr(x, "path") else _to_host(x) for x in items]
    import tensorflow as tf

    at: list[int] = []
    reader = None
    if cache is not None and tf.executing_eagerly():  # a reader is kept: worth making
        key = tuple(map(id, items))
        plan = cache.get(key)
        if plan is None or not all(a is b for a, b in zip(plan[0], items, strict=True)):
            if len(cache) > 8:  # variable sets come and go (a model rebuilt): keep a few
                cache.clear()
            plan = cache[key] = _read_plan(items, tf)
        _items, at, reader = plan
        if reader is not None and len(at) == len(items):  # all of them (a snapshot's usual case)
            return [np.asarray(t) for t in reader()]  # views of the read tensors
    out: list = [None] * len(items)
    if reader is not None:
        for i, t in zip(at, reader(), strict=True):
            out[i] = np.asarray(t)  # a view of the read tensor
    for i, x in enumerate(items):
        if out[i] is None:
            if hasattr(x, "path") and hasattr(x, "value"):  # a Keras variable
                out[i] = _host_array(x)
            else:  # a TF variable (a gradient slot; MirroredVariable: the primary) or a tensor
                out[i] = _to_host(x.read_value() if hasattr(x, "read_value") else x)
    return out


_PLAIN_VARIABLES = ("ResourceVariable", "UnliftedInitializerVariable")


def _read_plan(items, tf) -> tuple:
    """(items, positions read by the reader, reader or None): a function reading every plain
    ResourceVariable among items (a Keras variable's tf.Variable, a gradient slot)."""
    plain = []
    for x in items:
        tv = x.value if hasattr(x, "path") and hasattr(x, "value") else x  # a Keras variable's tf.Variable
        # plain resource variables (an optimizer's slots are created as UnliftedInitializerVariable);
        # not distributed ones, which are read one replica at a time
        plain.append(tv if type(tv).__name__ in _PLAIN_VARIABLES else None)
    at = [i for i, tv in enumerate(plain) if tv is not None]
    if not at or not tf.executing_eagerly():
        return tuple(items), [], None
    return tuple(items), at, _inline_reader([plain[i] for i in at])


def _inline_reader(tvars):
    """A function reading these resource variables as TF tensors, each ReadVariableOp run by TF's eager
    fast path in the calling thread. One concrete function reading them all (before) cost the calling
    thread less, but ran on TF's inter-op threads: their wake-ups cost more CPU than it saved, and under
    load the training thread waited 0.4-0.9 ms for them (83k MLP, 13 reads: 0.10 ms of the process's
    CPU against 0.07 ms here). The public read where TF's private fast path is not there."""
    try:
        from tensorflow.python import pywrap_tfe
        from tensorflow.python.eager import context

        execute = pywrap_tfe.TFE_Py_FastPathExecute
        pairs = [(v.handle, v.dtype) for v in tvars]

        def read() -> list:
            ctx = context.context()
            return [execute(ctx, "ReadVariableOp", None, h, "dtype", d) for h, d in pairs]

        read()
        return read
    except Exception:  # another TensorFlow
        return lambda: [v.read_value() for v in tvars]


def _tf_value(variable):
    """The current value of a TF-backed Keras variable as an (immutable) TF tensor."""
    value = variable.value
    read = getattr(value, "read_value", None)  # tf.Variable, MirroredVariable (primary)
    return read() if read is not None else value


def _full_value(tensor):
    """A host copy of a tensor for a values record (bfloat16 as raw bits)."""
    arr = tensor.numpy()
    if arr.dtype.name == "bfloat16":
        return ("bf16", arr.view(np.uint16))
    return arr


def _to_host(x) -> np.ndarray:
    """A tensor (TF, torch, JAX, IndexedSlices ...) as numpy, a view without a copy where it is on the CPU."""
    if hasattr(x, "detach"):  # torch: may require grad or live on a GPU
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16: the raw bits as ml_dtypes'
            try:
                import ml_dtypes

                return x.view(_torch_int16()).numpy().view(ml_dtypes.bfloat16)
            except ImportError:
                return x.float().numpy()
        return x.numpy()
    if type(x).__name__ == "IndexedSlices":  # sparse embedding gradients
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
    if type(x).__name__ == "EagerTensor":
        return np.asarray(x)  # a view of the tensor's buffer (x.numpy() would copy)
    return np.asarray(keras.ops.convert_to_numpy(x))


def _torch_int16():
    import torch

    return torch.int16
