"""HDF5 files (plain h5py dumps, Keras `.weights.h5` / legacy `.h5`, Keras 3 `.keras` archives), indexed with h5py.

Every numeric dataset is a tensor, read on its own; names are dataset paths.
With `mapped` (readers.open_reader: the file in place when settled, else a
private copy), a dataset stored contiguous and unfiltered (h5py's default
layout, Keras' too) in native byte order is a read-only view of the
memory-mapped file at the address HDF5 gives for its data
(`H5Dget_offset`; in a `.keras` archive, plus where its stored `.h5` member
starts), like a safetensors tensor: no copy, pages given back by release().
Chunked or compressed datasets, and big-endian ones, are read by h5py (one
read per dataset). Keras files: optimizer groups are left
out, Keras 3's `layers/<name>/vars/<i>` becomes `<name>/vars/<i>` in layer
`<name>`, and a legacy full-model file's `model_weights/` prefix is dropped.
A file whose top-level groups are all named by epoch or step
(`epoch_3/...`) is one checkpoint per group (see discover.py). Attributes
`epoch` and `step` / `global_step` on the root (or the group) are metadata.
Nothing is executed: HDF5 holds data only, and object/string datasets are skipped.
"""

from __future__ import annotations

import mmap
import os
import zipfile
from typing import BinaryIO

import numpy as np

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import (
    ImportFileError,
    Reader,
    Spec,
    Unit,
    bf16_pair,
    int_or_none,
    is_checkpoint_key,
)

_SKIP_GROUPS = ("optimizer", "optimizer_weights")
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def open_for_writing(path: str) -> bool:
    """Whether an HDF5 file's superblock says a writer still has it open. HDF5 (1.10 on) sets the
    file consistency flags while a file is open for writing and clears them on close; a file a writer
    flushes as it goes parses at every stage, so parsing is no sign that it is complete. The superblock
    is at 0, 512, 1024, ... (after a user block); the flags are at +20 in versions 0 and 1, at +11
    in versions 2 and 3. False where the file cannot be read or is not HDF5 (the reader says why)."""
    try:
        with open(path, "rb") as fh:
            at = 0
            while at <= 1 << 20:
                fh.seek(at)
                head = fh.read(24)
                if len(head) < 12:
                    return False
                if head[:8] == _SIGNATURE:
                    version = head[8]
                    flags = head[20:24] if version in (0, 1) else head[11:12]
                    return any(flags)
                at = 512 if at == 0 else at * 2
    except OSError:
        return False
    return False
_BITS = np.dtype("<u2")  # how a bfloat16 dataset is read: its raw bits


def _is_bfloat16(ds) -> bool:
    """Keras 3 stores bfloat16 variables as 2-byte opaque data with the attribute dtype="bfloat16"."""
    if ds.dtype.kind != "V" or ds.dtype.itemsize != 2:
        return False
    tag = ds.attrs.get("dtype")
    return (tag.decode() if isinstance(tag, bytes) else tag) == "bfloat16"


def open_h5(unit: Unit):
    """(h5py.File, zip file or None) for unit's file; ImportFileError if it is not HDF5."""
    import h5py

    zf = None
    try:
        if unit.path.endswith(".keras"):
            zf = zipfile.ZipFile(unit.path)
            member = _keras_member(zf)
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


