"""weighttui: watch neural-network weights while they train, in the terminal."""

__version__ = "0.1.0"

from .logformat import LogFormatError  # noqa: E402
from .run import RunData, open  # noqa: E402,A004

__all__ = ["LogFormatError", "Recorder", "RunData", "open", "__version__"]


def __getattr__(name):
    # The Recorder (threads, sockets, uuid) is imported on first use: the viewer
    # never needs it, and `weighttui watch` should start as fast as it can.
    if name == "Recorder":
        from .recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'weighttui' has no attribute {name!r}")
