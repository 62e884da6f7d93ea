"""A real, small training run in plain numpy that writes a run log.

`python -m weighttui.cli.demo PATH` trains a multilayer perceptron on the
two-spirals problem with SGD + momentum and records every few steps: weights,
gradients, updates, scalars, and complete weights at each epoch end. It is
what `weighttui demo` runs in a separate process while the viewer watches.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from weighttui.record.recorder import Recorder


def two_spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * math.pi
    cls = rng.integers(0, 2, n)
    sign = np.where(cls == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * math.pi)
    x += rng.normal(scale=0.02, size=x.shape)
    return x.astype(np.float32), cls.astype(np.float32)


class MLP:
    """tanh MLP with a sigmoid output, hand-written forward and backward."""

    def __init__(self, sizes, rng):
        self.params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            scale = math.sqrt(1.0 / fan_in)
            self.params[f"layers.{i}.weight"] = rng.normal(scale=scale, size=(fan_out, fan_in)).astype(np.float32)
            self.params[f"layers.{i}.bias"] = np.zeros(fan_out, dtype=np.float32)
        self.depth = len(sizes) - 1

    def loss_and_grads(self, x, y):
        acts = [x]
        h = x
        for i in range(self.depth):
            z = h @ self.params[f"layers.{i}.weight"].T + self.params[f"layers.{i}.bias"]
            h = np.tanh(z) if i < self.depth - 1 else z
            acts.append(h)
        logits = h[:, 0]
        p = 1.0 / (1.0 + np.exp(-logits))
        eps = 1e-7
        loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
        acc = float(np.mean((p > 0.5) == (y > 0.5)))
        grads = {}
        g = ((p - y) / len(y))[:, None].astype(np.float32)
        for i in reversed(range(self.depth)):
            grads[f"layers.{i}.weight"] = g.T @ acts[i]
            grads[f"layers.{i}.bias"] = g.sum(axis=0)
            if i:
                g = (g @ self.params[f"layers.{i}.weight"]) * (1 - acts[i] ** 2)
        return loss, acc, grads


def train(path, *, steps: int = 3000, delay: float = 0.02, every: int = 5, seed: int = 0,
          batch: int = 128, lr: float = 0.1, quiet: bool = True) -> None:
    rng = np.random.default_rng(seed)
    x, y = two_spirals(2048, rng)
    model = MLP([2, 64, 64, 32, 1], rng)
    velocity = {k: np.zeros_like(v) for k, v in model.params.items()}
    steps_per_epoch = len(x) // batch
    meta = {"model": "MLP 2-64-64-32-1 (tanh)", "task": "two spirals", "optimizer": "SGD+momentum 0.9",
            "lr": lr, "batch": batch}
    # complete weights at the end of every fifth epoch (0, 5, 10 ...): `weights(epoch=10)` of the demo's log
    with Recorder(path, every=every, full_epochs=5, meta=meta) as rec:
        order = rng.permutation(len(x))
        for step in range(steps):
            epoch, b = divmod(step, steps_per_epoch)
            if b == 0:
                order = rng.permutation(len(x))
            idx = order[b * batch:(b + 1) * batch]
            loss, acc, grads = model.loss_and_grads(x[idx], y[idx])
            # learning-rate warm-up, then cosine decay to a tenth (not to zero, which
            # would make every tensor look stagnant at the end)
            warm = min(1.0, (step + 1) / 200)
            rate = lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
            for k, gk in grads.items():
                velocity[k] = 0.9 * velocity[k] + gk
                model.params[k] -= rate * velocity[k]
            # after the update, as the README's loop: the last call of an epoch holds the weights at its end
            rec.snapshot(step, model.params, epoch=epoch, batch=b, grads=grads,
                         scalars={"loss": loss, "accuracy": acc, "lr": rate})
            if not quiet and step % 200 == 0:
                print(f"step {step:5d}  epoch {epoch:3d}  loss {loss:.4f}  accuracy {acc:.3f}", flush=True)
            if delay:
                time.sleep(delay)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weighttui.demo", description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--delay", type=float, default=0.02, help="seconds to sleep per step (makes it watchable)")
    ap.add_argument("--every", type=int, default=5, help="record a snapshot every N steps")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    train(args.path, steps=args.steps, delay=args.delay, every=args.every, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
