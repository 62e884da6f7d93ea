"""`import weighttui.jax as wj`: see weighttui.integrations.jax (imports jax)."""

from weighttui.integrations.jax import adam_state, named_leaves, path_name, recorder, snapshot

__all__ = ["adam_state", "named_leaves", "path_name", "recorder", "snapshot"]
