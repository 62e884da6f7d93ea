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

from weighttui.integrations.trainer import TrainerRecording


class _WeightCallbackMixin(TrainerRecording):
    """Lightning's hooks on the shared trainer recording; the Callback base class is added per package below."""

    trainer_name = "Lightning"
    _package = "lightning"  # set per package by _make

    def __init__(self, path_or_recorder="run.sock", *, every: int = 10, grads: bool = True,
                 trainable_only: bool = True, metrics: bool = True, **recorder_options):
        super().__init__(path_or_recorder, every=every, grads=grads, trainable_only=trainable_only,
                         **recorder_options)
        self.metrics = metrics
        self._last_step: int | None = None
        self._last_epoch: int | None = None

    def _active(self, trainer) -> bool:
        return self._recording() and trainer.is_global_zero

    # -------------------------------------------------------------- hooks

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:  # replicated parameters: rank 0 speaks for all
            self._guard("starting the recorder", self._begin, trainer, pl_module)

    def _begin(self, trainer, pl_module):
        meta = {"lightning": {"max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs,
                              "accumulate_grad_batches": trainer.accumulate_grad_batches,
                              "world_size": trainer.world_size},
                "module": type(pl_module).__name__}
        self._last_step = None
        self._last_epoch = None
        framework = f"torch {torch.__version__} ({self._package})"
        if self._start(pl_module, meta=meta, framework=framework) and trainer.global_step == 0:
            self._record(trainer)  # the weights before the first update

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._active(trainer):
            self._take_grads(trainer.global_step + 1, trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._active(trainer) and trainer.global_step != self._last_step:
            # global_step moves only on optimizer steps (not every batch when accumulating)
            self._guard("taking a snapshot", self._record, trainer)
            if self.metrics:
                self._guard("recording metrics", self._metrics, trainer)

    def _record(self, trainer):
        self._last_step = trainer.global_step
        self._last_epoch = trainer.current_epoch
        self._record_at(trainer.global_step, trainer.current_epoch)

    def _metrics(self, trainer):
        values = {}
        for k, v in trainer.callback_metrics.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    continue
                v = v.item()
            values[k if k not in ("step", "epoch") else f"{k}_metric"] = v
        if values and self.recorder is not None:
            self.recorder.scalars(trainer.global_step, epoch=trainer.current_epoch, **values)

    def on_train_epoch_end(self, trainer, pl_module):
        if self._active(trainer):
            self._guard("recording complete values", self._epoch_end, trainer.global_step,
                        trainer.current_epoch)

    def on_fit_end(self, trainer, pl_module):
        # current_epoch has moved past the last epoch by now: the last one seen is the one that ended
        self._finish("finished", step=trainer.global_step, epoch=self._last_epoch)

    def on_exception(self, trainer, pl_module, exception):
        self._finish("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed",
                     error=exception)


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
