"""Parameter shapes the benchmarks share (no framework needed)."""

from __future__ import annotations


def resnet50_shapes():
    """Parameter shapes of torchvision's resnet50 (conv, batch norm, fc): 161 tensors, 25.6M values."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inp = 64
    for blocks, mid, out in ((3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)):
        for b in range(blocks):
            shapes += [(mid, inp, 1, 1), (mid,), (mid,), (mid, mid, 3, 3), (mid,), (mid,),
                       (out, mid, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, inp, 1, 1), (out,), (out,)]
            inp = out
    return shapes + [(1000, 2048), (1000,)]
