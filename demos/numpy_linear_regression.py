"""The framework-free quick start: record a plain numpy training loop.

    python demos/numpy_linear_regression.py run.sock      # then: weighttui replay run.sock

A linear model y = W x + b learns a fixed random target by full-batch gradient
descent. Every 5 steps weighttui records the weights, their gradients and the
update sizes; complete weights are kept at epochs 0, 10 and 19, so afterwards
`weighttui.open("run.sock").weights(epoch=10)` returns them.
"""

from __future__ import annotations

import sys

import numpy as np

import weighttui


def main(path: str = "run.sock", epochs: int = 20, steps_per_epoch: int = 25) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    true_w = rng.normal(size=(3, 8)).astype(np.float32)
    y = x @ true_w.T + 0.5
    params = {"linear.weight": np.zeros((3, 8), dtype=np.float32), "linear.bias": np.zeros(3, dtype=np.float32)}
    lr = 0.05
    with weighttui.Recorder(path, every=5, full_epochs=[0, 10, epochs - 1], meta={"lr": lr}) as rec:
        for epoch in range(epochs):
            for b in range(steps_per_epoch):
                step = epoch * steps_per_epoch + b
                err = x @ params["linear.weight"].T + params["linear.bias"] - y
                loss = float((err ** 2).mean())
                grads = {"linear.weight": 2 * err.T @ x / len(x), "linear.bias": 2 * err.mean(axis=0)}
                # record before the update: the weights the loss was computed with
                rec.snapshot(step, params, epoch=epoch, batch=b, grads=grads, scalars={"loss": loss})
                for k in params:
                    params[k] -= lr * grads[k]
    run = weighttui.open(path)
    w10 = run.weights(epoch=10)["linear.weight"]
    print(f"{run.snapshot_count} snapshots; final loss {run.scalars('loss')[1][-1]:.2e}; "
          f"|W(epoch 10) - W_true| = {np.abs(w10 - true_w).max():.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
