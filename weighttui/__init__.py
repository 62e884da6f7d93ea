"""weighttui: watch neural-network weights while they train, in the terminal."""

__version__ = "0.1.0"

from .logformat import LogFormatError  # noqa: E402
from .recorder import Recorder  # noqa: E402
from .run import RunData, open  # noqa: E402,A004

__all__ = ["LogFormatError", "Recorder", "RunData", "open", "__version__"]
