"""`from weighttui.keras import WeightCallback`: the Keras 3 integration (imports keras)."""

from .integrations.keras import WeightCallback

__all__ = ["WeightCallback"]
