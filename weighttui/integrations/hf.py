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

import sys

import torch
import transformers
from transformers import TrainerCallback

from weighttui.integrations import torch_dist
from weighttui.integrations.guard import ReportOnce
from weighttui.integrations.torch import split_options, watch
from weighttui.record.recorder import Recorder

HAS_PRE_OPTIMIZER_STEP = hasattr(TrainerCallback, "on_pre_optimizer_step")


class WeightCallback(TrainerCallback):
    """Record the model's parameters (and gradients, logs) every `every` optimizer steps.

    path_or_recorder: a log path, or a `weighttui.Recorder` you manage (not closed here).
    trainable_only: skip parameters with requires_grad=False.
    grads: record gradient statistics.
    recorder_options: `delta` ("auto", "exact", "sample", "off"), `delta_budget_bytes`
      and `hist_sample` go to weighttui.torch.watch; the rest to `Recorder` (bins,
      sample, full_every, full_epochs, include, exclude, meta ...).
    """

    def __init__(self, path_or_recorder="run.sock", *, every: int = 10, grads: bool = True,
                 trainable_only: bool = True, **recorder_options):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self._given = path_or_recorder if isinstance(path_or_recorder, Recorder) else None
        self.path = None if self._given else str(path_or_recorder)
        self.every = every
        self.grads = grads
        self.trainable_only = trainable_only
        self.engine_options, self.options = split_options(recorder_options)
        if self._given is not None and self.options:
            raise TypeError(f"recorder options go to the Recorder you created: {sorted(self.options)}")
        self.recorder: Recorder | None = self._given
        self.handle = None  # weighttui.torch's WatchHandle, from on_train_begin
        self._owned = False
        self._runs = 0
        self._guard = ReportOnce()  # reports each kind of failure once, never raises

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _epoch(state):
        return None if state.epoch is None else int(state.epoch)

    def _active(self, state) -> bool:
        return (self.handle is not None and state.is_world_process_zero
                and self.recorder is not None and self.recorder.active)

    # -------------------------------------------------------------- hooks

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return  # other ranks hold the same replicated parameters; rank 0 writes
        self._guard("starting the recorder", self._begin, args, state, model)

    def _begin(self, args, state, model):
        if self.recorder is None:
            meta = {"trainer": {"learning_rate": args.learning_rate, "max_steps": args.max_steps,
                                "per_device_train_batch_size": args.per_device_train_batch_size,
                                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                                "world_size": args.world_size}}
            if model is not None and getattr(model, "config", None) is not None:
                meta["model_type"] = getattr(model.config, "model_type", None)
            options = dict(self.options)
            meta.update(options.pop("meta", None) or {})
            if self._runs:  # a second train() with this callback: a new run in the same log
                options["mode"] = "a"
            # delta=False: the torch integration computes the update statistics
            self.recorder = Recorder(self.path, every=self.every, meta=meta, delta=False,
                                     framework=f"torch {torch.__version__} (transformers {transformers.__version__})",
                                     **options)
            self._owned = True
            self._runs += 1
        if self.grads and not HAS_PRE_OPTIMIZER_STEP:
            print(f"weighttui: transformers {transformers.__version__} has no on_pre_optimizer_step; "
                  "recording weights and logs without gradients", file=sys.stderr)
        if model is None:
            return
        if any(torch_dist.shardable(p) for p in model.parameters()):
            print("weighttui: sharded (DTensor) parameters: the Trainer callback records logs only; "
                  "use weighttui.torch.watch on every rank for their statistics", file=sys.stderr)
            return
        self.handle = watch(model, self.recorder, grads=self.grads, skip_frozen=self.trainable_only,
                            initial=False, **self.engine_options)
        if state.global_step == 0:
            self._record(state)  # the weights before the first update

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads and self._active(state):
            step = state.global_step + 1
            if self.recorder.should_record(step, self._epoch(state)):
                self.handle.take_grads()  # on the device, until the step's snapshot

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._active(state):
            self._guard("taking a snapshot", self._record, state)

    def _record(self, state):
        rec, step, epoch = self.recorder, state.global_step, self._epoch(state)
        due = rec.should_record(step, epoch)
        full = rec.wants_full(step, epoch)
        if due or full:
            self.handle.record(step, epoch=epoch, full=full)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and self._active(state):
            self._guard("recording logs", self._log, state, logs)

    def _log(self, state, logs):
        # the Trainer's fractional "epoch" would clash with the record's own epoch field
        values = {("epoch_progress" if k == "epoch" else k): v for k, v in logs.items() if k != "step"}
        self.recorder.scalars(state.global_step, epoch=self._epoch(state), **values)

    def on_train_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.close()  # hooks and device copies; the recorder is closed below
            self.handle = None
        if self._owned and self.recorder is not None:
            self.recorder.close()
            self.recorder = None
            self._owned = False
