"""`from weighttui.lightning import WeightCallback`: see weighttui.integrations.lightning.

`WeightCallback` is for `lightning` (lightning.pytorch.Trainer); `PLWeightCallback`
for the older `pytorch_lightning` package. Each is built on first use, so
importing this module imports neither Lightning package.
"""

from weighttui.integrations import lightning as _impl


def __getattr__(name):
    return getattr(_impl, name)


__all__ = ["WeightCallback", "PLWeightCallback"]  # noqa: F822 (resolved by __getattr__)
