"""PyTorch files (`.pt`, `.pth`, `.bin`, Lightning `.ckpt`), read with `torch.load(weights_only=True)`.

weights_only is torch's restricted unpickler: tensors, dicts, lists, numbers
and strings load, any other class is refused (so nothing in the file runs).
The file is memory-mapped (`mmap=True`, torch's zip format) so a tensor's
bytes are read when that tensor is, not at load. torch is imported only when
a PyTorch file is met.

Which dict holds the weights: Lightning's `state_dict`, the common recipe's
`model_state_dict` / `model` / `state_dict`, else the object itself (a
state dict); nested dicts of tensors are flattened with '.'. `epoch`,
`global_step` / `step` next to them are the checkpoint's metadata.
"""

from __future__ import annotations

import pickle

import numpy as np

from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, int_or_none

_WRAPPERS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "weights")


def _load(path: str):
    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            # legacy (pre-1.6, non-zip) serialization cannot be mapped: load it whole
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        why = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise ImportFileError("refused: the file needs arbitrary pickles, which weighttui never loads "
                              f"(torch.load(weights_only=True) says: {why[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFileError(f"not a readable PyTorch file (truncated or another format?): {text[:200]}") from None


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
        obj = _load(unit.path)
        tensors: dict = {}
        if isinstance(obj, dict):
            self.meta.epoch = int_or_none(obj.get("epoch")) if "epoch" in obj else None
            for key in ("global_step", "step", "iteration"):
                if key in obj and int_or_none(obj.get(key)) is not None:
                    self.meta.step = int_or_none(obj[key])
                    break
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            _flatten(inner if inner is not None else obj, "", tensors, torch)
        elif isinstance(obj, torch.Tensor):
            tensors["tensor"] = obj
        if not tensors:
            raise ImportFileError("holds no tensors (not a state dict or checkpoint)")
        self.tensors = {k: v for k, v in tensors.items() if v.layout == torch.strided and not v.is_quantized}

    def specs(self):
        return {name: Spec(tuple(t.shape), str(t.dtype).replace("torch.", "")) for name, t in self.tensors.items()}

    def read(self, name):
        torch = self._torch
        t = self.tensors[name].detach()
        if t.dtype == torch.bfloat16:
            bits = t.contiguous().view(torch.int16).numpy().view(np.uint16).copy()
            from weighttui.integrations.importers.base import bf16_pair

            return bf16_pair(bits)
        if t.dtype in (torch.complex64, torch.complex128) or t.is_floating_point() and t.element_size() == 1:
            raise ImportFileError(f"tensor {name}: dtype {t.dtype} is not supported")
        arr = t.contiguous().numpy().copy()  # a copy: the mapped pages are not kept referenced
        return arr, arr

    def close(self):
        self.tensors = {}
