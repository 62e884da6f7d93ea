"""What leaves the device for a snapshot: its raw rows and samples in one copy per device, complete values."""

from __future__ import annotations

import numpy as np
import torch

from weighttui.integrations.torch_plan import Entry


def to_host(parts: list[torch.Tensor]) -> list[np.ndarray]:
    """Every part on the host with one copy per device (parts are float64)."""
    if not parts:
        return []
    by_dev: dict[torch.device, list[int]] = {}
    for j, p in enumerate(parts):
        by_dev.setdefault(p.device, []).append(j)
    out: list[np.ndarray] = [np.empty(0)] * len(parts)
    for js in by_dev.values():
        flat = torch.cat([parts[j].reshape(-1) for j in js])
        host = flat.cpu().numpy() if flat.device.type != "cpu" else flat.numpy()
        at = 0
        for j in js:
            n = parts[j].numel()
            out[j] = host[at:at + n].reshape(parts[j].shape)
            at += n
    return out


def host_value(t: torch.Tensor):
    """A host copy of complete values for a values record (bfloat16 as raw bits)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return ("bf16", t.to("cpu", copy=True).contiguous().view(torch.int16).numpy().view(np.uint16))
    return t.to("cpu", copy=True).contiguous().numpy()


def device_samples(entries: list[Entry], xs: list[torch.Tensor], *, sharded: bool):
    """Sampled values of every entry, concatenated in entries order (on the device,
    float64, ready for the snapshot's one copy), and how many: (tensor or None, count)."""
    parts = []
    total = 0
    for e, x in zip(entries, xs, strict=True):
        k = 0 if e.info.sample_index is None else e.info.sample_index.size
        if k == 0:
            continue
        total += k
        if e.sample_dev is None or e.sample_dev[0].device != x.device:
            e.sample_dev = (torch.as_tensor(e.sample_local, device=x.device),
                            torch.as_tensor(e.sample_pos, device=x.device))
        loc, pos = e.sample_dev
        if sharded:
            v = torch.zeros(k, dtype=torch.float64, device=x.device)
            if loc.numel():
                v[pos] = x.reshape(-1)[loc].to(torch.float64)
        else:
            v = torch.index_select(x.reshape(-1), 0, loc)
            if not v.is_floating_point():  # exact in float64, whatever cat promotes to
                v = v.to(torch.float64)
        parts.append(v)
    if not parts:
        return None, 0
    dev = parts[0].device
    # one conversion for all: cat promotes to the widest dtype (float64 if any)
    return torch.cat([p.to(dev) for p in parts]).to(torch.float64), total
