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

Statistics are computed with numpy on a host copy of each parameter (the
framework-free `Recorder.snapshot` path): simple and exact, but it copies the
model to the host at each recorded step, so choose `every` accordingly on
large models. Never raises into training: problems are reported once.
"""

from __future__ import annotations

import sys

import torch
import transformers
from transformers import TrainerCallback

from ..recorder import Recorder

HAS_PRE_OPTIMIZER_STEP = hasattr(TrainerCallback, "on_pre_optimizer_step")


def torch_arrays(named, *, grads: bool = False) -> dict:
    """{name: float numpy copy} of parameters (or their .grad), bf16/fp16 widened to float32."""
    out = {}
    for name, p in named:
        t = p.grad if grads else p
        if t is None:
            continue
        t = t.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        arr = t.cpu().numpy()
        # weights: a view is enough (statistics are taken before training goes
        # on); gradients are kept until the step ends and may be zeroed in place
        out[name] = arr.copy() if grads and t.device.type == "cpu" else arr
    return out


def dtype_name(t) -> str:
    return str(t.dtype).removeprefix("torch.")


class WeightCallback(TrainerCallback):
    """Record the model's parameters (and gradients, logs) every `every` optimizer steps.

    path_or_recorder: a log path, or a `weighttui.Recorder` you manage (not closed here).
    trainable_only: skip parameters with requires_grad=False.
    grads: record gradient statistics.
    recorder_options: passed to `Recorder` (bins, sample, full_every, include, exclude, delta, meta ...).
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
        self.options = recorder_options
        self.recorder: Recorder | None = self._given
        self._owned = False
        self._runs = 0
        self._pending_grads = None
        self._reported: set[str] = set()

    # ------------------------------------------------------------ helpers

    def _named(self, model):
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad or not self.trainable_only]

    def _guard(self, doing: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # never into the training loop
            if doing not in self._reported:
                self._reported.add(doing)
                print(f"weighttui: skipped while {doing}: {type(exc).__name__}: {exc}", file=sys.stderr)

    @staticmethod
    def _epoch(state):
        return None if state.epoch is None else int(state.epoch)

    def _active(self, state) -> bool:
        return self.recorder is not None and state.is_world_process_zero and self.recorder.active

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
            self.recorder = Recorder(self.path, every=self.every, meta=meta,
                                     framework=f"torch {torch.__version__} (transformers {transformers.__version__})",
                                     **options)
            self._owned = True
            self._runs += 1
        if self.grads and not HAS_PRE_OPTIMIZER_STEP:
            print(f"weighttui: transformers {transformers.__version__} has no on_pre_optimizer_step; "
                  "recording weights and logs without gradients", file=sys.stderr)
        if model is not None and state.global_step == 0:
            self._record(state, model)  # the weights before the first update

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads and model is not None and self._active(state):
            step = state.global_step + 1
            if self.recorder.should_record(step, self._epoch(state)):
                self._guard("copying gradients", self._take_grads, model)

    def _take_grads(self, model):
        self._pending_grads = torch_arrays(self._named(model), grads=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self._active(state):
            self._guard("taking a snapshot", self._record, state, model)
        self._pending_grads = None

    def _record(self, state, model):
        rec, step, epoch = self.recorder, state.global_step, self._epoch(state)
        if not (rec.should_record(step, epoch) or rec.wants_full(step, epoch)):
            return
        named = self._named(model)
        for name, p in named:  # declare with the framework's dtype name (bfloat16 ...)
            if rec.selects(name) and name not in rec.tensors:
                rec.declare(name, tuple(p.shape), dtype_name(p))
        rec.snapshot(step, torch_arrays(named), epoch=epoch, grads=self._pending_grads)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and self._active(state):
            self._guard("recording logs", self._log, state, logs)

    def _log(self, state, logs):
        # the Trainer's fractional "epoch" would clash with the record's own epoch field
        values = {("epoch_progress" if k == "epoch" else k): v for k, v in logs.items() if k != "step"}
        self.recorder.scalars(state.global_step, epoch=self._epoch(state), **values)

    def on_train_end(self, args, state, control, **kwargs):
        if self._owned and self.recorder is not None:
            self.recorder.close()
            self.recorder = None
            self._owned = False
