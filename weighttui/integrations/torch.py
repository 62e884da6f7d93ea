"""PyTorch: `watch(model, "run.sock", optimizer=opt)` and training is recorded.

With an optimizer, weighttui hooks its step (register_step_pre_hook /
register_step_post_hook): gradient statistics are taken just before the step,
weight and update (delta) statistics just after it, so the training loop stays
as it was. Without one, call `handle.step()` after each optimizer step.

Which tensors are recorded is torch_plan's, which code computes their rows
torch_rows' (the fused CPU kernel or torch_stats' device ops), what leaves the
device torch_host's (one device-to-host copy per snapshot); the blocks go to
Recorder.submit(), whose writer thread encodes and writes them. After watch()
returns, no exception from weighttui reaches the training loop: failures are
reported once and the snapshot is skipped.
"""

from __future__ import annotations

import sys
import time
import weakref

import numpy as np
import torch

from weighttui.integrations import torch_dist, torch_host, torch_native
from weighttui.integrations.torch_instruments import TorchInstruments, first_nonfinite
from weighttui.integrations.torch_plan import TensorPlan, unwrap
from weighttui.integrations.torch_rows import RowRouter
from weighttui.integrations.torch_shard_instruments import ShardInstruments
from weighttui.integrations.torch_stats import (
    N_RAW,
    DeviceStats,
    exact_delta_rows,
    hist_parts,
    remember_sumsq,
    sumsq,
    weight_rows,
)
from weighttui.log.format import FrameType
from weighttui.record import instruments as inst
from weighttui.record import lifecycle
from weighttui.record.device_instruments import assemble
from weighttui.record.recorder import Recorder, end_of
from weighttui.record.registry import DEFAULT_SAMPLE, Registry
from weighttui.record.reporting import Reporter
from weighttui.record.schedule import Schedule
from weighttui.record.stats import DEFAULT_BINS, DELTA_STATS, WEIGHT_STATS, Block, delta_stats

__all__ = ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET", "ENGINE_OPTIONS", "split_options"]

# delta="auto": exact previous copies are kept while they fit this many bytes
# on each device; tensors past the budget get deltas from their sampled elements.
DEFAULT_DELTA_BUDGET = 1 << 30

# watch() options that belong to the statistics engine, not to the Recorder:
# trainer callbacks that create the Recorder themselves take them apart.
ENGINE_OPTIONS = ("delta", "delta_budget_bytes", "hist_sample", "buffers", "cpu_kernel", "instruments")

# Recorder options that the ranks of a sharded run which do not write still need
_SCHEDULE_OPTIONS = ("epochs", "full_every", "full_epochs", "include", "exclude")


def split_options(options: dict) -> tuple[dict, dict]:
    """(watch() keyword arguments, Recorder keyword arguments) from one dict."""
    engine = {k: v for k, v in options.items() if k in ENGINE_OPTIONS}
    return engine, {k: v for k, v in options.items() if k not in ENGINE_OPTIONS}


class ScheduleOnly:
    """What a rank of a sharded run that does not write needs of a Recorder: the
    schedule (every rank takes the same snapshots, their collectives match), a
    registry (the same sample indices) and the bin count."""

    def __init__(self, every: int, options: dict):
        self.schedule = Schedule(every=every, **{k: options[k] for k in _SCHEDULE_OPTIONS if k in options})
        self.registry = Registry(int(options.get("sample", DEFAULT_SAMPLE)))
        self.bins = int(options.get("bins", DEFAULT_BINS))


