"""One lazily started worker thread per purpose, shared by the whole process (a viewer of 50 runs
starts one index writer, not 50), and started afresh in a forked child: a child (a DataLoader
worker opening a log) has no thread behind its parent's executor, so work submitted to it would
never run."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class SharedWorker:
    def __init__(self, name: str):
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    @property
    def started(self) -> ThreadPoolExecutor | None:
        """The executor if it was started (None otherwise); for tests."""
        return self._executor

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
            return self._executor

    def _forget(self) -> None:
        self._executor, self._lock = None, threading.Lock()
