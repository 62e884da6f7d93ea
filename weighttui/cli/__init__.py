"""The command line: `weighttui watch / replay / info / export / demo` (weighttui/cli/main.py)."""

from weighttui.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
