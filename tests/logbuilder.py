"""The run logs tests write: one module for every kind of test (on the path via pyproject's pytest `pythonpath`).

Two ways to build a log:

- with the real numpy `Recorder` (`recorder_log`, `moving_log`, `sgd_run`): what a
  user's run writes; times, host and pid are real.
- frame by frame with fixed times, host and values (`FixedLog`, `fixed_log`,
  `fixed_sweep_log`), so that SVG snapshots of the screens are reproducible. The
  statistics blocks still come from weighttui's own `weights_block` / `delta_stats`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from weighttui import Recorder
from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, delta_stats, empty_block, weights_block

DATA = os.path.join(os.path.dirname(__file__), "data")  # the golden logs
FIXED_TIME = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


# ------------------------------------------------------------ real Recorder


def layer_params(step: int, n_layers: int = 3, width: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of a toy MLP that drift with the step (deterministic)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_layers):
        w = rng.normal(size=(width, width)).astype(np.float32) * (1 + 0.01 * step * (i + 1))
        out[f"layers.{i}.weight"] = w
        out[f"layers.{i}.bias"] = (np.arange(width, dtype=np.float32) * 0.01 * step * (i + 1))
    return out


def recorder_log(path, steps: int = 20, *, n_layers: int = 3, scalars: bool = True, **kw) -> str:
    """`layer_params` recorded by the real numpy Recorder, epochs of 10 steps, loss and accuracy."""
    with Recorder(path, **kw) as rec:
        for step in range(steps):
            params = layer_params(step, n_layers)
            grads = {k: v * 0.1 for k, v in params.items()}
            rec.snapshot(step, params, epoch=step // 10, grads=grads,
                         scalars={"loss": 1.0 / (1 + step), "accuracy": step / max(1, steps)} if scalars else None)
    return os.fspath(path)


def moving_log(path, *, steps=5, names=("a.weight", "a.bias"), lr=0.1, scalars=("loss",), status="finished",
               step_every=1):
    """A real Recorder log whose weights move by `lr` per step (meta lr and bs).

    Returns the closed log's path, or the open Recorder when `status` is None
    (the run is then still live: its writer, this process, is alive).
    """
    rec = Recorder(path, meta={"lr": lr, "bs": 32}, delta=True)
    for s in range(steps):
        params = {n: np.full((4, 4) if n.endswith("weight") else (4,), 1.0 + lr * s, dtype=np.float32)
                  + np.arange(16 if n.endswith("weight") else 4, dtype=np.float32).reshape(
                      (4, 4) if n.endswith("weight") else (4,)) * 0.01 for n in names}
        rec.snapshot(s * step_every, params, grads={n: v * lr for n, v in params.items()},
                     scalars={k: 1.0 / (1 + lr * s) for k in scalars})
    if status is None:
        return rec
    rec.close(status=status)
    return os.fspath(path)


def sgd_run(path, lr: float, steps: int = 30, *, status: str | None = "finished", seed: int = 0):
    """A two-layer ReLU regression trained by plain SGD at `lr`, recorded by the real Recorder.

    Returns the closed log's path, or the open Recorder when `status` is None.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8))
    y = x @ rng.normal(size=(8, 4))
    params = {"fc1.weight": rng.normal(size=(8, 16)) * 0.3, "fc1.bias": np.zeros(16),
              "fc2.weight": rng.normal(size=(16, 4)) * 0.3}
    rec = Recorder(path, meta={"lr": lr, "optimizer": "sgd"}, delta=True, sample=4)
    for step in range(steps):
        h = x @ params["fc1.weight"] + params["fc1.bias"]
        a = np.maximum(h, 0)
        err = a @ params["fc2.weight"] - y
        g_out = 2 * err / err.size
        g_a = g_out @ params["fc2.weight"].T * (h > 0)
        grads = {"fc1.weight": x.T @ g_a, "fc1.bias": g_a.sum(0), "fc2.weight": a.T @ g_out}
        rec.snapshot(step, params, grads=grads, scalars={"loss": float((err ** 2).mean())})
        params = {k: v - lr * grads[k] for k, v in params.items()}
    if status is None:
        return rec
    rec.close(status=status)
    return os.fspath(path)


# ------------------------------------------------------------ fixed frames


def _default_scalars(step: int) -> dict[str, float]:
    return {"loss": 2.0 / (1 + 0.1 * step), "accuracy": 1 - 1 / (2 + 0.1 * step)}


