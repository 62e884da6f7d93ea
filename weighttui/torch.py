"""`import weighttui.torch as wt; wt.watch(model, "run.sock", optimizer=opt)` (imports torch)."""

from weighttui.integrations.torch import *  # noqa: F403
from weighttui.integrations.torch import DEFAULT_DELTA_BUDGET, WatchHandle, watch

__all__ = ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET"]
