"""What the Hugging Face and Lightning callbacks share: a recorder per training run and a
weighttui.torch watch on the model, snapshots at the trainer's optimizer steps.

The trainer's own hooks (which differ) call `_start`, `_take_grads`,
`_record_at` and `_finish`; failures are reported once and training goes on.
"""

from __future__ import annotations

from weighttui.integrations import torch_dist
from weighttui.integrations.torch import WatchHandle, split_options, watch
from weighttui.record.recorder import Recorder
from weighttui.record.reporting import Reporter


class TrainerRecording:
    """Mixed in before the trainer's callback class.

    path_or_recorder: a log path, or a `weighttui.Recorder` you manage (not closed here).
    recorder_options: `delta`, `delta_budget_bytes`, `hist_sample` ... go to
    weighttui.torch.watch; the rest to `Recorder`.
    """

    trainer_name = "trainer"  # how the notes on stderr name this callback

    def __init__(self, path_or_recorder="run.sock", *, every: int = 10, grads: bool = True,
                 trainable_only: bool = True, **recorder_options):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        super().__init__()
        self._given = path_or_recorder if isinstance(path_or_recorder, Recorder) else None
        self.path = None if self._given else str(path_or_recorder)
        self.every = every
        self.grads = grads
        self.trainable_only = trainable_only
        self.engine_options, self.options = split_options(recorder_options)
        if self._given is not None and self.options:
            raise TypeError(f"recorder options go to the Recorder you created: {sorted(self.options)}")
        self.recorder: Recorder | None = self._given
        self.handle: WatchHandle | None = None  # weighttui.torch's, from _start
        self._owned = False
        self._runs = 0
        self.reporter = Reporter(event=self._event)  # each kind of failure once, never raised

    def _event(self, kind: str, message: str, level: str) -> None:
        if self.recorder is not None:
            self.recorder.event(kind, message, level=level)

    def _guard(self, doing: str, fn, *args) -> None:
        self.reporter.guard(doing, fn, *args)

    def _recording(self) -> bool:
        return self.handle is not None and self.recorder is not None and self.recorder.active

    def _start(self, model, *, meta: dict, framework: str) -> bool:
        """Open the run's recorder (unless given one) and watch `model`; True if watched."""
        if self.recorder is None:
            options = dict(self.options)
            meta.update(options.pop("meta", None) or {})
            if self._runs:  # a second training run with this callback: a new run in the same log
                options["mode"] = "a"
            # delta=False: the torch integration computes the update statistics
            self.recorder = Recorder(self.path, every=self.every, meta=meta, delta=False,
                                     framework=framework, **options)
            self._owned = True
            self._runs += 1
        if model is None:
            return False
        if any(torch_dist.shardable(p) for p in model.parameters()):
            self.reporter.once("sharded", f"weighttui: sharded (DTensor) parameters: the {self.trainer_name} "
                               "callback records no statistics of them; use weighttui.torch.watch on every rank "
                               "for their statistics")
            return False
        self.handle = watch(model, self.recorder, grads=self.grads, skip_frozen=self.trainable_only,
                            initial=False, **self.engine_options)
        return True

    def _take_grads(self, step: int, epoch) -> None:
        """Gradients now, for the snapshot of optimizer step `step` if it is due."""
        assert self.recorder is not None and self.handle is not None  # callers check _recording()
        if self.grads and self.recorder.should_record(step, epoch):
            self.handle.take_grads()  # on the device, until the step's snapshot

    def _record_at(self, step: int, epoch) -> None:
        assert self.recorder is not None and self.handle is not None  # callers check _recording()
        due = self.recorder.should_record(step, epoch)
        full = self.recorder.wants_full(step, epoch)
        if due or full:
            self.handle.record(step, epoch=epoch, full=full)

    def _epoch_end(self, step: int, epoch) -> None:
        """The trainer's epoch `epoch` ended after optimizer step `step`: its complete
        values if `full_epochs` chose it (docs/core.md, "Epochs")."""
        if self.handle is not None:
            self.handle.step_count = int(step)
            self.handle.end_epoch(epoch)

    def _finish(self, status: str = "finished", *, step: int | None = None, epoch=None,
                error=None) -> None:
        """Training ended (at optimizer step `step` in `epoch`): the torch handle takes
        a last snapshot and ends the epoch in progress when it finished; then close."""
        if self.handle is not None:
            if step is not None:
                self.handle.step_count = int(step)
                self.handle.epoch = None if epoch is None else int(epoch)
            self.handle.close(status)  # hooks and device copies; the recorder is closed below
            self.handle = None
        if self._owned and self.recorder is not None:
            self.recorder.close(status=status, error=error)
            self.recorder = None
            self._owned = False
