"""`from weighttui.keras import WeightCallback`: the Keras 3 integration (imports keras)."""

from weighttui.integrations.keras import WeightCallback

__all__ = ["WeightCallback"]
