"""The one exception the command line treats as the user's mistake.

`cli.main` prints a `CliError` as one line and exits 2; anything else that
escapes a command is a bug and keeps its traceback (exit 1). Code that knows
an error is about the user's input (a file, an option, a step that is not in
the log) raises CliError with a message that says what to do.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""
