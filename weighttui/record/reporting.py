"""Report each kind of problem once: a line on stderr, and an event record where a log still takes them.

weighttui never raises into the training loop after it has started: the
recorder and every integration hand their failures to a `Reporter` instead,
which tells the person once (not at every step) and lets training go on.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

# event(kind, message, level): records an event in a log; None: stderr only
EventSink = Callable[[str, str, str], None]


class Reporter:
    """Says each problem once per key; `guard` runs a hook with that protection."""

    def __init__(self, event: EventSink | None = None, goes_on: str = "training continues"):
        self._event = event
        self._said: set[str] = set()
        self.goes_on = goes_on  # what a failure message says happens next

    def once(self, key: str, message: str) -> bool:
        """Print `message` on stderr the first time `key` comes; True if it was printed now."""
        if key in self._said:
            return False
        self._said.add(key)
        try:
            print(message, file=sys.stderr, flush=True)
        except Exception:  # a closed or broken stderr must not stop training either
            pass
        return True

    def failure(self, exc: BaseException, doing: str) -> None:
        """A problem with one call: reported once per (doing, kind of exception, message with its numbers
        left out: a step in it does not make it new), the call is skipped. Another cause of the same type
        is said too."""
        if self.once(f"{doing}:{type(exc).__name__}:{re.sub(r'[0-9]+', '#', str(exc))[:200]}",
                     f"weighttui: skipped while {doing}: {type(exc).__name__}: {exc}"):
            self.record_event("recorder_error", f"{doing}: {type(exc).__name__}: {exc}", "error")

    def record_event(self, kind: str, message: str, level: str = "info") -> None:
        """The event record for a report, where there is a log to take it."""
        if self._event is None:
            return
        try:
            self._event(kind, message, level)
        except Exception:  # reporting a problem must never become one
            pass

    def guard(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), or None after reporting what it raised (never into the training loop)."""
        try:
            return fn(*args)
        except Exception as exc:  # the never-raise boundary: every failure is reported instead
            self.failure(exc, doing)
            return None
