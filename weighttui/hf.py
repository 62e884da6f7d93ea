"""`from weighttui.hf import WeightCallback`: see weighttui.integrations.hf."""

from .integrations.hf import WeightCallback

__all__ = ["WeightCallback"]
