"""PyTorch files (`.pt`, `.pth`, `.bin`, Lightning `.ckpt`), read with `torch.load(weights_only=True)`.

weights_only is torch's restricted unpickler: tensors, dicts, lists, numbers
and strings load, any other class is refused (so nothing in the file runs).
The file is memory-mapped (`mmap=True`, torch's zip format) so a tensor's
bytes are read when that tensor is, not at load; raw() hands out numpy views
of the mapped tensors (no copy) and release() gives their pages back (only
where they lie inside the file's mapping). Before each tensor the file's size
is checked (a file cut short would fault: "truncated while being read");
files that may be rewritten are read from a private copy (readers.open_reader). torch is imported only when a
PyTorch file is met.

A checkpoint whose weights load this way but whose other entries name classes
torch does not allow (Lightning's `hyper_parameters` holding a `pathlib.Path`
or an `argparse.Namespace`) is loaded again with `_Inert` standing in for each
such class (outside `torch.*`): it is built from nothing and keeps nothing, so
still nothing in the file runs, and the weights are taken when a weights dict
of tensors is found; anything else (a whole pickled model) is refused.

Which dict holds the weights: Lightning's `state_dict`, the common recipe's
`model_state_dict` / `model` / `state_dict`, else the object itself (a
state dict); nested dicts of tensors are flattened with '.'. `epoch`,
`global_step` / `step` next to them are the checkpoint's metadata.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re

import numpy as np

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, bf16_pair, int_or_none

_WRAPPERS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "weights")


class _Inert:
    """Stands in for a class a checkpoint names beside its weights: takes any arguments and state, keeps none."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


_MAX_STAND_INS = 16


def _load(path: str):
    """(the loaded object, whether its tensors are views of the mapped file). A refused class outside
    torch.* is given a stand-in (_Inert) and the file loaded again, kept only if its weights dict loads."""
    import torch

    _check_container(path)
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    stand_ins: list[str] = []
    first = None
    while True:
        try:
            with allow([(_Inert, n) for n in stand_ins]) if stand_ins and allow else contextlib.nullcontext():
                obj, mapped = _load_once(path)
        except pickle.UnpicklingError as exc:
            first = first or str(exc)
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            name = found.group(1) if found else None
            if (allow is None or name is None or name.startswith("torch.") or name in stand_ins
                    or len(stand_ins) >= _MAX_STAND_INS):
                raise ImportFileError(refusal(first)) from None
            stand_ins.append(name)
            continue
        if stand_ins and _weights_dict(obj, torch) is None:
            raise ImportFileError(refusal(first or ""))
        return obj, mapped


def _weights_dict(obj, torch):
    """The dict of a checkpoint dict that holds its weights (a _WRAPPERS key with a tensor in it), or None."""
    if not isinstance(obj, dict):
        return None
    for k in _WRAPPERS:
        inner = obj.get(k)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return None


def _check_container(path: str) -> None:
    """A PyTorch file is a zip archive (torch.save since 1.6) or a pickle (the legacy format, protocol 2+:
    0x80 first); anything else gets that said, where torch's own error (an unpickler's complaint about an
    opcode, a bare KeyError) reads as a refused pickle or says nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ImportFileError(f"cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise ImportFileError("empty (0 bytes)")
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise ImportFileError("not a PyTorch file (neither the zip archive torch.save writes nor a pickle)")


def _load_once(path: str):
    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            # legacy (pre-1.6, non-zip) serialization cannot be mapped: load it whole
            return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError:
        raise  # _load decides: a stand-in, or refused
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFileError("not a readable PyTorch file (truncated or another format?): "
                              f"{_words(text, 200)}") from None


def refusal(torch_says: str) -> str:
    """One line for a file torch's restricted unpickler refused: what it needs (torch's own message is a
    paragraph of advice to load it anyway), that it is refused, and what to save instead."""
    found = re.search(r"GLOBAL ([\w.]+)", torch_says)
    if found:
        needs = f"arbitrary pickles (here: {found.group(1)})"
    else:
        line = next((ln.strip() for ln in torch_says.splitlines() if "Unsupported" in ln), "")
        line = re.sub(r"^.*?error:\s*", "", line)
        needs = f"arbitrary pickles ({_words(line, 80)})" if line else "arbitrary pickles"
    return (f"refused: it needs {needs}, which weighttui never loads; save the weights alone "
            "(torch.save(model.state_dict(), path) or safetensors) to import them")


def _words(text: str, limit: int) -> str:
    """text cut to at most limit characters at a word boundary (with '...' when cut)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."


_NOT_SCALARS = ("epoch", "global_step", "step", "iteration")


