"""Hugging Face Transformers: a `TrainerCallback` that records weights, gradients and the Trainer's logs.

    from weighttui.hf import WeightCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[WeightCallback("run.sock", every=10)])

`step` in the log is the Trainer's `state.global_step` (optimizer steps);
step 0 holds the weights before training. Gradients are taken in
`on_pre_optimizer_step`, i.e. accumulated over the gradient-accumulation
steps and after the Trainer's gradient clipping, just before the optimizer
uses them; they are stored with the weights after that optimizer step. A
transformers version without `on_pre_optimizer_step` gets weights and logs
but no gradients (said once on stderr). Only the world process zero writes.

Statistics are computed where the parameters live by the PyTorch
integration (weighttui.torch: batched on the device, one device-to-host copy
per snapshot, update statistics against previous copies kept on the device
under `delta="auto"`'s memory budget). Sharded (FSDP2/DTensor) parameters are
not recorded by this callback: it runs on process zero only, and their
statistics need every rank. Never raises into training: problems are
reported once.
"""

from __future__ import annotations

import math

import torch
import transformers
from transformers import TrainerCallback

from weighttui.integrations.trainer import TrainerRecording

HAS_PRE_OPTIMIZER_STEP = hasattr(TrainerCallback, "on_pre_optimizer_step")


class WeightCallback(TrainerRecording, TrainerCallback):
    """Record the model's parameters (and gradients, logs) every `every` optimizer steps.

    path_or_recorder: a log path, or a `weighttui.Recorder` you manage (not closed here).
    trainable_only: skip parameters with requires_grad=False.
    grads: record gradient statistics.
    recorder_options: `delta` ("auto", "exact", "sample", "off"), `delta_budget_bytes`
      and `hist_sample` go to weighttui.torch.watch; the rest to `Recorder` (bins,
      sample, full_every, full_epochs, include, exclude, meta ...).
    """

    trainer_name = "Trainer"

    @staticmethod
    def _epoch(state):
        """The 0-based epoch in progress: the Trainer's `state.epoch` runs from 0 to 1.0
        over the first pass (1.0 at its last step), so its ceiling less one."""
        if state.epoch is None:
            return None
        return max(0, math.ceil(float(state.epoch) - 1e-9) - 1)

    def _active(self, state) -> bool:
        return self._recording() and state.is_world_process_zero

    # -------------------------------------------------------------- hooks

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return  # other ranks hold the same replicated parameters; rank 0 writes
        self._guard("starting the recorder", self._begin, args, state, model)

    def _begin(self, args, state, model):
        meta = {"trainer": {"learning_rate": args.learning_rate, "max_steps": args.max_steps,
                            "per_device_train_batch_size": args.per_device_train_batch_size,
                            "gradient_accumulation_steps": args.gradient_accumulation_steps,
                            "world_size": args.world_size}}
        if model is not None and getattr(model, "config", None) is not None:
            meta["model_type"] = getattr(model.config, "model_type", None)
        if self.grads and not HAS_PRE_OPTIMIZER_STEP:
            self.reporter.once("no pre_optimizer_step",
                               f"weighttui: transformers {transformers.__version__} has no "
                               "on_pre_optimizer_step; recording weights and logs without gradients")
        framework = f"torch {torch.__version__} (transformers {transformers.__version__})"
        if self._start(model, meta=meta, framework=framework) and state.global_step == 0:
            self._record(state)  # the weights before the first update

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self._active(state):
            self._take_grads(state.global_step + 1, self._epoch(state))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._active(state):
            self._guard("taking a snapshot", self._record, state)

    def _record(self, state):
        self._record_at(state.global_step, self._epoch(state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and self._active(state):
            self._guard("recording logs", self._log, state, logs)

    def _log(self, state, logs):
        # the Trainer's fractional "epoch" would clash with the record's own epoch field
        values = {("epoch_progress" if k == "epoch" else k): v for k, v in logs.items() if k != "step"}
        self.recorder.scalars(state.global_step, epoch=self._epoch(state), **values)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._active(state):
            self._guard("recording complete values", self._epoch_end, state.global_step, self._epoch(state))

    def on_train_end(self, args, state, control, **kwargs):
        self._finish(step=state.global_step, epoch=self._epoch(state))
