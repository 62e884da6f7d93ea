"""Keep weighttui's own failures out of the user's training loop."""

from __future__ import annotations

import sys


class ReportOnce:
    """`guard(doing, fn, *args)` runs fn; an exception is reported once per `doing` and swallowed."""

    def __init__(self):
        self._reported: set[str] = set()

    def __call__(self, doing: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # never into the training loop
            if doing not in self._reported:
                self._reported.add(doing)
                print(f"weighttui: skipped while {doing}: {type(exc).__name__}: {exc}", file=sys.stderr)
