"""`.npz` dumps (numpy.savez / savez_compressed): each member read on its own, pickles refused.

With `mapped`, members stored uncompressed (numpy.savez) are read-only views
of the memory-mapped archive (no copy, pages given back by release());
compressed members (savez_compressed) are inflated one at a time.
"""

from __future__ import annotations

import io
import mmap
import os
import zipfile
from typing import BinaryIO

import numpy as np

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, int_or_none

_META_KEYS = ("step", "global_step", "epoch")
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}



class NpzReader(Reader):
    def __init__(self, unit: Unit, *, mapped: bool = False):
        super().__init__(unit)
        self._file: BinaryIO | None = None
        self._mm: mmap.mmap | None = None
        self._at: dict[str, tuple[int, np.dtype, tuple]] = {}  # member -> (offset in the archive, dtype, shape)
        try:
            self.npz = np.load(unit.path, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ImportFileError(f"not a readable .npz file ({exc})") from None
        if not isinstance(self.npz, np.lib.npyio.NpzFile):
            raise ImportFileError("a single .npy array, not an .npz archive")
        self._specs: dict[str, Spec] = {}
        for key in self.npz.files:
            try:
                assert self.npz.zip is not None
                with self.npz.zip.open(key + ".npy") as fp:
                    version = np.lib.format.read_magic(fp)
                    header = _HEADERS.get(version)
                    if header is None:
                        raise ValueError(f"npy format {version}")
                    shape, _fortran, dtype = header(fp)
            except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ImportFileError(f"member {key}: unreadable ({exc})") from None
            if key in _META_KEYS and shape == ():
                continue  # step/epoch written next to the weights
            if dtype.kind not in "biuf":
                raise ImportFileError(f"member {key}: dtype {dtype} is not numeric "
                                      "(object arrays would need pickles: refused)")
            self._specs[key] = Spec(tuple(shape), dtype.name)
        if mapped:
            self._map(unit.path)
        for key in _META_KEYS:
            if key in self.npz.files and key not in self._specs:
                value = int_or_none(self._read(key))
                if key == "epoch":
                    self.meta.epoch = value
                else:
                    self.meta.step = value

    def _read(self, key):
        try:
            return self.npz[key]
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ImportFileError(f"member {key}: unreadable ({exc})") from None

    def _map(self, path: str) -> None:
        """Where each stored (uncompressed), C-order, native-order member's data starts in the archive."""
        self._file = open(path, "rb")
        self._mm = mapping.map_file(self._file)
        if self._mm is None or self.npz.zip is None:
            return
        size = len(self._mm)
        for info in self.npz.zip.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key not in self._specs:
                continue
            start = mapping.zip_member_start(self._mm, info)
            if start is None:
                continue
            try:
                fp = io.BytesIO(self._mm[start:start + min(info.file_size, 1 << 16)])
                header = _HEADERS.get(np.lib.format.read_magic(fp))
                if header is None:
                    continue
                shape, fortran, dtype = header(fp)
            except (ValueError, EOFError):
                continue
            offset = start + fp.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if (fortran and len(shape) > 1) or not dtype.isnative or fp.tell() + nbytes != info.file_size \
                    or offset + nbytes > size:
                continue  # read by numpy instead
            self._at[key] = (offset, dtype, tuple(shape))

    def specs(self):
        return dict(self._specs)

    def raw(self, name):
        if name in self._at and self._mm is not None and self._file is not None:
            if os.fstat(self._file.fileno()).st_size < len(self._mm):  # cut short since mapped: would fault
                raise ImportFileError(f"truncated while being read: member {name} is cut off")
            offset, dtype, shape = self._at[name]
            return mapping.view(self._mm, dtype, shape, offset), False
        return self._read(name), False

    def read(self, name):
        arr = self.raw(name)[0]
        return arr, arr

    def release(self, name):
        if name in self._at:
            offset, dtype, shape = self._at[name]
            mapping.drop(self._mm, offset, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)

    def close(self):
        self.npz.close()
        mapping.close(self._mm)
        self._mm = None
        if self._file is not None:
            self._file.close()
        super().close()
