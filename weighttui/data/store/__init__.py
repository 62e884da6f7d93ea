"""The run store: every reader's view of a log, built once, kept as an index, extended as the log grows.

builder.py turns frames into per-run state and tensor-major columns (columns.py);
index.py keeps that state in an index directory beside the log (or in the user's
cache) and proves, before using it, that it still matches the log.
"""
