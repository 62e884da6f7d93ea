"""Importers: existing checkpoints, HF Trainer output and TensorBoard event files as weighttui run logs.

`weighttui import SRC --out run.wtui` (driver.import_source) and `weighttui
watch DIR` on a checkpoint directory (follow.CheckpointFollower). Each source
kind has its module; framework libraries (torch, h5py, tensorboard) are
imported only when a file of theirs is met. See docs/import.md.
"""

from __future__ import annotations

__all__ = ["CheckpointFollower", "import_source"]


def __getattr__(name):
    if name == "import_source":
        from weighttui.integrations.importers.driver import import_source

        return import_source
    if name == "CheckpointFollower":
        from weighttui.integrations.importers.follow import CheckpointFollower

        return CheckpointFollower
    raise AttributeError(name)
