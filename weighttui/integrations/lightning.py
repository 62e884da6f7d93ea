"""PyTorch Lightning: a `Callback` that records weights, gradients and logged metrics.

    from weighttui.lightning import WeightCallback
    trainer = lightning.Trainer(..., callbacks=[WeightCallback("run.sock", every=10)])

`WeightCallback` subclasses `lightning.pytorch.Callback` (the `lightning`
package); code that uses the older `pytorch_lightning` package takes
`PLWeightCallback` (same behaviour), since each Trainer accepts only its own
package's callbacks.

`step` in the log is `trainer.global_step` (optimizer steps); step 0 holds the
weights before training. Gradients are taken in `on_before_optimizer_step`:
accumulated over `accumulate_grad_batches`, before Lightning clips them
(`gradient_clip_val`), and stored with the weights after that optimizer step.
Metrics logged with `self.log(...)` (`trainer.callback_metrics`) are recorded
as scalars. Only global rank zero writes (`trainer.is_global_zero`).

Statistics are computed where the parameters live by the PyTorch
integration (weighttui.torch: batched on the device, one device-to-host copy
per snapshot, update statistics against previous copies kept on the device
under `delta="auto"`'s memory budget). Sharded (FSDP2/DTensor) parameters are
not recorded by this callback (it runs on global rank zero only, and their
statistics need every rank). Never raises into training.
"""

from __future__ import annotations

import sys

import torch

from weighttui.integrations import torch_dist
from weighttui.integrations.guard import ReportOnce
from weighttui.integrations.torch import split_options, watch
from weighttui.record.recorder import Recorder


class _WeightCallbackMixin:
    """Recording logic; the Callback base class is added per Lightning package below."""

    def __init__(self, path_or_recorder="run.sock", *, every: int = 10, grads: bool = True,
                 trainable_only: bool = True, metrics: bool = True, **recorder_options):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        super().__init__()
        self._given = path_or_recorder if isinstance(path_or_recorder, Recorder) else None
        self.path = None if self._given else str(path_or_recorder)
        self.every = every
        self.grads = grads
        self.trainable_only = trainable_only
        self.metrics = metrics
        # delta, delta_budget_bytes, hist_sample: weighttui.torch.watch; the rest: Recorder
        self.engine_options, self.options = split_options(recorder_options)
        if self._given is not None and self.options:
            raise TypeError(f"recorder options go to the Recorder you created: {sorted(self.options)}")
        self.recorder: Recorder | None = self._given
        self.handle = None  # weighttui.torch's WatchHandle, from on_fit_start
        self._owned = False
        self._runs = 0
        self._last_step = None
        self._guard = ReportOnce()  # reports each kind of failure once, never raises

    def _active(self, trainer) -> bool:
        return (self.handle is not None and trainer.is_global_zero
                and self.recorder is not None and self.recorder.active)

    # -------------------------------------------------------------- hooks

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:  # replicated parameters: rank 0 speaks for all
            self._guard("starting the recorder", self._begin, trainer, pl_module)

    def _begin(self, trainer, pl_module):
        if self.recorder is None:
            options = dict(self.options)
            meta = {"lightning": {"max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs,
                                  "accumulate_grad_batches": trainer.accumulate_grad_batches,
                                  "world_size": trainer.world_size},
                    "module": type(pl_module).__name__}
            meta.update(options.pop("meta", None) or {})
            if self._runs:
                options["mode"] = "a"  # a second fit(): a new run in the same log
            # delta=False: the torch integration computes the update statistics
            self.recorder = Recorder(self.path, every=self.every, meta=meta, delta=False,
                                     framework=f"torch {torch.__version__} ({self._package})",
                                     **options)
            self._owned = True
            self._runs += 1
        self._last_step = None
        if any(torch_dist.shardable(p) for p in pl_module.parameters()):
            print("weighttui: sharded (DTensor) parameters: the Lightning callback records metrics only; "
                  "use weighttui.torch.watch on every rank for their statistics", file=sys.stderr)
            return
        self.handle = watch(pl_module, self.recorder, grads=self.grads, skip_frozen=self.trainable_only,
                            initial=False, **self.engine_options)
        if trainer.global_step == 0:
            self._record(trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.grads and self._active(trainer):
            step = trainer.global_step + 1
            if self.recorder.should_record(step, trainer.current_epoch):
                self.handle.take_grads()  # on the device, until the step's snapshot

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._active(trainer) and trainer.global_step != self._last_step:
            # global_step moves only on optimizer steps (not every batch when accumulating)
            self._guard("taking a snapshot", self._record, trainer)
            if self.metrics:
                self._guard("recording metrics", self._metrics, trainer)

    def _record(self, trainer):
        rec, step, epoch = self.recorder, trainer.global_step, trainer.current_epoch
        self._last_step = step
        due = rec.should_record(step, epoch)
        full = rec.wants_full(step, epoch)
        if due or full:
            self.handle.record(step, epoch=epoch, full=full)

    def _metrics(self, trainer):
        values = {}
        for k, v in trainer.callback_metrics.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    continue
                v = v.item()
            values[k if k not in ("step", "epoch") else f"{k}_metric"] = v
        if values:
            self.recorder.scalars(trainer.global_step, epoch=trainer.current_epoch, **values)

    def on_fit_end(self, trainer, pl_module):
        self._finish("finished")

    def on_exception(self, trainer, pl_module, exception):
        self._finish("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")

    def _finish(self, status: str):
        if self.handle is not None:
            self.handle.close()  # hooks and device copies; the recorder is closed below
            self.handle = None
        if self._owned and self.recorder is not None:
            self.recorder.close(status=status)
            self.recorder = None
            self._owned = False


def _make(base, name: str):
    root = base.__module__.split(".")[0]
    package = f"{root} {getattr(sys.modules.get(root), '__version__', '?')}"
    return type(name, (_WeightCallbackMixin, base), {"__doc__": __doc__, "__module__": __name__,
                                                     "_package": package})


_classes: dict = {}


def __getattr__(name):
    """WeightCallback (lightning.pytorch) and PLWeightCallback (pytorch_lightning), built on first use."""
    if name not in ("WeightCallback", "PLWeightCallback"):
        raise AttributeError(name)
    if name not in _classes:
        if name == "WeightCallback":
            try:
                from lightning.pytorch import Callback
            except ImportError:  # only the older package is installed
                from pytorch_lightning import Callback
        else:
            from pytorch_lightning import Callback
        _classes[name] = _make(Callback, name)
    return _classes[name]
