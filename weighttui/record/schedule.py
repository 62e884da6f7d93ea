"""Which calls record a snapshot, which store complete values, which tensors are recorded.

A `Schedule` needs no log: the recorder asks it, and so do the ranks of a
sharded run that compute their part of each snapshot without writing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

import numpy as np

EpochPredicate = Callable[[int | None], bool]


def epoch_selector(value, what: str) -> EpochPredicate | None:
    """None, an int N (every N), or a collection of ints -> predicate on epoch/step."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{what} must be None, an int or a list of ints")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}")
        n = int(value)
        return lambda e: e is not None and e % n == 0
    try:
        chosen = frozenset(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{what} must be None, an int or a list of ints") from None
    return lambda e: e is not None and e in chosen


def glob_patterns(value: str | Iterable[str] | None, what: str) -> list[str] | None:
    """None, one glob pattern or several, as a list."""
    if value is None:
        return None
    pats = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in pats):
        raise TypeError(f"{what} must be a glob pattern or a list of them")
    return pats


class Schedule:
    """`every` / `epochs` pick the recorded calls, `full_every` / `full_epochs` those that
    store complete values, `include` / `exclude` glob patterns the tensors."""

    def __init__(self, *, every: int = 1, epochs=None, full_every: int | None = None,
                 full_epochs=None, include=None, exclude=None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if full_every is not None and (not isinstance(full_every, (int, np.integer)) or full_every < 1):
            raise ValueError(f"full_every must be None or an int >= 1, got {full_every!r}")
        self.every = int(every)
        self.full_every = full_every
        self._epochs = epoch_selector(epochs, "epochs")
        self._full_epochs = epoch_selector(full_epochs, "full_epochs")
        self._full_epochs_given = full_epochs
        self._full_epochs_done: set[int | None] = set()
        self.epochs_seen: set[int] = set()  # epoch numbers the calls carried (for the note at close)
        self._include = glob_patterns(include, "include")
        self._exclude = glob_patterns(exclude, "exclude")
        self.selects_all = self._include is None and self._exclude is None  # selects() is True for any name

    def should_record(self, step: int, epoch: int | None = None) -> bool:
        if self._epochs is not None:
            return self._epochs(epoch) and step % self.every == 0
        return step % self.every == 0

    def full_every_due(self, step: int) -> bool:
        """Complete values by step count alone (full_every); full_epochs aside."""
        return self.full_every is not None and step % self.full_every == 0

    def note_epoch(self, epoch: int | None) -> None:
        """A call (or a handle's set_epoch) said it is in `epoch` (for the note at close)."""
        if epoch is not None:
            self.epochs_seen.add(epoch)

    def wants_full(self, step: int, epoch: int | None = None) -> bool:
        self.note_epoch(epoch)
        # full_epochs are taken when their epoch ends (full_epoch_due / full_epoch_taken)
        return self.full_every_due(step)

    def full_epoch_due(self, epoch: int | None) -> bool:
        """Whether `epoch` is one full_epochs chose and whose values are not taken yet."""
        self.note_epoch(epoch)
        return (self._full_epochs is not None and self._full_epochs(epoch)
                and epoch not in self._full_epochs_done)

    def full_epoch_taken(self, epoch: int | None) -> None:
        self._full_epochs_done.add(epoch)

    def unfired_full_epochs(self, status: str = "finished") -> str | None:
        """At close (the run's end `status`): a note if full_epochs was given but no epoch it chose was
        recorded."""
        if self._full_epochs is None or self._full_epochs_done:
            return None
        begun = sorted(e for e in self.epochs_seen if self._full_epochs(e))
        if begun:  # a chosen epoch began and never ended: its end is what full_epochs stores
            during = {"failed": "the run failed", "interrupted": "the run was interrupted"}.get(status, "the run ended")
            return (f"full_epochs={self._full_epochs_given!r} stored nothing: epoch {begun[0]} was chosen but did "
                    f"not end ({during} during it)")
        if not self.epochs_seen:
            return (f"full_epochs={self._full_epochs_given!r} stored nothing: no call said which epoch it "
                    "was in (pass epoch= to snapshot(); with weighttui.torch call handle.set_epoch(e) or "
                    "handle.end_epoch(e))")
        seen = sorted(self.epochs_seen)
        return (f"full_epochs={self._full_epochs_given!r} stored nothing: the epochs recorded were "
                f"{seen[0]}..{seen[-1]}, none of them chosen")

    def selects(self, name: str) -> bool:
        """Whether include/exclude let this tensor name through."""
        if self._include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self._include):
            return False
        if self._exclude is not None and any(fnmatch.fnmatchcase(name, p) for p in self._exclude):
            return False
        return True