def _keras_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """The weights file in a .keras archive."""
    return next((i for i in zf.infolist() if i.filename.endswith(".h5")), None)


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
    def __init__(self, unit: Unit, *, mapped: bool = False):
        super().__init__(unit)
        import h5py

        self.file, self._zip = open_h5(unit)
        self._f: BinaryIO | None = None
        self._mm: mmap.mmap | None = None
        self._base = 0  # where the HDF5 file starts in the mapped one (a stored .keras member: its offset)
        self._end = 0  # and ends
        self.mapped: dict[str, tuple[int, np.dtype, tuple]] = {}  # tensor -> (offset in the map, dtype, shape)
        self.bf16: set[str] = set()  # tensors stored as bfloat16 (read as their raw bits)
        root = self.file
        try:
            if mapped:
                self._map()
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
                bf16 = _is_bfloat16(obj)
                if top in _SKIP_GROUPS or (obj.dtype.kind not in "biuf" and not bf16):
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
                dtype = _BITS if bf16 else obj.dtype
                self.datasets[name] = (path, Spec(tuple(int(d) for d in obj.shape),
                                                  "bfloat16" if bf16 else obj.dtype.name, layer))
                if bf16:
                    self.bf16.add(name)
                at = self._place(obj, dtype)
                if at is not None:
                    self.mapped[name] = (at, dtype, tuple(int(d) for d in obj.shape))

            root.visititems(visit)
            self.root = root
        except ImportFileError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            self.close()
            raise ImportFileError(f"unreadable HDF5 file: {str(exc)[:200]}") from None

    def _map(self) -> None:
        """Map the file (for a .keras archive: only where its .h5 member is stored uncompressed)."""
        self._f = open(self.unit.path, "rb")
        if self._zip is None and self.file.driver != "sec2":  # family/split/core: addresses are not offsets here
            return
        # the file h5py (or the zip) indexed must be the one mapped: not replaced by a rename in between
        indexed = os.fstat(self._zip.fp.fileno() if self._zip is not None and self._zip.fp is not None
                           else self.file.id.get_vfd_handle())
        mine = os.fstat(self._f.fileno())
        if (indexed.st_dev, indexed.st_ino) != (mine.st_dev, mine.st_ino):
            raise ImportFileError("replaced while being read: left for later")
        self._mm = mapping.map_file(self._f)
        if self._mm is None:
            return
        if self._zip is None:
            self._base, self._end = 0, len(self._mm)
            return
        info = _keras_member(self._zip)
        start = None if info is None else mapping.zip_member_start(self._mm, info)
        if info is None or start is None:  # compressed: h5py reads it through the zip
            self._unmap()
            return
        self._base, self._end = start, start + info.file_size

    def _place(self, ds, dtype: np.dtype) -> int | None:
        """Where ds's data lies in the map, when it can be read there (as dtype): contiguous (an address),
        unfiltered, stored whole (not a fill value), native byte order, not external or virtual; else None
        (h5py reads it)."""
        if self._mm is None or ds.chunks is not None or dtype.kind not in "iuf" or not dtype.isnative:
            return None
        try:
            if ds.is_virtual or ds.external:
                return None
            dcpl = ds.id.get_create_plist()
            offset = ds.id.get_offset()
            if dcpl.get_nfilters() or offset is None:
                return None
            nbytes = int(np.prod(ds.shape, dtype=np.int64)) * dtype.itemsize
            if ds.id.get_storage_size() != nbytes or nbytes == 0:
                return None
        except (RuntimeError, ValueError, OSError, AttributeError):
            return None
        at = self._base + int(offset)
        return at if at + nbytes <= self._end else None

    def _meta_from(self, attrs) -> None:
        for key in ("step", "global_step"):
            if key in attrs and int_or_none(attrs[key]) is not None:
                self.meta.step = int_or_none(attrs[key])
        if "epoch" in attrs:
            self.meta.epoch = int_or_none(attrs["epoch"])

    def specs(self):
        return {name: spec for name, (_p, spec) in self.datasets.items()}

    def raw(self, name):
        if name in self.mapped and self._mm is not None and self._f is not None:
            # a file cut short since it was mapped would fault on the missing pages: refuse instead
            if os.fstat(self._f.fileno()).st_size < len(self._mm):
                raise ImportFileError(f"truncated while being read: dataset {self.datasets[name][0]} is cut off")
            offset, dtype, shape = self.mapped[name]
            return mapping.view(self._mm, dtype, shape, offset), name in self.bf16
        path, _spec = self.datasets[name]
        try:
            arr = np.asarray(self.root[path][()])
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ImportFileError(f"dataset {path}: unreadable (truncated?): {str(exc)[:200]}") from None
        if name in self.bf16:
            return arr.view(_BITS), True
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return arr, False

    def read(self, name):
        arr, bf16 = self.raw(name)
        return bf16_pair(arr) if bf16 else (arr, arr)

    def release(self, name):
        if name in self.mapped:
            offset, dtype, shape = self.mapped[name]
            mapping.drop(self._mm, offset, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)

    def close(self):
        try:
            self.file.close()
        finally:
            if self._zip is not None:
                self._zip.close()
            self._unmap()
            if self._f is not None:
                self._f.close()
                self._f = None
            super().close()

    def _unmap(self) -> None:
        mapping.close(self._mm)
        self._mm = None


def _keras_name(path: str) -> tuple[str, str | None]:
    """Keras 3 `layers/dense/vars/0` -> (`dense/vars/0`, `dense`); other paths unchanged."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "layers" and parts[-2] == "vars":
        name = "/".join(parts[1:])
        return name, "/".join(parts[1:-2])
    return path, None
