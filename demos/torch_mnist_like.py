"""A small CNN on synthetic MNIST-like digits, recorded with weighttui.torch.watch.

It reproduces the common "save the weights at epochs 5, 10 and 15" recipe
without a single torch.save: `watch(..., full_epochs=[5, 10, 15])` stores the
complete weights at the end of those epochs in the run log, and
`weighttui.open(path).weights(epoch=10)` gives them back.

    python demos/torch_mnist_like.py run.sock        # train (no downloads)
    weighttui watch run.sock                         # in another terminal, live
    weighttui replay run.sock                        # afterwards
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import weighttui
import weighttui.torch as wt


def synthetic_digits(n: int, seed: int = 0):
    """n 28x28 images of 10 classes: a fixed random stroke pattern per class, shifted and noisy."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(10, 1, 28, 28, generator=g) > 0.8).float()
    protos = nn.functional.avg_pool2d(protos, 3, stride=1, padding=1)  # thicker strokes
    labels = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    images = torch.stack([torch.roll(protos[c], tuple(s.tolist()), dims=(1, 2))
                          for c, s in zip(labels, shifts, strict=True)])
    images = images + 0.3 * torch.randn(images.shape, generator=g)
    return images, labels


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def train(path, *, epochs: int = 15, steps_per_epoch: int = 30, batch: int = 64,
          full_epochs=(5, 10, 15), seed: int = 0, lr: float = 0.05):
    """Train and record; returns {epoch: {name: clone}} taken at the end of each full epoch."""
    torch.manual_seed(seed)
    images, labels = synthetic_digits(steps_per_epoch * batch, seed)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    kept = {}
    meta = {"model": "SmallCNN", "data": "synthetic digits", "optimizer": "SGD+momentum", "lr": lr}
    with wt.watch(model, path, optimizer=opt, every=5, buffers=True, full_epochs=list(full_epochs),
                  meta=meta) as handle:
        for epoch in range(1, epochs + 1):
            handle.set_epoch(epoch)
            order = torch.randperm(len(images))
            correct = 0
            for b in range(steps_per_epoch):
                idx = order[b * batch:(b + 1) * batch]
                logits = model(images[idx])
                loss = nn.functional.cross_entropy(logits, labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int((logits.argmax(1) == labels[idx]).sum())
                handle.scalars(loss=loss.item(), lr=opt.param_groups[0]["lr"])
            handle.end_epoch(scalars={"train_acc": correct / (steps_per_epoch * batch)})
            if epoch in full_epochs:
                kept[epoch] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return kept


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default="run.sock")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30, help="steps per epoch")
    args = ap.parse_args(argv)
    train(args.path, epochs=args.epochs, steps_per_epoch=args.steps)
    run = weighttui.open(args.path)
    print(f"{args.path}: {run.snapshot_count} snapshots, {len(run.tensor_names)} tensors, "
          f"complete weights at steps {run.full_steps}")
    if 10 <= args.epochs:
        w = run.weights(epoch=10)
        print("weights at the end of epoch 10:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in w.items()))
    print(f"view it: weighttui replay {args.path}")


if __name__ == "__main__":
    main()
