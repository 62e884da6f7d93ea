"""weighttui: watch neural-network weights while they train, in the terminal."""

from weighttui._version import __version__
from weighttui.data.run import RunData, open  # noqa: A004
from weighttui.log.format import LogFormatError
from weighttui.record.recorder import Recorder

__all__ = ["LogFormatError", "Recorder", "RunData", "open", "__version__"]
