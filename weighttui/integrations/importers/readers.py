"""Which reader opens which checkpoint (imports of the libraries stay lazy), and whether in place or from a
private copy (a file that may be rewritten while mapped would kill the process with SIGBUS: mapped.py)."""

from __future__ import annotations

import dataclasses
import os
import time

from weighttui.integrations.importers import mapped as mapping
from weighttui.integrations.importers.base import ImportFileError, Reader, Unit

# Kinds whose readers map the file (and so hold a lease on it when in place); the others read it whole at open.
_MAPPED = ("safetensors", "torch", "hdf5", "npz")

# A file unchanged for this long is read in place by `weighttui import` (mapped); a younger one may still be
# rewritten by a trainer (Lightning's last.ckpt, torch.save in place) and is read from a private copy.
SETTLED_S = 30.0

SUFFIX_KINDS = (
    (".safetensors", "safetensors"),
    (".weights.h5", "hdf5"), (".h5", "hdf5"), (".hdf5", "hdf5"), (".keras", "hdf5"),
    (".pt", "torch"), (".pth", "torch"), (".bin", "torch"), (".ckpt", "torch"),
    (".npz", "npz"), (".json", "json"),
)

# Files that sit next to checkpoints and are not weights (HF, Lightning, Keras side files)
NOT_WEIGHTS = {"optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json", "config.json",
               "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "model.safetensors.index.json", "pytorch_model.bin.index.json", "metadata.json",
               "hparams.yaml", "vocab.json", "adapter_config.json", "preprocessor_config.json"}


def kind_of(path: str) -> str | None:
    low = path.lower()
    base = low.replace("\\", "/").rsplit("/", 1)[-1]
    if base in NOT_WEIGHTS or base.startswith("rng_state") or base.endswith(".index.json"):
        return None
    for suffix, kind in SUFFIX_KINDS:
        if low.endswith(suffix):
            return kind
    return None


def settled(path: str, now: float | None = None) -> bool:
    """Whether path has not changed for SETTLED_S (a modification time in the future: not settled)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    age = (time.time() if now is None else now) - st.st_mtime_ns / 1e9
    return st.st_size > 0 and SETTLED_S <= age


def written_at(path: str) -> float | None:
    """When a checkpoint was written (its modification time, seconds since the epoch): the time of its
    snapshot, so that an imported run's timeline is the training's, not the import's. None if unknown."""
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


def open_reader(unit: Unit, *, mapped: bool = False, copy_dir: str | None = None) -> Reader:
    """The reader for unit; ImportFileError (a one-line reason) if it cannot be opened.

    mapped (`weighttui import`): a file that has not changed for SETTLED_S is
    memory-mapped in place where the format allows (safetensors, PyTorch zip
    files, stored .npz members, contiguous HDF5 datasets; see mapped.py),
    under a read lease inside mapped.leases() (readers.changed says when it
    broke), unless someone has it open for writing right now. Every other
    file (`weighttui watch`, a file changed recently or being written) is
    copied first into copy_dir
    (mapped.private_copy: refused if it changed during the copy), the reader
    opens the copy (mapped: nobody else writes it) and the copy is unlinked
    at once (its space is freed when the reader closes). Files under a
    Hugging Face checkpoint directory are decided one by one.
    """
    if unit.kind == "hf_checkpoint":
        from weighttui.integrations.importers.hf_trainer import HfCheckpointReader

        return HfCheckpointReader(unit, mapped=mapped, copy_dir=copy_dir)
    if mapped and settled(unit.path):
        in_place = _open_in_place(unit)
        if in_place is not None:
            return in_place
    copy, source = mapping.private_copy(unit.path, copy_dir)
    try:
        reader = _open(dataclasses.replace(unit, path=copy), mapped=True)
        reader.source = source
        return reader
    finally:
        try:
            os.unlink(copy)
        except OSError:
            pass


def _open_in_place(unit: Unit) -> Reader | None:
    """The reader of unit's file itself, under a read lease where one is granted (mapped.Lease); None if
    someone has the file open for writing now (read a private copy instead)."""
    try:
        lease = mapping.Lease.take(unit.path) if unit.kind in _MAPPED else None
    except mapping.BeingWritten:
        return None
    try:
        try:
            st = os.stat(unit.path)
        except OSError as exc:
            raise ImportFileError(f"cannot be read: {exc.strerror or exc}") from None
        if lease is not None and lease.fd is not None \
                and (os.fstat(lease.fd).st_ino, os.fstat(lease.fd).st_dev) != (st.st_ino, st.st_dev):
            lease.close()  # replaced by a rename just now
            return None
        reader = _open(unit, mapped=True)
    except BaseException:
        if lease is not None:
            lease.close()
        raise
    reader.source = mapping.signature(st)
    reader.in_place = True
    reader.lease = lease
    return reader


def changed(reader: Reader, let_go: bool = True) -> str | None:
    """Why a file the reader maps in place must not be read any more (None: it may): someone opened it for
    writing (its lease broke; with let_go, let go of now, so that the writer goes on: call it so only where
    no page of the file is read until the next call), or its size, mtime, ctime or inode differ from when it
    was opened (by path: a file replaced by rename counts as changed too; its map would be fine, refused
    anyway). A private copy never changes."""
    for r in getattr(reader, "parts", None) or [reader]:
        if not r.in_place:
            continue
        name = os.path.basename(r.unit.path)
        if r.lease is not None and r.lease.broken(let_go):
            return f"{name} changed while being read (a trainer opened it for writing)"
        try:
            now = mapping.signature(os.stat(r.unit.path))
        except OSError:
            now = None
        if now != r.source:
            return f"{name} changed while being read (a trainer rewriting it?)"
    return None


def _open(unit: Unit, *, mapped: bool) -> Reader:
    kind = unit.kind
    if kind == "safetensors":
        from weighttui.integrations.importers.safetensors_file import SafetensorsReader

        return SafetensorsReader(unit, mapped=mapped)
    if kind == "torch":
        try:
            from weighttui.integrations.importers.torch_state import TorchReader
        except ImportError:
            raise ImportFileError("reading PyTorch files needs torch (pip install torch)") from None
        return TorchReader(unit)
    if kind == "hdf5":
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ImportFileError("reading HDF5 and Keras files needs h5py (pip install h5py)") from None
        from weighttui.integrations.importers.hdf5_file import Hdf5Reader

        return Hdf5Reader(unit, mapped=mapped)
    if kind == "npz":
        from weighttui.integrations.importers.npz_file import NpzReader

        return NpzReader(unit, mapped=mapped)
    if kind == "json":
        from weighttui.integrations.importers.json_dump import JsonReader

        return JsonReader(unit)
    raise ImportFileError(f"not a checkpoint format weighttui reads ({kind})")
