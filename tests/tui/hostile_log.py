"""A run log whose every string is hostile to a terminal and to Rich markup (issue 19, items 1, 2, 13).

Valid frames and CRCs throughout: only the strings attack. Tensor and layer
names carry OSC title / clipboard (OSC 52) / hyperlink (OSC 8) sequences, a
clear-screen, a C1 CSI byte, a newline, bidi overrides, zero-width characters
and markup (`[/]`, `[link=...]`); so do the host, the framework, meta values
and scalar names. One hostile tensor turns NaN, so the alerts name it too.

Run as a script (`python hostile_log.py OUT`) it writes the log for the tmux test.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, delta_stats, empty_block, weights_block

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
    bins = 16
    t = 1_700_000_000.0
    with open(path, "wb") as fh:
        fh.write(HEADER + encode_frame(FrameType.RUN, {
            "run_id": "0" * 32, "created": t, "host": HOST, "pid": 1, "argv": [f"train.py{CLEAR}"],
            "framework": FRAMEWORK, "writer": "weighttui 0.1.0", "bins": bins, "meta": META}))
        fh.write(encode_frame(FrameType.TENSORS, {"tensors": [
            {"id": i, "name": n, "layer": n.rsplit(".", 1)[0] if "." in n else "", "shape": list(shape(n)),
             "dtype": "float32", "trainable": True, "sample_index": None}
            for i, n in enumerate(NAMES)]}))
        prev = None
        for k in range(steps):
            step = 10 * k
            arrays = []
            for i, n in enumerate(NAMES):
                size = math.prod(shape(n))
                base = np.sin(np.arange(size, dtype=np.float64) * (i + 1)).reshape(shape(n))
                a = (base * (1 + 0.02 * k * (i + 1)) + 0.001 * k).astype(np.float32)
                if n == NAN_TENSOR and k >= steps // 2:
                    a.reshape(-1)[0] = np.nan
                arrays.append(a)
            weights = weights_block(arrays, bins)
            delta = empty_block(DELTA_STATS, len(arrays), None)
            if prev is not None:
                for i, (a, p) in enumerate(zip(arrays, prev)):
                    delta.stats[i] = delta_stats(a, p)
            prev = arrays
            t += 2.0
            fh.write(encode_frame(FrameType.SNAPSHOT, {
                "step": step, "epoch": k // 4, "batch": None, "time": t,
                "ids": encode_array(np.arange(len(arrays), dtype="<u4")),
                "weights": weights.to_payload(encode_array), "delta": delta.to_payload(encode_array),
                "grad": None, "sample": None}))
            fh.write(encode_frame(FrameType.SCALARS, {"step": step, "epoch": k // 4, "time": t,
                                                       "values": {SCALAR: 1.0 / (1 + k), "[/]": 0.5}}))
        if end:
            fh.write(encode_frame(FrameType.END, {"time": t + 1, "status": "finished", "snapshots": steps,
                                                  "dropped": 0}))
    return str(path)


if __name__ == "__main__":
    write_hostile_log(sys.argv[1], end=len(sys.argv) < 3 or sys.argv[2] != "live")
