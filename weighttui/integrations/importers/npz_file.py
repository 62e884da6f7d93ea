"""`.npz` dumps (numpy.savez / savez_compressed): each member read on its own, pickles refused."""

from __future__ import annotations

import zipfile

import numpy as np

from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, int_or_none

_META_KEYS = ("step", "global_step", "epoch")
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpzReader(Reader):
    def __init__(self, unit: Unit):
        super().__init__(unit)
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

    def specs(self):
        return dict(self._specs)

    def read(self, name):
        arr = self._read(name)
        return arr, arr

    def close(self):
        self.npz.close()