class WatchHandle:
    """What watch() returns: step(), scalars(), set_epoch(), end_epoch(), close()."""

    def __init__(self, model, recorder, *, optimizer, grads, buffers, delta, delta_budget_bytes,
                 skip_frozen, hist_sample, scaler, owns_recorder, writer, cpu_kernel="fused",
                 schedule_only: ScheduleOnly | None = None, instruments="default"):
        self.model = model
        self.recorder = recorder
        self.optimizer = optimizer
        self.grads = bool(grads)
        self.buffers = bool(buffers)
        self.delta = delta
        self.delta_budget_bytes = int(delta_budget_bytes)
        self.skip_frozen = bool(skip_frozen)
        self.step_count = 0
        self.epoch: int | None = None
        self._epoch_over = False  # end_epoch() ended self.epoch: the next step is the next epoch's
        self._grads_after = False  # this optimizer step runs a closure: its gradients come after it
        self.writer = writer  # this rank writes (rank 0)
        self._owns = owns_recorder
        self._closed = False
        self._hooks: list = []
        self._prev: dict[str, torch.Tensor] = {}
        self._prev_sumsq: dict[str, float] = {}
        self._sample_prev: dict[str, np.ndarray] = {}
        self._grad_pending = None
        self._copied: set[str] = set()  # previous copies the fused kernel moved to this snapshot
        self._values_step = None
        self._last_snap_step: int | None = None  # step of the latest snapshot taken
        self._marked = False  # end_epoch()/set_epoch() say when epochs end
        self._epoch_keep: tuple | None = None  # (step, epoch, entries, device copies): see _keep_epoch_copy
        self._stepped = False
        self._scaler: tuple | None = None  # (the GradScaler, our step, our update): see _unwrap_scaler
        self._scaler_pending = False
        # a Recorder, or the schedule alone (sharded ranks that do not write)
        self.schedule: Recorder | Schedule | None = recorder
        registry = recorder.registry if recorder is not None else None
        bins = recorder.bins if recorder is not None else DEFAULT_BINS
        if recorder is None and schedule_only is not None:
            self.schedule, registry, bins = schedule_only.schedule, schedule_only.registry, schedule_only.bins
        self.reporter = recorder.reporter if recorder is not None and writer else Reporter()
        sharded = any(torch_dist.shardable(p) for p in model.parameters())
        reducer = None
        if sharded:
            mesh = next(p.device_mesh for p in model.parameters() if torch_dist.shardable(p))
            reducer = torch_dist.ShardReducer(mesh.get_group())
        self.sharded = sharded
        # instruments (docs/instruments.md); not across the shards of a sharded run
        chosen, settings = inst.parse_options(instruments)
        self.instruments = TorchInstruments(chosen if not sharded else (), settings,
                                            budget_bytes=self.delta_budget_bytes)
        # across the shards: every rank computes its part (torch_shard_instruments.py)
        self.shard_instruments = ShardInstruments(chosen, reducer.group, settings,
                                                  reporter=self.reporter if writer else None) \
            if reducer is not None and chosen else None
        self.engine = DeviceStats(bins, hist_sample=hist_sample, reducer=reducer)
        self.router = RowRouter(self.engine, cpu_kernel=cpu_kernel, sharded=sharded)
        self.cpu_kernel = self.router.cpu_kernel
        self.active = self.schedule is not None
        if self.schedule is None or registry is None:
            return
        self.plan = TensorPlan(model, selects=self.schedule.selects, registry=registry,
                               buffers=self.buffers, skip_frozen=self.skip_frozen, sharded=sharded,
                               delta=delta, delta_budget_bytes=delta_budget_bytes,
                               forget=self._forget_prev, skipped=self._skip_tensor)
        if optimizer is not None:
            self._hooks.append(optimizer.register_step_pre_hook(self._pre_hook))
            self._hooks.append(optimizer.register_step_post_hook(self._post_hook))
        if scaler is not None:
            self._wrap_scaler(scaler)

    def _skip_tensor(self, name: str, why: str) -> None:
        if self.recorder is not None:  # (a sharded run's other ranks: rank 0 says it)
            self.recorder.skip_tensor(name, why)

    # ---------------------------------------------------------------- public

    def step(self, epoch=None, scalars=None, *, step=None, batch=None) -> bool:
        """Count one training step (call after optimizer.step()) and record it when due.

        With an optimizer given to watch(), the hooks count steps; step() then
        only sets the epoch and records scalars. Returns True if a snapshot was taken.
        """
        try:
            if epoch is not None:
                # a new epoch number: the previous epoch ended before this step's update
                self._epoch_changes_to(int(epoch), moved=True)
            if not self.active:
                return False
            if self.optimizer is not None:
                if scalars:
                    self._scalars(self.step_count, scalars)
                return False
            s = self._count_step(step)
            full = self._full_due(s)
            taken = False
            if self._due(s) or full:
                grad = self._grad_stats() if self.grads else None
                taken = self._snapshot(s, grad, full=full, batch=batch, scalars=scalars)
            elif scalars:
                self._scalars(s, scalars)
            self._keep_epoch_copy(s)  # this step may be the last of its epoch
            return taken
        except Exception as exc:
            self._fail_soft(exc, "taking a snapshot")
            return False

    def take_grads(self) -> None:
        """Gradient statistics of the gradients as they are now (kept on the device
        and stored with the next record()): for trainers whose hooks see gradients
        at another moment than the updated weights (Hugging Face, Lightning)."""
        try:
            self._grad_pending = self._grad_stats() if self.grads and self.active else None
        except Exception as exc:
            self._grad_pending = None
            self._fail_soft(exc, "taking gradient statistics")

    def record(self, step: int, *, epoch=None, full: bool | None = None, scalars=None, batch=None) -> bool:
        """A snapshot at the caller's own step counter (weights, deltas since the
        previous one, the gradients of take_grads() if any); `full` stores complete
        values (None: when `full_every` says so). Returns True if it was taken."""
        grad, self._grad_pending = self._grad_pending, None
        try:
            if epoch is not None:
                self.epoch, self._epoch_over = int(epoch), False
            self._count_step(step)
            if not self.active:
                return False
            if full is None:
                full = self._full_due(self.step_count)
            return self._snapshot(self.step_count, grad, full=bool(full), batch=batch, scalars=scalars)
        except Exception as exc:
            self._fail_soft(exc, "taking a snapshot")
            return False

    def scalars(self, **values) -> None:
        """Named numbers (loss, learning rate ...) at the current step."""
        if self.active:
            self._scalars(self.step_count, values)

    def set_epoch(self, epoch) -> None:
        """Tag the snapshots that follow with this epoch (call it before the epoch's
        first step): a new number also ends the previous epoch, whose complete
        values are taken now if `full_epochs` chose it."""
        try:
            self._marked = True
            epoch = None if epoch is None else int(epoch)
            if self.schedule is not None:
                self.schedule.note_epoch(epoch)
            self._epoch_changes_to(epoch, moved=False)
        except Exception as exc:
            self._fail_soft(exc, "recording complete values")

    def end_epoch(self, epoch=None, scalars=None) -> None:
        """Mark the end of an epoch: records scalars, and complete values when
        `full_epochs` chose this epoch (taken now, as they stand at the epoch's end)."""
        try:
            self._marked = True
            if epoch is not None:
                self.epoch = int(epoch)
            if scalars and self.active:
                self._scalars(self.step_count, scalars)
            self._epoch_ended(self.epoch)
            self._epoch_over = self.epoch is not None
        except Exception as exc:
            self._fail_soft(exc, "recording complete values")

    def _count_step(self, step: int | None = None) -> int:
        """One training step more (or the caller's own step number): after end_epoch(N), the first step
        is epoch N+1's, and the snapshots from it on say so."""
        if self._epoch_over:
            self._epoch_over = False
            if self.epoch is not None:
                self.epoch += 1
        self.step_count = int(step) if step is not None else self.step_count + 1
        return self.step_count

    # One rule for every way of marking epochs (docs/core.md, "Epochs"): the
    # complete values of epoch N are the weights when N has ended, after its last
    # optimizer step, stored with that step and epoch N.

    def _epoch_changes_to(self, new, *, moved: bool) -> None:
        """The epoch number changes: the previous epoch has ended. `moved`: an
        optimizer step of the new epoch has happened already (step(epoch=)), so
        its end is the copy _keep_epoch_copy kept."""
        old, self.epoch = self.epoch, new
        self._epoch_over = False  # (an epoch the caller names)
        if old is not None and new != old:
            self._epoch_ended(old, kept=moved)

    def _epoch_ended(self, epoch, *, kept: bool = False) -> None:
        sched = self.schedule
        if sched is None or not (self.active or self.sharded) or not sched.full_epoch_due(epoch):
            return
        if kept:
            keep, self._epoch_keep = self._epoch_keep, None
            if keep is None or keep[1] != epoch:  # sharded: no copies are kept
                self.reporter.once("epoch_end_unknown", (
                    f"weighttui: complete values of epoch {epoch} not stored: its end was marked only by "
                    "the next epoch's step(epoch=); call handle.end_epoch() at the end of each epoch"))
                return
            step, _epoch, entries, copies = keep
            if self.writer:
                self.recorder.submit_values(step, [e.info for e in entries],
                                            [torch_host.host_value(c) for c in copies], epoch=epoch)
        elif self._values_step != self.step_count:
            self._write_values(self.step_count, self.plan.current(), epoch=epoch)
        sched.full_epoch_taken(epoch)

    def _keep_epoch_copy(self, step: int) -> None:
        """Epochs marked by step(epoch=) alone: weighttui learns that epoch N ended
        only after the first update of N+1. While a chosen epoch runs, a device
        copy of the weights after each step is kept (one model's memory) to have
        them then. end_epoch()/set_epoch() make this unnecessary."""
        sched = self.schedule
        if self._marked or self.sharded or sched is None or not sched.full_epoch_due(self.epoch):
            return
        entries = self.plan.current()
        keep = self._epoch_keep
        with torch.no_grad():
            if keep is not None and keep[2] == entries:
                torch._foreach_copy_(keep[3], [e.tensor.detach() for e in entries])
                copies = keep[3]
            else:
                copies = [e.tensor.detach().clone() for e in entries]
        self._epoch_keep = (step, self.epoch, entries, copies)

    def close(self, status: str = "finished", error=None) -> None:
        """Training ended: a last snapshot if the last step was not recorded, the
        epoch in progress ended (complete values if `full_epochs` chose it); remove
        the hooks; close the recorder if watch() opened it. Idempotent."""
        if self._closed:
            return
        if status == "finished":
            self._finish_training()
        self._closed = True
        for h in self._hooks:
            try:
                h.remove()
            except Exception:  # a hook torch already dropped: nothing left to remove
                pass
        self._hooks.clear()
        self._unwrap_scaler()
        self._prev.clear()
        self.instruments.clear()
        if self.shard_instruments is not None:
            self.shard_instruments.clear()
        self.engine.scratch.clear()
        self._epoch_keep = None
        if self._owns and self.recorder is not None:
            self.recorder.close(status=status, error=error)
        self.active = False

    def _finish_training(self) -> None:
        try:
            writable = self.recorder is None or self.recorder.active  # not in a forked child
            if self.active and writable and (self._last_snap_step is None
                                             or self.step_count > self._last_snap_step):
                # the gradients still held are the last step's (loops zero them before backward)
                self._snapshot(self.step_count, self._grad_stats() if self.grads else None)
        except Exception as exc:
            self._fail_soft(exc, "taking the final snapshot")
        try:
            self._epoch_ended(self.epoch)
        except Exception as exc:
            self._fail_soft(exc, "recording complete values")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(*end_of(exc_type, exc))
        return False

    # ----------------------------------------------------------------- hooks

    def _pre_hook(self, optimizer, args, kwargs):
        try:
            self._keep_epoch_copy(self.step_count)  # the weights before this update: maybe an epoch's end
            self._grad_pending = None
            # optimizer.step(closure) (LBFGS, and loops written for it) computes the gradients inside the
            # step: they are there only after it (the post hook reads them), .grad before is the last step's
            # (the hook's args are step's: the optimizer itself, then the closure if given positionally)
            closure = args[1] if len(args) > 1 else kwargs.get("closure")
            self._grads_after = closure is not None
            s = self.step_count + 1
            if self.grads and self.active and self._due(s) and not self._grads_after:
                with np.errstate(all="ignore"):  # as in _snapshot
                    self._grad_pending = self._grad_stats()
        except Exception as exc:
            self._grad_pending = None
            self._fail_soft(exc, "taking gradient statistics")

    def _post_hook(self, optimizer, args, kwargs):
        try:
            self._stepped = True
            s = self._count_step()
            grad, self._grad_pending = self._grad_pending, None
            if not self.active:
                return
            full = self._full_due(s)
            if self._due(s) or full:
                if self._grads_after and self.grads:  # the closure's gradients (the last evaluation's)
                    with np.errstate(all="ignore"):
                        grad = self._grad_stats()
                self._snapshot(s, grad, full=full)
        except Exception as exc:
            self._fail_soft(exc, "taking a snapshot")

    # ----------------------------------------------------------------- AMP

    def _wrap_scaler(self, scaler) -> None:
        """GradScaler.step skips optimizer.step when gradients hold inf/NaN; our
        hooks then never run. Wrapping step/update (instance attributes, removed
        on close) tells skipped steps apart and records them as events."""
        orig_step, orig_update = scaler.step, scaler.update

        def step(optimizer, *args, **kwargs):
            self._scaler_pending = optimizer is self.optimizer
            self._stepped = False
            return orig_step(optimizer, *args, **kwargs)

        def update(*args, **kwargs):
            skipped = self._scaler_pending and not self._stepped
            self._scaler_pending = False
            before = None
            if skipped:
                try:
                    before = scaler.get_scale()
                except Exception:  # the event is still recorded, without the scale
                    pass
            out = orig_update(*args, **kwargs)
            if skipped:
                try:
                    after = scaler.get_scale()
                    self._skipped_event(before, after)
                except Exception as exc:
                    self._fail_soft(exc, "recording a skipped step")
            return out

        scaler.step, scaler.update = step, update
        self._scaler = (scaler, step, update)

    def _unwrap_scaler(self) -> None:
        if self._scaler is None:
            return
        scaler, step, update = self._scaler
        for attr, ours in (("step", step), ("update", update)):
            if scaler.__dict__.get(attr) is ours:
                del scaler.__dict__[attr]
        self._scaler = None

    def _skipped_event(self, before, after) -> None:
        if self.recorder is None or not self.active:
            return
        self.recorder.event(
            "skipped_step",
            f"GradScaler skipped the optimizer step after step {self.step_count}: inf/NaN gradients; "
            f"loss scale {before:g} -> {after:g}" if before is not None else
            f"GradScaler skipped the optimizer step after step {self.step_count}: inf/NaN gradients",
            level="warning", step=self.step_count)

    def _due(self, s: int) -> bool:
        return self.schedule is not None and self.schedule.should_record(s, self.epoch)

    def _forget_prev(self, name: str) -> None:
        """The plan dropped `name`: its previous copy goes too."""
        self._prev.pop(name, None)

    def _full_due(self, s: int) -> bool:
        """full_every steps; full_epochs are taken when their epoch ends."""
        if self.schedule is None or (self.recorder is not None and not self.recorder.active):
            return False
        every = self.schedule.full_every
        return every is not None and s % every == 0

    def _scalars(self, step: int, scalars: dict) -> None:
        if self.recorder is not None:
            self.recorder.scalars(step, epoch=self.epoch, **scalars)

    def _fail_soft(self, exc: BaseException, doing: str) -> None:
        """Report once per kind of failure; training goes on."""
        self.reporter.failure(exc, doing)

    # ------------------------------------------------------------- statistics

    def _grad_stats(self):
        """Rows of the gradients now: the fused kernel's on the host, the rest kept
        on the device until the snapshot's one copy."""
        entries = self.plan.current()
        rows, grads = [], []
        for i, e in enumerate(entries):
            g = e.local_grad()
            if g is None:
                continue
            rows.append(i)
            grads.append(g)
        if not rows and not self.sharded:
            return None
        # the instruments' reads of the gradients go into the kernel's passes where it takes them
        extras = self.instruments.take_grads(entries, rows, grads, self.router) if self.instruments else None
        if self.shard_instruments is not None:
            self.shard_instruments.take_grads(entries, rows, grads)
        out = self.router.rows(grads, extras=extras)[0]
        if extras is not None:
            self.instruments.grads_done()
        return entries, rows, out

    def _snapshot(self, step, grad_part, *, full=False, batch=None, scalars=None) -> bool:
        self._copied = set()
        try:
            # a caller's np.seterr(all="raise") or -W error does not cost the snapshot (the instruments'
            # numpy parts on a diverging run), and no RuntimeWarning reaches the caller (per thread)
            with np.errstate(all="ignore"):
                return self._take(step, grad_part, full=full, batch=batch, scalars=scalars)
        except BaseException:
            self._forget_copied()
            raise

    def _take(self, step, grad_part, *, full, batch, scalars) -> bool:
        entries = self.plan.current()
        if not entries:
            return False
        self._last_snap_step = step
        t_count = len(entries)
        xs = [e.local() for e in entries]
        d_rows = [i for i, e in enumerate(entries) if e.exact and e.name in self._prev]
        prevs: list[torch.Tensor | None] | None = None
        if d_rows:
            prevs = [None] * t_count
            for i in d_rows:
                prevs[i] = self._prev[entries[i].name]
        ins = self.instruments if self.writer else None
        # before the fused kernel copies x into prev as it computes the delta (see _after)
        pend = ins.start(entries, xs, prevs, self.optimizer, self.router) if ins else None
        sh = self.shard_instruments
        spend = sh.start(entries, xs, prevs, self.optimizer) if sh is not None else None
        extras = [pend.extras.get(i) for i in range(t_count)] if pend is not None and pend.extras else None
        w, d, copied = self.router.rows(xs, prevs, extras=extras)
        if pend is not None and ins is not None:
            ins.after_kernel(pend, entries, xs, prevs)
        self._copied = {entries[i].name for i in copied}
        sample_vec, _count = torch_host.device_samples(entries, xs, sharded=self.sharded)
        if sample_vec is not None and self.sharded:
            sample_vec = self.engine.reducer.sum_vector(sample_vec)
        g = grad_part[2] if grad_part is not None and grad_part[0] is entries else None

        # one device-to-host copy per device for everything above
        pending = [r for r in (w, d, g) if r is not None]
        host = torch_host.to_host([p for r in pending for p, _ in r.parts]
                        + ([sample_vec] if sample_vec is not None else [])
                        + (pend.parts if pend is not None else [])
                        + (spend.host if spend is not None else []))
        k = 0
        for r in pending:
            k = r.fill(host, k)
        samples = host[k] if sample_vec is not None else None
        inst_host = host[k + (sample_vec is not None):]
        if spend is not None:
            shard_host = inst_host[len(inst_host) - len(spend.host):]

        # the rare masked pass: tensors holding NaN/Inf (or float32 overflow)
        for r in pending:
            self.router.redo(r)
        bins = self.engine.bins
        raw_w = w.raw
        raw_d = d.raw if d is not None else np.zeros((0, N_RAW + bins))
        raw_g = g.raw if g is not None else None

        values = self._values(entries) if full else None  # a collective when sharded
        shard_out = origin = None
        if sh is not None and spend is not None:  # every rank (their commits, the origin's collectives)
            shard_out = sh.finish(spend, shard_host, entries, np.sqrt(sumsq(raw_w)), write=self.writer)
            origin = sh.origin(entries, xs, raw_w, raw_g, grad_part[1] if raw_g is not None else None,
                               sh.optim_bad, self.optimizer)
        if not self.writer:
            self._after(entries, xs, raw_w, samples)
            return False
        weights = Block(WEIGHT_STATS, weight_rows(raw_w), hist_parts(raw_w, bins))
        delta = self._delta_block(entries, d_rows, raw_d, samples)
        grad = None
        if raw_g is not None:
            gs = np.full((t_count, len(WEIGHT_STATS)), np.nan)
            glo, ghi = np.full(t_count, np.nan), np.full(t_count, np.nan)
            gc = np.zeros((t_count, bins), dtype=np.uint32)
            rows = grad_part[1]
            gs[rows] = weight_rows(raw_g)
            glo[rows], ghi[rows], gc[rows] = hist_parts(raw_g, bins)
            grad = Block(WEIGHT_STATS, gs, (glo, ghi, gc))
        infos = [e.info for e in entries]
        optim, frames, units = None, [], None
        if pend is not None and ins is not None:
            wcols, dcols, optim = ins.finish(pend, inst_host, entries, weights.stats[:, WEIGHT_STATS.index("norm")],
                                             self.optimizer)
            unit_result = None
            if "units" in ins.chosen:
                wu, gu, units, unit_events = ins.units.update(infos, *ins.unit_norms)
                unit_result = (wu, gu)
                frames += [(FrameType.EVENT, {**ev, "step": int(step), "time": time.time()}) for ev in unit_events]
            weights, delta, grad = assemble(ins.chosen, weights, delta, grad, wcols, dcols, ins.alpha_col, unit_result)
            if "nan_origin" in ins.chosen:
                frames += self._origin(step, entries, xs, {"weights": weights, "delta": delta, "grad": grad,
                                                           "optim": optim})
        if sh is not None and shard_out is not None:
            weights, delta, grad, optim, units, more = self._shard_columns(step, sh, shard_out, origin, infos,
                                                                         weights, delta, grad)
            frames += more
        self._after(entries, xs, raw_w, samples)
        ok = self.recorder.submit(step, infos, weights, epoch=self.epoch, batch=batch, delta=delta,
                                  grad=grad, sample=None if samples is None else samples.astype(np.float32),
                                  values=values, scalars=scalars, optim=optim, units=units, extra_frames=frames)
        if full:
            self._values_step = step
        return ok

    def _shard_columns(self, step, sh, shard_out, origin, infos, weights, delta, grad):
        """A sharded run's instrument columns (rank 0), from ShardInstruments.finish()."""
        w, dcols, alpha, optim, wu, gu = shard_out
        frames, units, unit_result = [], None, None
        if "units" in sh.chosen:
            wcount, gcount, units, events = sh.units.update(infos, wu, gu)
            unit_result = (wcount, gcount)
            frames += [(FrameType.EVENT, {**ev, "step": int(step), "time": time.time()}) for ev in events]
        weights, delta, grad = assemble(sh.chosen, weights, delta, grad, w, dcols, alpha, unit_result)
        if origin is not None:
            at = origin

            def locate(kind, row):  # found by every rank together in ShardInstruments.origin
                return at[2] if (kind, row) == at[:2] else None

            frames = self.recorder.origin_frames(step, infos, {"weights": weights, "delta": delta, "grad": grad,
                                                               "optim": optim}, locate) + frames
        return weights, delta, grad, optim, units, frames

    def _origin(self, step, entries, xs, blocks) -> list:
        """A nan_origin event for the first snapshot that holds a non-finite value."""
        def locate(kind, row):
            e = entries[row]
            if kind == "grad":
                return first_nonfinite(e.local_grad())
            if kind == "optim":
                state = self.optimizer.state.get(e.tensor, {}) if self.optimizer is not None else {}
                for key in ("exp_avg", "momentum_buffer", "exp_avg_sq"):
                    at = first_nonfinite(state.get(key))
                    if at is not None:
                        return at
                return None
            return first_nonfinite(xs[row])

        return self.recorder.origin_frames(step, [e.info for e in entries], blocks, locate)

    def _forget_copied(self) -> None:
        """A snapshot failed after the kernel moved some previous copies to this
        step: drop those copies, so that no delta is measured from a step that
        was not recorded (they are taken afresh at the next snapshot)."""
        for name in self._copied:
            self._prev.pop(name, None)
        self._copied = set()

    def _delta_block(self, entries, d_rows, raw_d, samples):
        if self.delta == "off":
            return None
        t_count = len(entries)
        bins = self.engine.bins
        st = np.full((t_count, len(DELTA_STATS)), np.nan)
        lo, hi = np.full(t_count, np.nan), np.full(t_count, np.nan)
        counts = np.zeros((t_count, bins), dtype=np.uint32)
        if d_rows:
            known = np.array([self._prev_sumsq.get(entries[i].name, np.nan) for i in d_rows])
            st[d_rows] = exact_delta_rows(raw_d, known)
            lo[d_rows], hi[d_rows], counts[d_rows] = hist_parts(raw_d, bins)
        # sampled deltas, from the sampled values on the host
        if samples is not None:
            at = 0
            for i, e in enumerate(entries):
                k = 0 if e.info.sample_index is None else e.info.sample_index.size
                now = samples[at:at + k]
                at += k
                if e.exact or k == 0:
                    continue
                prev = self._sample_prev.get(e.name)
                if prev is not None and prev.shape == now.shape:
                    st[i] = delta_stats(now, prev, exact=False, total=e.info.size)
        any_exact = any(e.exact for e in entries)
        return Block(DELTA_STATS, st, (lo, hi, counts) if any_exact else None)

    def _after(self, entries, xs, raw_w, samples) -> None:
        """Remember what the next snapshot's deltas compare against."""
        remember_sumsq(self._prev_sumsq, [e.name for e in entries], raw_w)
        copies_to, copies_from = [], []
        at = 0
        for e, x in zip(entries, xs, strict=True):
            k = 0 if e.info.sample_index is None else e.info.sample_index.size
            if samples is not None and k:
                self._sample_prev[e.name] = samples[at:at + k].copy()
            at += k
            if not e.exact:
                continue
            if e.name in self._copied:  # the fused kernel copied it already
                continue
            prev = self._prev.get(e.name)
            # (a new dtype, model.to(torch.float64): a copy in it, not the new values rounded into the old one)
            if prev is None or prev.shape != x.shape or prev.device != x.device or prev.dtype != x.dtype:
                self._prev[e.name] = x.detach().clone()
            else:
                copies_to.append(prev)
                copies_from.append(x.detach())
        if copies_to:
            with torch.no_grad():
                torch._foreach_copy_(copies_to, copies_from)

    def _values(self, entries):
        out = []
        for e in entries:
            t = torch_dist.full(e.tensor.detach())
            if not self.writer:
                continue
            out.append(torch_host.host_value(t))
        return out

    def _write_values(self, step, entries, epoch=None) -> None:
        values = self._values(entries)
        if not self.writer or not values:
            return
        self.recorder.submit_values(step, [e.info for e in entries], values,
                                    epoch=self.epoch if epoch is None else epoch)
        self._values_step = step


