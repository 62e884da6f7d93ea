"""A corpus of hostile run logs, generated (never committed as binaries): well-typed values a
writer would never produce, behind valid CRCs, one class of abuse per log.

    python tests/hostile_corpus.py OUTDIR      # writes OUTDIR/<case>.wtui and prints the cases

Every log but the `start_*` ones is a valid log by docs/FORMAT.md's framing: what is hostile is
the values (absurd times, a pid of 2**40 on this host, bytes keys in meta, histograms and
statistics no writer computes, names that are paths, escapes or numpy's own argument names).
The `start_*` logs have a damaged start (overwritten magic bytes, garbage prepended, a zeroed
first block, frames before a second writer's header) and intact frames after it. The promise tested
(tests/functional/test_hostile_corpus.py): `info`, `info --json`, every export format,
`weighttui.open()` and the TUI's screens never die on them; a bad field costs only that field
or record.
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np

from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.log.schema import DELTA_STATS, WEIGHT_STATS

BINS = 8
T0 = 1_700_000_000.0

# the names a log can choose: paths, numpy.savez's own arguments, escapes, markup, bidi, blanks
HOSTILE_NAMES = [
    "file", "allow_pickle", "../../etc/evil", "/abs/path", "a\nstatus: finished\n  alerts: none",
    "\x1b]0;pwned\x07\x1b[2J", "\u202eevil\u202c", "zero\u200bwidth", "[/]", "[link=https://x]y[/link]",
    "", "x" * 5000, "c:\\win", "%2e%2e", "nan",
]


class Log:
    """Frame-by-frame writer with every field chosen by the caller."""

    def __init__(self, path, *, run=None, names=("w", "b"), shapes=None, tensors=None):
        self.path = os.fspath(path)
        self.names = list(names)
        shapes = shapes or [(4, 4) if i % 2 == 0 else (4,) for i in range(len(self.names))]
        self.shapes = [tuple(s) for s in shapes]
        rec = {"run_id": "f" * 32, "created": T0, "host": "trainbox", "pid": 1, "argv": ["train.py"],
               "framework": "numpy", "writer": "weighttui 0.1.0", "bins": BINS, "meta": {}}
        rec.update(run or {})
        decl = tensors or [{"id": i, "name": n, "layer": "layer", "shape": list(s), "dtype": "float32",
                            "trainable": True, "sample_index": None}
                           for i, (n, s) in enumerate(zip(self.names, self.shapes, strict=True))]
        with open(self.path, "wb") as fh:
            fh.write(HEADER + encode_frame(FrameType.RUN, rec) + encode_frame(FrameType.TENSORS, {"tensors": decl}))

    def frame(self, ftype, payload) -> None:
        with open(self.path, "ab") as fh:
            fh.write(encode_frame(ftype, payload))

    def snapshot(self, step, *, time=None, epoch=None, stats=None, lo=None, hi=None, counts=None,
                 delta=True, grad=True) -> None:
        t = len(self.names)
        st = np.tile(np.array([0.1, 1.0, -2.0, 2.0, 0.8, 3.0, 0.0, 0.0, 0.0]), (t, 1)) if stats is None else stats
        block = {"names": list(WEIGHT_STATS), "stats": encode_array(np.asarray(st, dtype="<f8")),
                 "hist": {"lo": encode_array(np.full(t, -2.0) if lo is None else np.asarray(lo, "<f8")),
                          "hi": encode_array(np.full(t, 2.0) if hi is None else np.asarray(hi, "<f8")),
                          "counts": encode_array(np.ones((t, BINS), "<u4") if counts is None
                                                 else np.asarray(counts, "<u4"))}}
        dstats = np.tile(np.array([0.01, 1e-3, 0.01, 0.001, 1.0, 1.0]), (t, 1))
        payload = {"step": step, "epoch": epoch, "batch": None, "time": T0 + step if time is None else time,
                   "ids": encode_array(np.arange(t, dtype="<u4")), "weights": block,
                   "delta": ({"names": list(DELTA_STATS), "stats": encode_array(dstats), "hist": None}
                             if delta else None),
                   "grad": block if grad else None, "sample": None}
        self.frame(FrameType.SNAPSHOT, payload)

    def scalars(self, step, values, *, time=None) -> None:
        self.frame(FrameType.SCALARS, {"step": step, "epoch": None, "time": T0 + step if time is None else time,
                                       "values": values})

    def event(self, message, *, kind="nonfinite", level="warning", step=0, tensor=None) -> None:
        self.frame(FrameType.EVENT, {"step": step, "time": T0, "level": level, "kind": kind,
                                     "message": message, "tensor": tensor})

    def end(self, *, status="finished", time=None, snapshots=0, dropped=0) -> None:
        self.frame(FrameType.END, {"time": T0 + 1e4 if time is None else time, "status": status,
                                   "snapshots": snapshots, "dropped": dropped})


def _plain(log: Log, steps=4, **kw) -> Log:
    for s in range(steps):
        log.snapshot(s * 10, **kw)
        log.scalars(s * 10, {"loss": 1.0 / (s + 1)})
    log.end(snapshots=steps)
    return log


# ------------------------------------------------------------------ the cases


def case_created_times(out):
    for label, t in (("inf", float("inf")), ("neg_inf", float("-inf")), ("huge", 1e300), ("negative", -1e9),
                     ("nan", float("nan")), ("tiny", 5e-324)):
        yield f"times_created_{label}", _plain(Log(os.path.join(out, f"times_created_{label}.wtui"),
                                                   run={"created": t}))


def case_snapshot_times(out):
    for label, t in (("inf", float("inf")), ("nan", float("nan")), ("huge", 1e300), ("negative", -1e12)):
        log = Log(os.path.join(out, f"times_snapshot_{label}.wtui"))
        for s in range(4):
            log.snapshot(s, time=t if s % 2 else T0 + s)
            log.scalars(s, {"loss": 1.0}, time=t)
        log.end(time=t)
        yield f"times_snapshot_{label}", log


def case_pid(out):
    host = socket.gethostname()
    for label, pid in (("2pow40", 2**40), ("negative", -1), ("zero", 0), ("int64_max", 2**63 - 1)):
        log = Log(os.path.join(out, f"pid_{label}.wtui"), run={"pid": pid, "host": host})
        for s in range(3):
            log.snapshot(s)
        yield f"pid_{label}", log  # no end record: "is the writer alive?" asks the pid


def case_meta(out):
    meta = {b"bytes-key": 1, 7: "int key", "nested": {b"k": [b"\xff\xfe", float("nan"), float("inf")]},
            "big": 2**63 - 1, "neg": -(2**63), "bin": b"\x00\x01", "float": float("nan"), "none": None}
    log = Log(os.path.join(out, "meta_bytes_keys.wtui"), run={"meta": meta, "argv": ["\x1b[2J", "--token=x"]})
    yield "meta_bytes_keys", _plain(log)


def case_histograms(out):
    n = 2
    weird = {
        "reversed": dict(lo=[5.0, 5.0], hi=[-5.0, -5.0]),
        "infinite": dict(lo=[-np.inf, -np.inf], hi=[np.inf, np.inf]),
        "nan_bounds_with_counts": dict(lo=[np.nan, np.nan], hi=[np.nan, np.nan]),
        "edge_of_float": dict(lo=[-1e308, -1.7976931348623157e308], hi=[1e308, 1.7976931348623157e308]),
        "max_counts": dict(counts=np.full((n, BINS), 2**32 - 1)),
        "zero_width": dict(lo=[1.0, 1.0], hi=[1.0, 1.0]),
    }
    for label, kw in weird.items():
        yield f"hist_{label}", _plain(Log(os.path.join(out, f"hist_{label}.wtui")), **kw)


def case_statistics(out):
    t = 2
    rows = {
        "negative_counts": [0.1, 1.0, -2.0, 2.0, 0.8, 3.0, 0.0, -5.0, -1.0],
        "huge_counts": [0.1, 1.0, -2.0, 2.0, 0.8, 3.0, 0.0, 1e300, np.inf],
        "nan_counts": [0.1, 1.0, -2.0, 2.0, 0.8, 3.0, 0.0, np.nan, np.nan],
        "all_inf": [np.inf] * 9,
        "all_neg_inf": [-np.inf] * 9,
        "nonsense": [-1.0, -3.0, 5.0, -5.0, -1.0, -7.0, 5.0, 0.5, 0.25],
        "extremes": [1e308, 1e308, -1e308, 1e308, 1e308, 1.7976931348623157e308, 1.0, 0.0, 0.0],
    }
    for label, row in rows.items():
        st = np.tile(np.array(row, dtype=float), (t, 1))
        yield f"stats_{label}", _plain(Log(os.path.join(out, f"stats_{label}.wtui")), stats=st)


def case_steps(out):
    log = Log(os.path.join(out, "steps_extreme.wtui"))
    for s in (-(2**62), -5, 0, 2**62, 2**63 - 1):
        log.snapshot(s, epoch=2**62 if s > 0 else -3)
        log.scalars(s, {"loss": 1.0})
    log.end()
    yield "steps_extreme", log


def case_names(out):
    names = HOSTILE_NAMES
    log = Log(os.path.join(out, "names_hostile.wtui"), names=names, shapes=[(2, 2)] * len(names))
    for s in range(3):
        log.snapshot(s)
        log.scalars(s, {n: float(s) for n in names} | {"loss": float("nan") if s else 1.0})
        log.event(f"event for {names[4]} {names[5]}", tensor=5, step=s)
    for i in range(len(names)):  # complete values: the npz export names members after these
        log.frame(FrameType.VALUES, {"step": 2, "epoch": None, "id": i, "offset": 0,
                                     "value": encode_array(np.arange(4, dtype="<f4") + i)})
    log.end()
    yield "names_hostile", log


def case_scalars(out):
    log = Log(os.path.join(out, "scalars_odd.wtui"))
    for s in range(4):
        log.snapshot(s)
        log.scalars(s, {"loss": [float("nan"), float("inf"), -float("inf"), 1e308][s], "../x": 1.0, "": 2.0,
                        "int": 2**62, "bool_like": 1})
    log.end()
    yield "scalars_odd", log


def case_end(out):
    log = Log(os.path.join(out, "end_odd.wtui"))
    for s in range(2):
        log.snapshot(s)
    log.end(status="\x1b[31mfinished\nalerts: none", snapshots=-1, dropped=2**62, time=float("nan"))
    yield "end_odd", log


def _damage_start(path: str, damaged: bytes, upto: int) -> None:
    """Replace the first `upto` bytes of the log at `path` with `damaged`."""
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(damaged + data[upto:])


def case_start(out):
    """Logs whose start is damaged, with intact frames after it: read from the first header or
    frame after the damage, the damage reported as a corruption at offset 0 (docs/FORMAT.md)."""
    rng = np.random.default_rng(19)
    log = _plain(Log(os.path.join(out, "start_overwritten.wtui")))
    _damage_start(log.path, b"\0" * 8, 8)  # the magic bytes overwritten
    yield "start_overwritten", log
    log = _plain(Log(os.path.join(out, "start_prepended.wtui")))
    _damage_start(log.path, rng.bytes(3000), 0)  # garbage before the header
    yield "start_prepended", log
    # a zeroed first block: the first run's header, run and tensors frames are gone; the run
    # appended after it (mode="a") is whole
    log = _plain(Log(os.path.join(out, "start_zeroed_block.wtui")), steps=12)
    log.frame(FrameType.RUN, {"run_id": "e" * 32, "created": T0 + 100, "host": "trainbox", "pid": 2,
                              "argv": ["train.py"], "framework": "numpy", "writer": "weighttui 0.1.0",
                              "bins": BINS, "meta": {}})
    log.frame(FrameType.TENSORS, {"tensors": [
        {"id": i, "name": n, "layer": "layer", "shape": list(s), "dtype": "float32", "trainable": True,
         "sample_index": None} for i, (n, s) in enumerate(zip(log.names, log.shapes, strict=True))]})
    _plain(log)
    assert os.path.getsize(log.path) > 8192
    _damage_start(log.path, b"\0" * 4096, 4096)
    yield "start_zeroed_block", log
    # a second writer truncated the log and wrote its header after the first writer's next frames
    old_frames = (encode_frame(FrameType.SCALARS, {"step": 50, "epoch": None, "time": T0 + 50, "values": {"loss": 0.1}})
                  + encode_frame(FrameType.END, {"time": T0 + 60, "status": "finished", "snapshots": 6, "dropped": 0}))
    log = _plain(Log(os.path.join(out, "start_rewritten.wtui"), run={"run_id": "d" * 32}))
    _damage_start(log.path, old_frames + HEADER, len(HEADER))
    yield "start_rewritten", log


CASES = (case_created_times, case_snapshot_times, case_pid, case_meta, case_histograms, case_statistics,
         case_steps, case_names, case_scalars, case_end, case_start)


def generate(out) -> dict[str, str]:
    """Write every case under `out`; {case name: path}."""
    os.makedirs(out, exist_ok=True)
    made = {}
    for case in CASES:
        for name, log in case(os.fspath(out)):
            made[name] = log.path
    return made


if __name__ == "__main__":
    for name, path in generate(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus").items():
        print(f"{name}\t{path}")
