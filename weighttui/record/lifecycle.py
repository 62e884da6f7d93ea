"""How a process's recorders end: interpreter exit, an uncaught exception, SIGTERM, fork.

- At interpreter exit every open recorder is closed; its end record says
  `failed` (with the exception's type and message) after an uncaught
  exception, `interrupted` after KeyboardInterrupt, else `finished`.
- SIGTERM (kill, timeout, SLURM preemption, a container stop), where the
  program left SIGTERM at its default: every open recorder flushes its queue
  for at most SIGTERM_FLUSH_SECONDS and closes its log as `interrupted`; then
  the default action runs (the process ends by SIGTERM, as it would have). A
  handler the program installed itself is left alone: that program ends its
  own way, and the recorders close at exit.
- A forked child (DataLoader workers, multiprocessing) inherits the parent's
  recorders but never writes to their logs, and its close() returns at once:
  only the process that opened a log writes it.
- `os._exit()` and SIGKILL run none of this: what was queued but not yet
  written is lost, and the log has no end record (readers show it
  `unfinished`; every frame written before is intact).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

from weighttui.record import logfile

SIGTERM_FLUSH_SECONDS = 10.0

_live: dict[int, Any] = {}  # id -> Recorder, open in this process (strong: closed at exit)
# integration handles (weighttui.torch's WatchHandle) closed at exit before their recorders,
# so that the end of training is recorded even without handle.close()
_handles: list[weakref.ref] = []
_live_lock = threading.RLock()
_uncaught: list[BaseException] = []
_installed = False


def register(recorder) -> None:
    """Track an open recorder (closed at exit, on SIGTERM; forgotten in a forked child)."""
    _install()
    with _live_lock:
        _live[id(recorder)] = recorder


def register_handle(handle) -> None:
    """An object with close(status, error) to close at interpreter exit, before the recorders."""
    _install()
    with _live_lock:
        _handles[:] = [r for r in _handles if r() is not None]
        _handles.append(weakref.ref(handle))


def unregister(recorder) -> None:
    with _live_lock:
        _live.pop(id(recorder), None)


def exit_status() -> tuple[str, BaseException | None]:
    """How the interpreter is ending: (status, the uncaught exception or None)."""
    if not _uncaught:
        return "finished", None
    exc = _uncaught[-1]
    return ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), exc


def _install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        _uncaught.append(exc if exc is not None else exc_type())
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    import atexit

    atexit.register(_close_all_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _install_sigterm()


def _install_sigterm() -> None:
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals cannot be handled from here
        pass


def _open_recorders() -> list:
    with _live_lock:
        return list(_live.values())


def _close_all_at_exit() -> None:
    status, exc = exit_status()
    with _live_lock:
        handles = [h for h in (r() for r in _handles) if h is not None]
    for handle in handles:
        try:
            handle.close(status, exc)
        except Exception:  # the interpreter is ending: the recorders still get closed
            pass
    for rec in _open_recorders():
        rec.close(status=status, error=exc)


def _on_sigterm(signum, frame) -> None:
    deadline = time.monotonic() + SIGTERM_FLUSH_SECONDS
    for rec in _open_recorders():
        try:
            rec.close(status="interrupted", error=("SIGTERM", "terminated by signal 15 (SIGTERM)"),
                      deadline=deadline)
        except Exception:  # the process is ending: nothing may stop that
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    global _live_lock
    # not acquired: another thread of the parent may have held it at the fork
    _live_lock = threading.RLock()
    recorders = list(_live.values())
    _live.clear()
    _handles.clear()
    for rec in recorders:
        rec._forked()
    logfile.forget_all()
