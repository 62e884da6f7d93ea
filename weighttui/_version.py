"""The package version, in a module of its own so that any layer can name it without importing
`weighttui/__init__` (which pulls in the read model and the recorder)."""

__version__ = "0.1.0"
