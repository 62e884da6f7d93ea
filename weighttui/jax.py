"""`import weighttui.jax as wj`: see weighttui.integrations.jax (imports jax)."""

from weighttui.integrations.jax import named_leaves, path_name, recorder, snapshot

__all__ = ["named_leaves", "path_name", "recorder", "snapshot"]
