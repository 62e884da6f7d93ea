"""`import weighttui.torch as wt; wt.watch(model, "run.sock", optimizer=opt)` (imports torch)."""

from .integrations.torch import *  # noqa: F401,F403
from .integrations.torch import DEFAULT_DELTA_BUDGET, WatchHandle, watch

__all__ = ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET"]
