"""`weighttui watch DIR` on a checkpoint directory: import each checkpoint once it is completely written.

A checkpoint file is complete when its size, mtime and inode are the same on
two consecutive polls and on either side of copying it, and its reader opens
the copy (a file that parses only partially is retried on later polls, and
reported after `give_up` tries at one size and time, then read if it changes:
a slow writer's file grows between tries). An HDF5 file whose superblock says
its writer still has it open waits (h5py's flushes leave it parseable at every
stage). Files are read from private copies
(readers.open_reader), never mapped in place: a trainer may rewrite a file in
place (Lightning's last.ckpt), which would kill a process that maps it
(SIGBUS); a file rewritten after it was imported is imported again once
complete (its step must be later than the last one imported). A
Hugging Face `checkpoint-N/` directory when `trainer_state.json` is in it
(the Trainer writes it last) and none of its files changed between two
polls. TensorBoard event files are read incrementally: a torn final record
waits for the next poll, and a step is written once a later step appears or the
files have not grown for tensorboard_events.SETTLED_S.
"""

from __future__ import annotations

import os
import threading

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import SOURCE_WORDS, ImportFileError, Unit, name_numbers
from weighttui.integrations.importers.driver import Importer, Planned, say
from weighttui.integrations.importers.hdf5_file import open_for_writing
from weighttui.integrations.importers.readers import open_reader


def signature(unit: Unit):
    """What changes when the unit's file(s) change (size, mtime, inode); None if it cannot be complete yet."""
    try:
        if unit.kind == "hf_checkpoint":
            if not os.path.exists(os.path.join(unit.path, "trainer_state.json")):
                return None
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(unit.path)
                                if e.is_file()))
        return mapping.signature(os.stat(unit.path))
    except OSError:
        return None


