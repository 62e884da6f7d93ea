"""safetensors files, read by their own index: one tensor at a time, no library needed.

The format is an 8-byte little-endian header length, a JSON header (name ->
dtype, shape, data_offsets) and the raw tensor bytes. With `mapped` (the
default of `weighttui import`) the file is memory-mapped and a tensor is a
read-only view of its byte range (no copy; its pages are given back by
release()); without (`weighttui watch`), one `readinto` of the byte range.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, bf16_pair, int_or_none

_DTYPES = {
    "F64": ("<f8", "float64"), "F32": ("<f4", "float32"), "F16": ("<f2", "float16"),
    "BF16": ("<u2", "bfloat16"), "I64": ("<i8", "int64"), "I32": ("<i4", "int32"),
    "I16": ("<i2", "int16"), "I8": ("|i1", "int8"), "U64": ("<u8", "uint64"), "U32": ("<u4", "uint32"),
    "U16": ("<u2", "uint16"), "U8": ("|u1", "uint8"), "BOOL": ("|b1", "bool"),
}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    """The index of one .safetensors file and reads of its tensors."""

    def __init__(self, path: str, *, mapped: bool = False):
        self.path = path
        self._f = open(path, "rb")
        self._mm = None
        try:
            size = os.fstat(self._f.fileno()).st_size
            head = self._f.read(8)
            if len(head) < 8:
                raise ImportFileError("not a safetensors file (shorter than its header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise ImportFileError("not a safetensors file (or truncated: its header is cut off)")
            try:
                header = json.loads(self._f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ImportFileError("not a safetensors file (its header is not JSON)") from None
            if not isinstance(header, dict):
                raise ImportFileError("not a safetensors file (its header is not a JSON object)")
            self.metadata = header.pop("__metadata__", None) or {}
            self.entries: dict[str, tuple[str, tuple[int, ...], int, int, str]] = {}
            base = 8 + n
            for name, e in header.items():
                try:
                    np_dtype, dtype = _DTYPES[e["dtype"]]
                    shape = tuple(int(d) for d in e["shape"])
                    begin, end = (int(x) for x in e["data_offsets"])
                except KeyError:
                    raise ImportFileError(f"tensor {name}: unsupported dtype {e.get('dtype')!r}") from None
                except (TypeError, ValueError):
                    raise ImportFileError(f"tensor {name}: malformed header entry") from None
                want = int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize
                if end - begin != want or begin < 0:
                    raise ImportFileError(f"tensor {name}: its byte range does not match its shape and dtype")
                if base + end > size:
                    raise ImportFileError(f"truncated: tensor {name} ends at byte {base + end}, "
                                          f"the file has {size}")
                self.entries[name] = (np_dtype, shape, base + begin, end - begin, dtype)
            self.size = size
            if mapped:
                self._mm = mapping.map_file(self._f)
        except BaseException:
            self._f.close()
            raise

    def specs(self) -> dict[str, Spec]:
        return {name: Spec(shape, dtype) for name, (_d, shape, _o, _n, dtype) in self.entries.items()}

    def raw(self, name: str) -> tuple[np.ndarray, bool]:
        np_dtype, shape, offset, nbytes, dtype = self.entries[name]
        if self._mm is not None and nbytes:
            # a file cut short since it was opened would fault on the missing pages: refuse instead
            if os.fstat(self._f.fileno()).st_size < self.size:
                raise ImportFileError(f"truncated while being read: tensor {name} is cut off")
            return mapping.view(self._mm, np_dtype, shape, offset), dtype == "bfloat16"
        arr = np.empty(shape, dtype=np_dtype)
        if nbytes:
            self._f.seek(offset)
            got = self._f.readinto(arr.reshape(-1).view(np.uint8).data)
            if got != nbytes:
                raise ImportFileError(f"truncated: tensor {name} is cut off")
        return arr, dtype == "bfloat16"

    def read(self, name: str):
        arr, bf16 = self.raw(name)
        if bf16:
            return bf16_pair(arr)
        return arr, arr

    def release(self, name: str) -> None:
        _d, _s, offset, nbytes, _dt = self.entries[name]
        mapping.drop(self._mm, offset, nbytes)

    def close(self) -> None:
        mapping.close(self._mm)
        self._mm = None
        self._f.close()


class SafetensorsReader(Reader):
    def __init__(self, unit: Unit, *, mapped: bool = False):
        super().__init__(unit)
        self.file = SafetensorsFile(unit.path, mapped=mapped)
        md = self.file.metadata
        if isinstance(md, dict):
            self.meta.step = int_or_none(md.get("step", md.get("global_step")))
            self.meta.epoch = int_or_none(md.get("epoch"))

    def specs(self):
        return self.file.specs()

    def read(self, name):
        return self.file.read(name)

    def raw(self, name):
        return self.file.raw(name)

    def release(self, name):
        self.file.release(name)

    def close(self):
        self.file.close()
        super().close()
