"""The terminal viewer (Textual). Only modules under this package import textual.

`weighttui.tui.app.run_app(path, mode="watch"|"replay")` is the entry point
used by `weighttui watch`, `replay` and `demo`.
"""