class CheckpointFollower:
    """Polls a directory and appends each new complete checkpoint to a run log, as a live run."""

    def __init__(self, src: str, out: str, *, values: bool = True, report=say, give_up: int = 5):
        from weighttui.integrations.importers.discover import source_kind

        self.src = src
        self.out = out
        self.report = report
        self.give_up = give_up
        self.values = values
        self.kind = source_kind(src)
        self.events = None
        self.importer = None
        if self.kind == "tensorboard":
            from weighttui.integrations.importers.tensorboard_events import EventsImporter

            self.events = EventsImporter(src, out, report=report, watch=True)
        else:
            self.importer = self._checkpoint_importer()
        self.copy_dir = os.path.dirname(os.path.abspath(out))
        self.sigs: dict[str, object] = {}
        self.done: dict[str, object] = {}  # label -> its signature when imported (or given up)
        self.failures: dict[str, tuple[int, object]] = {}  # label -> (failed tries, at this signature)
        self.given_up: set[str] = set()  # labels reported skipped that may still come
        self._where_from: tuple | None = None  # (step_from, epoch_from) of the last import_source event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._told_checkpoints = False

    def _checkpoints_came(self) -> None:
        """Followed as TensorBoard events (all the directory held at the start): when checkpoints appear
        there too (an HF output dir logs to TensorBoard before its first save), follow those instead,
        as a new run of the log, if the events gave no snapshot (histograms) yet; else say once that
        they are not read, rather than leave them unread without a word."""
        from weighttui.integrations.importers.discover import checkpoint_units, source_kind

        try:
            found = checkpoint_units(self.src)
        except (OSError, ImportFileError):
            return
        if not found:
            return
        events = self.events
        assert events is not None
        if events.snapshots == 0:
            events.close("finished")
            self.events = None
            self.kind = source_kind(self.src)
            self.report(f"{self.src}: checkpoints appeared ({found[0].label} ...): following them")
            self.importer = self._checkpoint_importer(mode="a")
            return
        self._told_checkpoints = True
        message = (f"{self.src} now holds checkpoints ({found[0].label} ...), but it is followed as the "
                   "TensorBoard histograms it held when watching began: watch it again (or weighttui import "
                   "it) to read the checkpoints")
        self.report(message)
        events.rec.event("checkpoints_not_followed", message, level="warning")

    def _checkpoint_importer(self, mode: str = "w") -> Importer:
        return Importer(self.out, source=self.src, kind=self.kind, values=self.values, report=self.report, mode=mode,
                        meta={"watch": True, "step_from": "per checkpoint: its metadata, else "
                              "numbers in its name, else its epoch, else the next step (import_source "
                              "events say which)",
                              "epoch_from": "per checkpoint: its metadata, else numbers in its name, else "
                              "not known (import_source events say which)",
                              "scalars_from": "per checkpoint: trainer_state.json log_history, "
                              "or a PyTorch checkpoint dict's numbers (loss ...)"})

    @property
    def snapshots(self) -> int:
        return self.events.snapshots if self.events is not None else self.importer.snapshots  # type: ignore[union-attr]

    def poll(self) -> int:
        """One look at the directory; the number of checkpoints imported."""
        if self.events is not None:
            self._polls += 1
            if self._polls % 5 == 1 and not self._told_checkpoints:
                self._checkpoints_came()  # (a directory walk: not at every poll)
            if self.events is not None:
                return self.events.poll()
        from weighttui.integrations.importers.discover import checkpoint_units

        assert self.importer is not None
        try:
            units = checkpoint_units(self.src)
        except (OSError, ImportFileError):
            return 0
        ready = []
        for unit in units:
            sig = signature(unit)
            if sig is None or self.done.get(unit.label) == sig:
                continue  # not complete yet, or imported and unchanged since
            if self.sigs.get(unit.label) != sig:  # new or still changing: look again next poll
                self.sigs[unit.label] = sig
                continue
            try:
                if unit.kind == "hdf5" and open_for_writing(unit.path):  # (it parses at every flush)
                    raise ImportFileError("its writer still has it open (the HDF5 superblock says so)")
                # a private copy of the file (never the file itself mapped: a trainer may rewrite it in place)
                reader = open_reader(unit, copy_dir=self.copy_dir)
            except Exception as exc:  # ImportFileError, or a library's error on a file cut short
                if not isinstance(exc, ImportFileError):
                    exc = ImportFileError(f"{type(exc).__name__}: {exc}")
                # tries at this same size and time: a file that grows between them is still being written
                tries, at = self.failures.get(unit.label, (0, sig))
                n = tries + 1 if at == sig else 1
                self.failures[unit.label] = (n, sig)
                if n >= self.give_up:
                    self.done[unit.label] = sig
                    self.failures.pop(unit.label, None)
                    self.given_up.add(unit.label)
                    self.importer.skip(unit.label, f"{exc} (unchanged over {n} tries; read again if it changes)")
                continue
            if signature(unit) != sig:  # changed while it was copied: it is not complete, look again
                reader.close()
                self.sigs.pop(unit.label, None)
                continue
            self.failures.pop(unit.label, None)
            ready.append((unit, reader, sig))
        planned = []
        for unit, reader, sig in ready:
            n_step, n_epoch = name_numbers(unit.label)
            meta = reader.meta
            epoch = meta.epoch if meta.epoch is not None else n_epoch
            step = meta.step if meta.step is not None else (n_step if n_step is not None else epoch)
            step_from = "metadata" if meta.step is not None else ("name" if n_step is not None else
                                                                  ("epoch" if epoch is not None else "order"))
            epoch_from = "metadata" if meta.epoch is not None else ("name" if n_epoch is not None else None)
            planned.append((step, unit, reader, epoch, step_from, epoch_from, sig))
        planned.sort(key=lambda x: (x[0] is None, x[0] if x[0] is not None else 0))
        wrote = 0
        for step, unit, reader, epoch, step_from, epoch_from, sig in planned:
            again = unit.label in self.done
            self.done[unit.label] = sig
            if again and step is not None and step == self.importer.last_step:
                reader.close()
                self.importer.skip(unit.label, f"rewritten at step {step}, which is imported already")
                continue
            if step is None:
                last = self.importer.last_step
                step = 0 if last is None else last + 1
            if self.importer.add(Planned(unit, int(step), epoch, step_from, epoch_from), reader=reader):
                wrote += 1
                self._say_where_from(unit.label, step_from, epoch_from)
                if unit.label in self.given_up:  # its import_skipped warning was early: say it came
                    self.given_up.discard(unit.label)
                    message = f"{unit.label}: read after all, once its writer finished it (step {step})"
                    self.report(message)
                    self.importer.rec.event("import_skipped_then_read", message, level="info")
            else:
                reader.close()
        return wrote

    def _say_where_from(self, label: str, step_from: str, epoch_from: str | None) -> None:
        """The log's meta is written before the first checkpoint comes: where steps and epochs come from
        is an info event at the first checkpoint and whenever it changes (import_source)."""
        if (step_from, epoch_from) == self._where_from:
            return
        self._where_from = (step_from, epoch_from)
        assert self.importer is not None
        self.importer.rec.event("import_source", f"from {label} on: steps from {SOURCE_WORDS[step_from]}, epochs from "
                                f"{SOURCE_WORDS[epoch_from or 'unknown']}", level="info")

    # ------------------------------------------------------------- background

    def start(self, interval: float = 1.0) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception as exc:
                    self.report(f"following {self.src} stopped: {type(exc).__name__}: {exc}")
                    return
                self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, name="weighttui-import-follow", daemon=True)
        self._thread.start()

    def stop(self, status: str = "finished") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.events is not None:
            self.events.close(status)
        elif self.importer is not None:
            self.importer.close(status)
