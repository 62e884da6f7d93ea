"""Helpers for the TUI tests: real logs (Recorder or fixed frames) and waiting in Pilot."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from weighttui import Recorder
from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, delta_stats, empty_block, weights_block

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
FIXED_TIME = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def layer_params(step: int, n_layers: int = 3, width: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of a toy MLP that drift with the step (deterministic)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_layers):
        w = rng.normal(size=(width, width)).astype(np.float32) * (1 + 0.01 * step * (i + 1))
        out[f"layers.{i}.weight"] = w
        out[f"layers.{i}.bias"] = (np.arange(width, dtype=np.float32) * 0.01 * step * (i + 1))
    return out


def write_recorder_log(path, steps: int = 20, *, n_layers: int = 3, scalars: bool = True, **kw) -> str:
    """A log written by the real numpy Recorder (times/host are real: not for snapshots)."""
    with Recorder(path, **kw) as rec:
        for step in range(steps):
            params = layer_params(step, n_layers)
            grads = {k: v * 0.1 for k, v in params.items()}
            rec.snapshot(step, params, epoch=step // 10, grads=grads,
                         scalars={"loss": 1.0 / (1 + step), "accuracy": step / max(1, steps)} if scalars else None)
    return os.fspath(path)


class FixedLog:
    """Writes a log frame by frame with fixed times and host, so screens are reproducible."""

    def __init__(self, path, *, names=None, host="trainbox", pid=1, created=FIXED_TIME, bins=16):
        self.path = os.fspath(path)
        self.bins = bins
        self.names = names or [f"encoder.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")] \
            + ["head.weight"]
        self.prev = None
        self.t = created
        with open(self.path, "wb") as fh:
            fh.write(HEADER + encode_frame(FrameType.RUN, {
                "run_id": "0" * 32, "created": created, "host": host, "pid": pid, "argv": ["train.py"],
                "framework": "numpy", "writer": "weighttui 0.1.0", "bins": bins, "meta": {}}))
            fh.write(encode_frame(FrameType.TENSORS, {"tensors": [
                {"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": list(self.shape(n)),
                 "dtype": "float32", "trainable": True, "sample_index": None}
                for i, n in enumerate(self.names)]}))

    @staticmethod
    def shape(name):
        return (6,) if name.endswith("bias") else (6, 6)

    def arrays(self, step):
        out = []
        for i, n in enumerate(self.names):
            size = math.prod(self.shape(n))
            base = np.sin(np.arange(size, dtype=np.float64) * (i + 1)).reshape(self.shape(n))
            out.append((base * (1 + 0.02 * step * (i + 1)) + 0.001 * step).astype(np.float32))
        return out

    def frames(self, step, *, epoch=None, nan_in=None) -> bytes:
        arrays = self.arrays(step)
        if nan_in is not None:
            arrays[nan_in].reshape(-1)[0] = np.nan
        weights = weights_block(arrays, self.bins)
        delta = empty_block(DELTA_STATS, len(arrays), None)
        if self.prev is not None:
            for i, (a, p) in enumerate(zip(arrays, self.prev)):
                delta.stats[i] = delta_stats(a, p)
        grad = weights_block([a * 0.05 for a in arrays], self.bins)
        self.prev = arrays
        self.t += 2.0
        snap = {"step": step, "epoch": epoch, "batch": None, "time": self.t,
                "ids": encode_array(np.arange(len(arrays), dtype="<u4")),
                "weights": weights.to_payload(encode_array), "delta": delta.to_payload(encode_array),
                "grad": grad.to_payload(encode_array), "sample": None}
        scal = {"step": step, "epoch": epoch, "time": self.t,
                "values": {"loss": 2.0 / (1 + 0.1 * step), "accuracy": 1 - 1 / (2 + 0.1 * step)}}
        return encode_frame(FrameType.SNAPSHOT, snap) + encode_frame(FrameType.SCALARS, scal)

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(data)

    def snapshot(self, step, **kw) -> None:
        self.append(self.frames(step, **kw))

    def end(self, status="finished", snapshots=0) -> None:
        self.append(encode_frame(FrameType.END, {"time": self.t + 1, "status": status,
                                                 "snapshots": snapshots, "dropped": 0}))

    def event(self, kind, message, level="warning", step=None) -> None:
        self.append(encode_frame(FrameType.EVENT, {"step": step, "time": self.t, "level": level,
                                                   "kind": kind, "message": message, "tensor": None}))


def fixed_log(path, steps=30, *, end=True, epoch_every=10, **kw) -> FixedLog:
    log = FixedLog(path, **kw)
    for s in range(steps):
        log.snapshot(s * 10, epoch=s // epoch_every)
    if end:
        log.end(snapshots=steps)
    return log


async def wait_until(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds (fails the test after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def static_text(widget) -> str:
    """The plain text a Static (header, timeline, ...) shows now."""
    return str(widget.content) if not hasattr(widget.content, "plain") else widget.content.plain


def cell_text(table, row_key: str, column_key: str) -> str:
    return table.get_cell(row_key, column_key).plain


@pytest.fixture
def utc(monkeypatch):
    """Render times as UTC so 'started ...' is the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()




class _Helpers:
    """Everything above, handed to tests as the `tui` fixture (tests never import conftest)."""

    DATA = DATA
    FIXED_TIME = FIXED_TIME
    FixedLog = FixedLog
    fixed_log = staticmethod(fixed_log)
    layer_params = staticmethod(layer_params)
    write_recorder_log = staticmethod(write_recorder_log)
    wait_until = staticmethod(wait_until)
    static_text = staticmethod(static_text)
    cell_text = staticmethod(cell_text)


@pytest.fixture
def tui():
    return _Helpers


@pytest.fixture
def anyio_backend():
    return "asyncio"
