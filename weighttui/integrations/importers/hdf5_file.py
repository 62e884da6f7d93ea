"""HDF5 files (plain h5py dumps, Keras `.weights.h5` / legacy `.h5`, Keras 3 `.keras` archives), read with h5py.

Every numeric dataset is a tensor, read on its own (one h5py read per
dataset); names are dataset paths. Keras files: optimizer groups are left
out, Keras 3's `layers/<name>/vars/<i>` becomes `<name>/vars/<i>` in layer
`<name>`, and a legacy full-model file's `model_weights/` prefix is dropped.
A file whose top-level groups are all named by epoch or step
(`epoch_3/...`) is one checkpoint per group (see discover.py). Attributes
`epoch` and `step` / `global_step` on the root (or the group) are metadata.
Nothing is executed: HDF5 holds data only, and object/string datasets are skipped.
"""

from __future__ import annotations

import zipfile

import numpy as np

from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, int_or_none, is_checkpoint_key

_SKIP_GROUPS = ("optimizer", "optimizer_weights")


def open_h5(unit: Unit):
    """(h5py.File, zip file or None) for unit's file; ImportFileError if it is not HDF5."""
    import h5py

    zf = None
    try:
        if unit.path.endswith(".keras"):
            zf = zipfile.ZipFile(unit.path)
            member = next((n for n in zf.namelist() if n.endswith(".weights.h5") or n.endswith(".h5")), None)
            if member is None:
                raise ImportFileError("a .keras archive without a weights file")
            return h5py.File(zf.open(member), "r"), zf
        return h5py.File(unit.path, "r"), None
    except ImportFileError:
        if zf is not None:
            zf.close()
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        if zf is not None:
            zf.close()
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportFileError(f"not a readable HDF5 file (truncated or another format?): {text[:200]}") from None


def epoch_groups(unit: Unit) -> list[str]:
    """Top-level groups named by epoch/step (`epoch_3`, `step-100`): one checkpoint each; [] if not all are."""
    f, zf = open_h5(unit)
    try:
        import h5py

        try:
            keys = list(f.keys())
            if len(keys) < 2 or not all(isinstance(f[k], h5py.Group) for k in keys):
                return []
        except (RuntimeError, OSError, KeyError, ValueError) as exc:  # a file cut short or being rewritten
            raise ImportFileError(f"not a readable HDF5 file (truncated or being written?): {exc}") from None
        if all(is_checkpoint_key(k) for k in keys):
            return keys
        return []
    finally:
        f.close()
        if zf is not None:
            zf.close()


class Hdf5Reader(Reader):
    def __init__(self, unit: Unit):
        super().__init__(unit)
        import h5py

        self.file, self._zip = open_h5(unit)
        root = self.file
        try:
            if unit.member is not None:
                root = self.file[unit.member]
            elif isinstance(root.get("model_weights"), h5py.Group):  # legacy Keras full-model .h5
                root = root["model_weights"]
            self._meta_from(self.file.attrs)
            if root is not self.file:
                self._meta_from(root.attrs)
            self.datasets: dict[str, tuple[str, Spec]] = {}

            def visit(path, obj):
                if not isinstance(obj, h5py.Dataset):
                    return
                top = path.split("/", 1)[0]
                if top in _SKIP_GROUPS or obj.dtype.kind not in "biuf":
                    return
                if obj.shape is None:
                    return
                if path in ("epoch", "step", "global_step") and obj.shape == ():
                    value = int_or_none(obj[()])
                    if path == "epoch":
                        self.meta.epoch = value
                    else:
                        self.meta.step = value
                    return
                name, layer = _keras_name(path)
                self.datasets[name] = (path, Spec(tuple(int(d) for d in obj.shape), obj.dtype.name, layer))

            root.visititems(visit)
            self.root = root
        except ImportFileError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            self.close()
            raise ImportFileError(f"unreadable HDF5 file: {str(exc)[:200]}") from None

    def _meta_from(self, attrs) -> None:
        for key in ("step", "global_step"):
            if key in attrs and int_or_none(attrs[key]) is not None:
                self.meta.step = int_or_none(attrs[key])
        if "epoch" in attrs:
            self.meta.epoch = int_or_none(attrs["epoch"])

    def specs(self):
        return {name: spec for name, (_p, spec) in self.datasets.items()}

    def read(self, name):
        path, _spec = self.datasets[name]
        try:
            arr = np.asarray(self.root[path][()])
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ImportFileError(f"dataset {path}: unreadable (truncated?): {str(exc)[:200]}") from None
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return arr, arr

    def close(self):
        try:
            self.file.close()
        finally:
            if self._zip is not None:
                self._zip.close()


def _keras_name(path: str) -> tuple[str, str | None]:
    """Keras 3 `layers/dense/vars/0` -> (`dense/vars/0`, `dense`); other paths unchanged."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "layers" and parts[-2] == "vars":
        name = "/".join(parts[1:])
        return name, "/".join(parts[1:-2])
    return path, None