class FixedLog:
    """Writes a log frame by frame with fixed times, host and values, so screens are reproducible.

    Tensor i at a step is sin(arange * (i + 1)) * (1 + growth * t * (i + 1)) + 0.001 * t, where t
    is the step divided by `step_scale`; its gradient is `grad_scale` times that (None: no gradient
    block). Snapshots are 2 s apart from `created`. The run record's strings (host, framework,
    argv, meta) and the tensor names are the caller's, as they are: hostile ones included.
    """

    def __init__(self, path, *, names=None, host="trainbox", pid=1, created=FIXED_TIME, bins=16,
                 meta: dict | None = None, run_id: str = "0" * 32, growth: float = 0.02,
                 grad_scale: float | None = 0.05, step_scale: float = 1.0,
                 scalars: Callable[[int], dict[str, float]] = _default_scalars,
                 shape: Callable[[str], tuple[int, ...]] | None = None, framework: str = "numpy",
                 argv: list[str] | None = None):
        self.path = os.fspath(path)
        self.bins = bins
        self.names = list(names) if names else [f"encoder.layers.{i}.{p}" for i in range(3)
                                                for p in ("weight", "bias")] + ["head.weight"]
        self.growth, self.grad_scale, self.step_scale, self.scalars = growth, grad_scale, step_scale, scalars
        if shape is not None:
            self.shape = shape  # type: ignore[method-assign]
        self.prev: list[np.ndarray] | None = None
        self.t = created
        with open(self.path, "wb") as fh:
            fh.write(HEADER + encode_frame(FrameType.RUN, {
                "run_id": run_id, "created": created, "host": host, "pid": pid, "argv": argv or ["train.py"],
                "framework": framework, "writer": "weighttui 0.1.0", "bins": bins, "meta": meta or {}}))
            fh.write(encode_frame(FrameType.TENSORS, {"tensors": [
                {"id": i, "name": n, "layer": n.rsplit(".", 1)[0] if "." in n else "", "shape": list(self.shape(n)),
                 "dtype": "float32", "trainable": True, "sample_index": None}
                for i, n in enumerate(self.names)]}))

    @staticmethod
    def shape(name: str) -> tuple[int, ...]:
        return (6,) if name.endswith("bias") else (6, 6)

    def arrays(self, step):
        t = step / self.step_scale if self.step_scale != 1.0 else step
        out = []
        for i, n in enumerate(self.names):
            size = math.prod(self.shape(n))
            base = np.sin(np.arange(size, dtype=np.float64) * (i + 1)).reshape(self.shape(n))
            out.append((base * (1 + self.growth * t * (i + 1)) + 0.001 * t).astype(np.float32))
        return out

    def frames(self, step, *, epoch=None, nan_in=None, units: dict | None = None) -> bytes:
        arrays = self.arrays(step)
        if nan_in is not None:
            arrays[nan_in].reshape(-1)[0] = np.nan
        weights = weights_block(arrays, self.bins)
        delta = empty_block(DELTA_STATS, len(arrays), None)
        if self.prev is not None:
            for i, (a, p) in enumerate(zip(arrays, self.prev, strict=True)):
                delta.stats[i] = delta_stats(a, p)
        grad = None if self.grad_scale is None else weights_block([a * self.grad_scale for a in arrays], self.bins)
        self.prev = arrays
        self.t += 2.0
        snap = {"step": step, "epoch": epoch, "batch": None, "time": self.t,
                "ids": encode_array(np.arange(len(arrays), dtype="<u4")),
                "weights": weights.to_payload(encode_array), "delta": delta.to_payload(encode_array),
                "grad": None if grad is None else grad.to_payload(encode_array), "sample": None}
        if units is not None:  # the optional per-unit norms, as given (docs/FORMAT.md)
            snap["units"] = units
        scal = {"step": step, "epoch": epoch, "time": self.t, "values": self.scalars(step)}
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
    """`steps` snapshots 10 steps apart, epochs of `epoch_every` snapshots, and an end record."""
    log = FixedLog(path, **kw)
    for s in range(steps):
        log.snapshot(s * 10, epoch=s // epoch_every)
    if end:
        log.end(snapshots=steps)
    return log


def fixed_sweep_log(path, lr: float, steps: int, *, status: str | None = "finished", host="trainbox",
                    names=("encoder.weight", "encoder.bias", "head.weight"), bins: int = 16) -> str:
    """One run of a learning-rate sweep with fixed content: values grow with lr, meta {"lr": lr}."""
    log = FixedLog(path, names=names, host=host, bins=bins, meta={"lr": lr}, run_id=f"{int(lr * 1e6):032d}",
                   growth=lr, grad_scale=lr, scalars=lambda step: {"loss": 2.0 / (1 + lr * step)})
    for s in range(steps):
        log.snapshot(s * 10)
    if status is not None:
        log.end(status, snapshots=steps)
    return log.path