_live: list[weakref.ref] = []  # handles watch() returned, to find one watching the same model


def _close_earlier_watches(model, optimizer) -> None:
    """watch() again on a model or optimizer that is still watched (a notebook cell
    run twice without close()): two sets of hooks would record every step twice.
    The earlier handle is closed (its hooks removed, its log closed if it owns it)."""
    alive = []
    for ref in _live:
        old = ref()
        if old is None or old._closed:
            continue
        if old.model is model or (optimizer is not None and old.optimizer is optimizer):
            try:
                print("weighttui: warning: this model or optimizer was already watched (watch() called "
                      "again without handle.close()): closing the earlier watch and removing its hooks",
                      file=sys.stderr, flush=True)
                old.close("interrupted")
            except Exception:  # a broken old handle must not stop the new watch
                pass
            continue
        alive.append(ref)
    _live[:] = alive


def watch(model, path_or_recorder, *, optimizer=None, every: int = 1, grads: bool = True,
          buffers: bool = False, delta="auto", delta_budget_bytes: int = DEFAULT_DELTA_BUDGET,
          skip_frozen: bool = False, hist_sample: int | str | None = "auto", scaler=None,
          initial: bool = True, cpu_kernel: str = "fused", instruments="default",
          **recorder_options) -> WatchHandle:
    """Record a torch module's weights, gradients and updates while it trains.

    model: an nn.Module (DistributedDataParallel and torch.compile wrappers are
      unwrapped; FSDP2 `fully_shard` DTensor parameters are reduced across ranks).
    path_or_recorder: a run log path (opened by watch, closed by handle.close()),
      or a weighttui.Recorder you own (`recorder_options` must then be empty).
    optimizer: hook its step(): no change to the loop. Without it call
      handle.step() after each optimizer step.
    every: record every N steps (more Recorder options: epochs, bins, sample,
      full_every, full_epochs, include, exclude, meta, mode ...).
    grads: gradient statistics (taken before the optimizer step).
    buffers: also record buffers (BatchNorm running statistics ...), trainable=False.
    delta: "auto" (exact copies within delta_budget_bytes per device, sampled
      elements beyond), "exact", "sample" or "off".
    skip_frozen: leave out parameters with requires_grad=False (else recorded
      with trainable=False).
    hist_sample: histogram at most about this many elements of each tensor (a
      deterministic subsample; the statistics stay exact). None: every element.
      "auto" (default): every element, except CPU tensors that the fused kernel
      cannot take (see cpu_kernel) over 65,536 elements, binned from a sample of
      that size.
    cpu_kernel: "fused" (default): contiguous float32/float16/bfloat16 CPU
      tensors with finite values go through weighttui's C kernel (two passes per
      tensor for everything, when it is built: weighttui.integrations.torch_native);
      "torch": torch ops only.
    scaler: a torch.amp.GradScaler; steps it skips are recorded as events.
    initial: record the weights as they are when watch() is called (step 0).
    instruments: "default" (optimizer state, where a NaN began, per-unit norms: within
      the noise of a snapshot's cost), True (all), False, some of "sigma", "dist_init",
      "cos", "optim", "nan_origin", "units", "alpha" (spectral norms, distance from
      initialisation, update cosines, ...), or a dict of those names -> bool and
      settings cos_sample / block / warmup (docs/instruments.md).

    In a distributed run only rank 0 writes; pass the same arguments on every rank.
    """
    if delta not in ("auto", "exact", "sample", "off", True, False):
        raise ValueError(f"delta must be 'auto', 'exact', 'sample' or 'off', got {delta!r}")
    delta = {True: "exact", False: "off"}.get(delta, delta)
    if not (hist_sample is None or hist_sample == "auto"
            or (isinstance(hist_sample, int) and not isinstance(hist_sample, bool) and hist_sample >= 1)):
        raise ValueError(f"hist_sample must be None, 'auto' or an int >= 1, got {hist_sample!r}")
    inst.parse_options(instruments)  # a bad name fails here, not in training
    if cpu_kernel not in ("fused", "torch"):
        raise ValueError(f"cpu_kernel must be 'fused' or 'torch', got {cpu_kernel!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    _close_earlier_watches(model, optimizer)
    writer = torch_dist.rank() == 0
    sharded = any(torch_dist.shardable(p) for p in model.parameters())
    owns = not isinstance(path_or_recorder, Recorder)
    if not owns and recorder_options:
        raise TypeError("recorder options go to the Recorder you created, not to watch(): "
                        f"{sorted(recorder_options)}")
    recorder = None
    schedule_only = None
    if writer:
        if owns:
            recorder = Recorder(path_or_recorder, every=every, delta=False,
                                framework=f"torch {torch.__version__}", **recorder_options)
        else:
            recorder = path_or_recorder
    elif sharded:
        # Other ranks of a sharded run compute their shards' part of every
        # snapshot, so they need the schedule and tensor registry, not a log.
        if owns:
            schedule_only = ScheduleOnly(every, recorder_options)
        else:
            recorder = path_or_recorder
    handle = WatchHandle(model, recorder, optimizer=optimizer, grads=grads, buffers=buffers,
                         delta=delta, delta_budget_bytes=delta_budget_bytes, skip_frozen=skip_frozen,
                         hist_sample=hist_sample, scaler=scaler, owns_recorder=owns, writer=writer,
                         cpu_kernel=cpu_kernel, schedule_only=schedule_only, instruments=instruments)
    _live.append(weakref.ref(handle))
    lifecycle.register_handle(handle)  # the end of training recorded at exit without close()
    if (recorder is not None and handle.active and cpu_kernel == "fused" and not torch_native.available()
            and any(p.device.type == "cpu" for p in model.parameters())):
        # why CPU snapshots take the slower path, where `weighttui info` shows it
        recorder.event("cpu_kernel", torch_native.UNAVAILABLE or "", step=0)
    if initial and handle.active:  # whatever `epochs` chooses (the initial weights belong to no epoch), as Keras
        try:
            handle._snapshot(0, None, full=handle._full_due(0))
        except Exception as exc:
            handle._fail_soft(exc, "taking the initial snapshot")
    return handle
