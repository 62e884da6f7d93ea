"""A run log whose every string is hostile to a terminal and to Rich markup (issue 19, items 1, 2, 13).

Valid frames and CRCs throughout: only the strings attack. Tensor and layer
names carry OSC title / clipboard (OSC 52) / hyperlink (OSC 8) sequences, a
clear-screen, a C1 CSI byte, a newline, bidi overrides, zero-width characters
and markup (`[/]`, `[link=...]`); so do the host, the framework, meta values
and scalar names. One hostile tensor turns NaN, so the alerts name it too.

Run as a script (`python hostile_log.py OUT`) it writes the log for the tmux test.
"""

from __future__ import annotations

import sys

from logbuilder import FixedLog

TITLE = "PWNED-TITLE"  # what the OSC title sequences try to set the terminal's title to
OSC_TITLE = f"\x1b]0;{TITLE}\x07"
CLEAR = "\x1b[2J\x1b[H"
NAMES = [
    f"enc{OSC_TITLE}.weight",                      # retitle the terminal
    f"enc.wipe{CLEAR}X.weight",                    # clear the screen
    "enc.clip\x1b]52;c;ZXZpbA==\x07.weight",       # write the clipboard
    "enc.link\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07.bias",  # a live hyperlink
    "enc.c1\x9b31mred.bias",                       # C1 CSI (one byte)
    "enc.nl\nstatus: finished.bias",               # a forged line
    "enc.rtl\u202egnp.exe.weight",                 # right-to-left override
    "enc.zw\u200b\u200dx.weight",                  # zero-width space and joiner
    "x[/]",                                        # markup closing nothing: a MarkupError if parsed
    "[link=http://evil.example/]click",            # markup that makes a link
    "[bold red]evil",
    "attn[q].weight",
]
NAN_TENSOR = "x[/]"  # becomes NaN: its alert names it
HOST = f"box{OSC_TITLE}\x1b[31m"
FRAMEWORK = f"torch{CLEAR}"
SCALAR = f"loss{OSC_TITLE}[b]"
META = {"lr": "\x1b]52;c;ZXZpbA==\x07", "note": "[link=http://evil.example/]x[/link]\u202eabc"}
# Raw control characters that must never reach the screen (ESC, BEL, C1 CSI, bidi, zero width).
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\u202e", "\u200b", "\u200d")


def shape(name: str) -> tuple[int, ...]:
    return (6,) if name.endswith("bias") else (4, 6)


def write_hostile_log(path, steps: int = 12, *, end: bool = True) -> str:
    """Snapshots every 10 steps (epochs of 4), weights and updates, no gradients; NAN_TENSOR is NaN
    from the middle on."""
    log = FixedLog(path, names=NAMES, host=HOST, framework=FRAMEWORK, argv=[f"train.py{CLEAR}"], meta=META,
                   shape=shape, grad_scale=None, step_scale=10,
                   scalars=lambda step: {SCALAR: 1.0 / (1 + step // 10), "[/]": 0.5})
    for k in range(steps):
        log.snapshot(10 * k, epoch=k // 4, nan_in=NAMES.index(NAN_TENSOR) if k >= steps // 2 else None)
    if end:
        log.end(snapshots=steps)
    return str(path)


if __name__ == "__main__":
    write_hostile_log(sys.argv[1], end=len(sys.argv) < 3 or sys.argv[2] != "live")
