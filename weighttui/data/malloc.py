"""glibc allocator settings for a process weighttui owns (the CLI's, the viewer's).

On another C library (musl, macOS) nothing happens. A library caller's process is never
changed from here: only the commands and apps that own their process call these.
"""

from __future__ import annotations

import ctypes

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def libc_call(name: str, *args: int) -> None:
    """Call a glibc allocator function if this C library has it."""
    try:
        getattr(ctypes.CDLL(None), name)(*args)
    except (OSError, AttributeError):
        pass


def share_malloc_arena() -> None:
    """One malloc arena for every thread of this process.

    glibc gives each thread its own arena and keeps what a thread freed there for reuse: every
    follower thread decodes its log's chunks into its own, so a sweep read run after run held
    each run's high-water mark (5 runs of 100 MB: 220 MB after reading, 75 MB with one arena;
    benchmarks/bench_store_sweep.py --app). The threads take turns under the GIL anyway.
    """
    libc_call("mallopt", _M_ARENA_MAX, 1)


def release_freed_memory() -> None:
    """Hand what reading a run took (chunks, the store's tail) back to the system once it is read."""
    libc_call("malloc_trim", 0)

