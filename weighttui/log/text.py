"""Strings from a log, made inert before anything shows them: one rule for the viewer and `info`.

A log is input from whoever wrote it (or damaged it). Tensor, layer, scalar,
host, framework and dtype names, meta values and messages may hold bytes a
terminal obeys: ESC sequences (retitle with OSC 0/2, write the clipboard with
OSC 52, hyperlinks with OSC 8, clear the screen with CSI), C1 controls (a
single 0x9b byte is a CSI on many terminals), carriage returns and newlines
that forge whole output lines, bidirectional overrides that make text read
backwards, and zero-width characters that make two different names look the
same. `inert` turns each of those into a visible escape, so the text can be
printed as-is and shows what is really there.
"""

from __future__ import annotations

import unicodedata

# Unicode general categories that a terminal acts on or that hide what a name is:
#   Cc  control characters (C0, DEL, C1: ESC, CR, LF, BEL, CSI 0x9b, OSC 0x9d ...)
#   Cf  format characters (bidi embeddings/overrides/isolates, LRM/RLM, ZWSP/ZWJ/ZWNJ, BOM, soft hyphen)
#   Zl Zp  line and paragraph separators (another line break)
#   Cs  lone surrogates (not text; a terminal shows garbage or fails to encode them)
#   Cn  unassigned code points (a terminal's width for them is a guess: columns drift)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(text: object) -> str:
    """`text` (any value from a log; not a str: its str()) with everything a terminal would act on,
    or that would hide what the text is, shown as a visible escape: ESC -> `\\x1b`, a newline ->
    `\\x0a`, U+202E (right-to-left override) -> `\\u202e`, a zero-width space -> `\\u200b`.

    Printable text (any script, emoji, spaces) is returned unchanged; the result holds no control,
    format or separator character, so it cannot move the cursor, start an escape sequence, break a
    line or reorder what follows. Rich/Textual markup is a separate matter: show the result as a
    `rich.text.Text` (never as a markup string), so `[link=...]` stays literal.

    The viewer (weighttui.tui) and `weighttui info` both call this; use it for every string a
    log supplies before it reaches a widget or stdout.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():
        return s  # the common case: plain ASCII names
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in s)