def _scalars(obj: dict, torch, tensors: bool = True) -> dict[str, float]:
    """The top-level numbers of a checkpoint dict (the tutorial's `'loss': loss`, a float or, with `tensors`,
    a 0-d or 1-element tensor), by key; step and epoch keys and bools are not scalars."""
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or k in _NOT_SCALARS or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif tensors and _number_tensor(v, torch):
            out[k] = float(v.detach().float().reshape(-1)[0])
    return out


def _number_tensor(v, torch) -> bool:
    """A 0-d or 1-element real tensor: a number saved as a tensor (`'loss': loss`)."""
    return isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex() and v.dtype != torch.bool


def _optimizer_state(v) -> bool:
    """Whether v is an optimizer's state_dict (its `state` and `param_groups`): moments, not weights."""
    return isinstance(v, dict) and "state" in v and "param_groups" in v


def _flatten(obj, prefix: str, out: dict, torch) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, torch)


class TorchReader(Reader):
    def __init__(self, unit: Unit):
        super().__init__(unit)
        import torch

        self._torch = torch
        # our own descriptor of the file torch maps: its size is checked before each tensor
        try:
            self._fd: int | None = os.open(unit.path, os.O_RDONLY)
        except OSError as exc:
            raise ImportFileError(f"cannot be read: {exc.strerror or exc}") from None
        try:
            self._size = os.fstat(self._fd).st_size
            obj, was_mapped = _load(unit.path)
            if was_mapped and os.stat(unit.path).st_ino != os.fstat(self._fd).st_ino:
                raise ImportFileError("replaced while being read: left for later")
        except BaseException:
            os.close(self._fd)
            raise
        self._ranges = mapping.file_ranges(unit.path) if was_mapped else []
        tensors: dict = {}
        if isinstance(obj, dict):
            self.meta.epoch = int_or_none(obj.get("epoch")) if "epoch" in obj else None
            for key in ("global_step", "step", "iteration"):
                if key in obj and int_or_none(obj.get(key)) is not None:
                    self.meta.step = int_or_none(obj[key])
                    break
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            # several models' state dicts side by side (a GAN's `generator`, `discriminator`): a top-level
            # one-element tensor beside them is a number (`loss`), as it is beside a weights key
            nested = inner is None and any(isinstance(v, dict) for v in obj.values())
            if inner is not None:
                _flatten(inner, "", tensors, torch)
            else:  # a flat state dict, or several models': not the optimizers' state (moments, not weights)
                _flatten({k: v for k, v in obj.items() if not _optimizer_state(v)
                          and not (nested and _number_tensor(v, torch))}, "", tensors, torch)
            # a checkpoint dict (not a flat state dict): its numbers (loss, val_acc ...) are this step's scalars;
            # in a flat dict only plain numbers (a top-level tensor there is a weight)
            if inner is not None or any(not isinstance(v, torch.Tensor) for v in obj.values()):
                values = _scalars(obj, torch, tensors=inner is not None or nested)
                if values:
                    self.meta.scalars = [(None, None, values)]
                    self.meta.scalars_from = "checkpoint dict"
        elif isinstance(obj, torch.Tensor):
            tensors["tensor"] = obj
        if not tensors:
            self.close()
            raise ImportFileError("holds no tensors (not a state dict or checkpoint)")
        self.tensors = {k: v for k, v in tensors.items() if v.layout == torch.strided and not v.is_quantized}

    def specs(self):
        return {name: Spec(tuple(t.shape), str(t.dtype).replace("torch.", "")) for name, t in self.tensors.items()}

    def raw(self, name):
        torch = self._torch
        if self._ranges and self._fd is not None and os.fstat(self._fd).st_size < self._size:
            raise ImportFileError(f"truncated while being read: tensor {name} is cut off")
        t = self.tensors[name].detach()
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16), True
        if t.dtype in (torch.complex64, torch.complex128) or t.is_floating_point() and t.element_size() == 1:
            raise ImportFileError(f"tensor {name}: dtype {t.dtype} is not supported")
        return t.contiguous().numpy(), False  # a view of the mapped file when the tensor is contiguous

    def read(self, name):
        arr, bf16 = self.raw(name)
        if bf16:
            return bf16_pair(arr)
        return arr, arr

    def release(self, name):
        t = self.tensors.get(name)
        if t is not None and self._ranges and t.is_contiguous():
            mapping.drop_address(t.detach().numpy() if t.dtype != self._torch.bfloat16
                                 else t.view(self._torch.int16).numpy(), self._ranges)

    def close(self):
        self.tensors = {}
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()
