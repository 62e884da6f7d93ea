"""Logs for the multi-run tests: a real numpy SGD sweep, and fixed-content logs for snapshots."""

from __future__ import annotations

import os

import numpy as np

from weighttui import Recorder
from weighttui.log.format import HEADER, FrameType, encode_array, encode_frame
from weighttui.record.stats import DELTA_STATS, delta_stats, empty_block, weights_block

FIXED_TIME = 1_700_000_000.0


def sgd_run(path, lr: float, steps: int = 30, *, status: str | None = "finished", seed: int = 0):
    """A two-layer ReLU regression trained by plain SGD at `lr`, recorded by the real Recorder.

    Returns the closed log's path, or the open Recorder when `status` is None
    (the run is then still live: its writer, this process, is alive).
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


def fixed_sweep_log(path, lr: float, steps: int, *, status: str | None = "finished", host="trainbox",
                    names=("encoder.weight", "encoder.bias", "head.weight"), bins: int = 16) -> str:
    """A log with fixed times, host and values (a function of lr and step), for SVG snapshots."""
    t = FIXED_TIME
    frames = [HEADER, encode_frame(FrameType.RUN, {
        "run_id": f"{int(lr * 1e6):032d}", "created": t, "host": host, "pid": 1, "argv": ["train.py"],
        "framework": "numpy", "writer": "weighttui 0.1.0", "bins": bins, "meta": {"lr": lr}})]
    frames.append(encode_frame(FrameType.TENSORS, {"tensors": [
        {"id": i, "name": n, "layer": n.rsplit(".", 1)[0], "shape": [6] if n.endswith("bias") else [6, 6],
         "dtype": "float32", "trainable": True, "sample_index": None} for i, n in enumerate(names)]}))
    prev = None
    for s in range(steps):
        step = s * 10
        arrays = []
        for i, n in enumerate(names):
            size = 6 if n.endswith("bias") else 36
            base = np.sin(np.arange(size, dtype=np.float64) * (i + 1))
            arrays.append((base * (1 + lr * step * (i + 1)) + 0.001 * step).astype(np.float32))
        delta = empty_block(DELTA_STATS, len(arrays), None)
        if prev is not None:
            for i, (a, p) in enumerate(zip(arrays, prev)):
                delta.stats[i] = delta_stats(a, p)
        prev = arrays
        t += 2.0
        frames.append(encode_frame(FrameType.SNAPSHOT, {
            "step": step, "epoch": None, "batch": None, "time": t,
            "ids": encode_array(np.arange(len(arrays), dtype="<u4")),
            "weights": weights_block(arrays, bins).to_payload(encode_array),
            "delta": delta.to_payload(encode_array),
            "grad": weights_block([a * lr for a in arrays], bins).to_payload(encode_array), "sample": None}))
        frames.append(encode_frame(FrameType.SCALARS, {
            "step": step, "epoch": None, "time": t, "values": {"loss": 2.0 / (1 + lr * step)}}))
    if status is not None:
        frames.append(encode_frame(FrameType.END, {"time": t + 1, "status": status, "snapshots": steps,
                                                   "dropped": 0}))
    with open(path, "wb") as fh:
        fh.write(b"".join(frames))
    return os.fspath(path)
