"""`from weighttui.hf import WeightCallback`: see weighttui.integrations.hf."""

from weighttui.integrations.hf import WeightCallback

__all__ = ["WeightCallback"]
