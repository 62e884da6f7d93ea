"""`import weighttui.torch as wt; wt.watch(model, "run.sock", optimizer=opt)` (imports torch)."""

from weighttui.integrations.torch import (
    DEFAULT_DELTA_BUDGET,
    ENGINE_OPTIONS,
    WatchHandle,
    split_options,
    watch,
)

__all__ = ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET", "ENGINE_OPTIONS", "split_options"]
