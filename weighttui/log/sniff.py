"""What a file's first bytes say it is: the one rule every reader and the appending writer use.

A writer creates the log before its first write, so an empty file, or one that
holds only the first bytes of a header, is a log that has not started yet
(`PENDING`), not a foreign file. A whole header is checked by
`format.check_header` (bad magic, a newer format).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from weighttui.log.format import HEADER_SIZE, MAGIC, LogFormatError, check_header


class HeadState(enum.Enum):
    LOG = "log"  # a whole header this reader can read
    PENDING = "pending"  # empty, or a prefix of a header: not started yet
    FOREIGN = "foreign"  # not a weighttui log, or a format this reader cannot read


@dataclass(frozen=True)
class Head:
    state: HeadState
    reason: str = ""  # FOREIGN: why, a sentence for a person
    version: int | None = None  # LOG: the format version

    def raise_if_foreign(self) -> None:
        if self.state is HeadState.FOREIGN:
            raise LogFormatError(self.reason)


def classify_head(head: bytes) -> Head:
    """Classify up to the first HEADER_SIZE bytes of a file."""
    head = head[:HEADER_SIZE]
    if len(head) < HEADER_SIZE:
        if MAGIC.startswith(head[: len(MAGIC)]):
            return Head(HeadState.PENDING)
        return Head(HeadState.FOREIGN, "not a weighttui run log (bad magic bytes)")
    try:
        return Head(HeadState.LOG, version=check_header(head))
    except LogFormatError as exc:
        return Head(HeadState.FOREIGN, str(exc))


def sniff_file(path: str | os.PathLike[str]) -> Head:
    """Classify the file at `path` (OSError if it cannot be opened)."""
    with open(path, "rb") as fh:
        return classify_head(fh.read(HEADER_SIZE))
