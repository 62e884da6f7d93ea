"""Which tensors of a torch module are recorded, under which names, and which keep exact previous copies.

The plan is re-read from the model at every snapshot (parameters added later,
lazy modules materialised) and rebuilt only when the model changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from weighttui.integrations import torch_dist
from weighttui.integrations.torch_stats import supported
from weighttui.log.records import TensorInfo
from weighttui.record.registry import Registry

# Wrapper modules whose parameter names hold an extra name component: dropped
# from names. Wrappers that hold the model as `.module` (DistributedDataParallel,
# DataParallel) are unwrapped instead (unwrap): "module" itself stays in names,
# since a user's own submodule may be called that.
WRAPPER_COMPONENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    for _ in range(8):
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(inner := getattr(model, "_orig_mod", None), torch.nn.Module):
            model = inner
        else:
            return model
    return model


def clean_name(name: str) -> str:
    """A parameter name without the wrapper components (also inside nested modules)."""
    parts = name.split(".")
    kept = [p for p in parts[:-1] if p not in WRAPPER_COMPONENTS] + parts[-1:]
    return ".".join(kept)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _lazy(t) -> bool:
    return torch.nn.parameter.is_lazy(t)


class Entry:
    """One recorded tensor: where it comes from and what weighttui keeps for it."""

    __slots__ = ("name", "tensor", "info", "is_param", "exact", "sample_pos", "sample_local",
                 "sample_dev", "replica")

    def __init__(self, name: str, tensor: torch.Tensor, info: TensorInfo, is_param: bool):
        self.name, self.tensor, self.info, self.is_param = name, tensor, info, is_param
        self.exact = False  # delta from an exact previous copy (else from samples)
        self.sample_pos = self.sample_local = None
        self.sample_dev: tuple[torch.Tensor, torch.Tensor] | None = None  # (local, pos) on x's device
        self.replica = False  # a plain tensor in a sharded run: only rank 0 counts it

    def local(self) -> torch.Tensor:
        """This rank's part of the tensor (detached; empty for a replica off rank 0)."""
        t = self.tensor.detach()
        if self.replica and torch_dist.rank() != 0:
            return t.reshape(-1)[:0]  # counted by rank 0 only
        return torch_dist.local(t)

    def local_grad(self) -> torch.Tensor | None:
        g = self.tensor.grad if self.is_param else None
        if g is None:
            return None
        if g.layout != torch.strided:  # nn.Embedding(sparse=True): the dense gradient the sparse one stands for
            g = g.to_dense()
        if self.replica and torch_dist.rank() != 0:
            return g.detach().reshape(-1)[:0]
        return torch_dist.local(g.detach())


class TensorPlan:
    """The entries to record. `selects` / `registry` come from the recorder (or, on a
    sharded run's other ranks, a schedule and registry of their own); `forget(name)`
    is called for tensors whose previous copy no longer applies."""

    def __init__(self, model: torch.nn.Module, *, selects: Callable[[str], bool], registry: Registry,
                 buffers: bool, skip_frozen: bool, sharded: bool, delta: str, delta_budget_bytes: int,
                 forget: Callable[[str], None], skipped: Callable[[str, str], None] = lambda name, why: None):
        self.model = model
        self.skipped = skipped  # (name, why) of a tensor that cannot be recorded (a complex parameter)
        self.selects = selects
        self.registry = registry
        self.buffers = buffers
        self.skip_frozen = skip_frozen
        self.sharded = sharded
        self.delta = delta
        self.delta_budget_bytes = int(delta_budget_bytes)
        self.forget = forget
        self.entries: list[Entry] = []
        self._signature: tuple | None = None

    def named_tensors(self) -> Iterator[tuple[str, torch.Tensor, bool]]:
        model = self.model
        for name, p in model.named_parameters():  # tied parameters come once
            if _lazy(p):
                continue
            if not supported(p):
                if self.selects(clean_name(name)):
                    self.skipped(clean_name(name), f"cannot record dtype {dtype_name(p.dtype)}")
                continue
            if self.skip_frozen and not p.requires_grad:
                continue
            yield clean_name(name), p, True
        if self.buffers:
            for name, b in model.named_buffers():
                if b is None or _lazy(b):
                    continue
                if not supported(b):
                    if self.selects(clean_name(name)):
                        self.skipped(clean_name(name), f"cannot record dtype {dtype_name(b.dtype)}")
                    continue
                yield clean_name(name), b, False

    def current(self) -> list[Entry]:
        """The recorded tensors as the model holds them now; new ones are declared."""
        found = [(n, t, isp) for n, t, isp in self.named_tensors() if self.selects(n)]
        sig = tuple((n, id(t), tuple(t.shape), t.dtype, t.device) for n, t, _ in found)
        if sig == self._signature:
            return self.entries
        old = {e.name: e for e in self.entries}
        entries = []
        for name, t, is_param in found:
            info = self.registry.declare(name, tuple(t.shape), dtype_name(t.dtype),
                                         trainable=bool(is_param and t.requires_grad))
            e = old.get(name)
            if e is None or e.info is not info or e.tensor is not t:
                e = Entry(name, t, info, is_param)
                if self.sharded and not torch_dist.is_dtensor(t):
                    e.replica = True
                if info.sample_index is not None:
                    pos, loc = torch_dist.local_sample_positions(t, info.sample_index)
                    if e.replica and torch_dist.rank() != 0:
                        pos, loc = pos[:0], loc[:0]
                    e.sample_pos = pos
                    e.sample_local = loc
                self.forget(name)
            entries.append(e)
        self.entries = entries
        self._signature = sig
        self._assign_delta_policy()
        return entries

    def _assign_delta_policy(self) -> None:
        """Which tensors keep exact previous copies (delta="auto": while the budget lasts)."""
        policy = self.delta
        used: dict[str, int] = {}
        world = torch.distributed.get_world_size() if self.sharded else 1
        for e in self.entries:
            t = e.tensor
            nbytes = t.numel() * t.element_size()
            if torch_dist.shardable(t):
                nbytes = -(-nbytes // world)  # the same estimate on every rank
            if policy == "exact":
                e.exact = True
            elif policy == "auto":
                dev = str(t.device)
                e.exact = used.get(dev, 0) + nbytes <= self.delta_budget_bytes
                if e.exact:
                    used[dev] = used.get(dev, 0) + nbytes
            else:
                e.exact = False
            if not e.exact:
                self.forget(e.name)
