"""weighttui: watch neural-network weights while they train, in the terminal."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from weighttui._version import __version__

if TYPE_CHECKING:
    from weighttui.data.run import RunData, open  # noqa: A004
    from weighttui.log.format import LogFormatError
    from weighttui.record.recorder import Recorder

__all__ = ["LogFormatError", "Recorder", "RunData", "open", "__version__"]

# Loaded on first use (PEP 562): `weighttui watch` imports this package too, and its first screen
# must not wait for the recorder (a training-side module) or the reader it does not use yet.
_LAZY = {"Recorder": "weighttui.record.recorder", "RunData": "weighttui.data.run", "open": "weighttui.data.run",
         "LogFormatError": "weighttui.log.format"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weighttui' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
