"""What every checkpoint reader gives the import driver, and the file-name rules for steps and epochs.

A reader opens one checkpoint (a file, an HDF5 group, a Hugging Face
`checkpoint-N/` directory) and hands out its tensors one at a time: `specs()`
lists names, shapes and dtypes from the file's index without reading any
values; `read(name)` reads one tensor. Nothing here unpickles or executes
anything from a file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from weighttui.integrations.importers.mapped import Lease


def say(message: str) -> None:
    """An import's one-line message on stderr. Inert: it names files and tensors of checkpoints, whose
    names may hold terminal escapes (docs/security.md)."""
    from weighttui.log.text import inert

    print(f"weighttui import: {inert(message)}", file=sys.stderr, flush=True)


class ImportFileError(Exception):
    """A checkpoint that cannot be read: the message names the problem (the driver adds the file)."""


@dataclass
class Spec:
    """A tensor as the checkpoint's index describes it."""

    shape: tuple[int, ...]
    dtype: str  # the framework's dtype name: float32, bfloat16, int64 ...
    layer: str | None = None  # None: weighttui's default (everything before the last '.' or '/')


@dataclass
class Unit:
    """One checkpoint to import: a file, a group inside a file, or a checkpoint directory."""

    path: str  # the file or directory
    kind: str  # safetensors, torch, hdf5, keras, npz, json, hf_checkpoint
    label: str  # what messages and name-number parsing use (relative path, plus '#group')
    member: str | None = None  # a group (HDF5) or top-level key (JSON) holding this checkpoint


@dataclass
class Meta:
    """Step, epoch and scalars the checkpoint itself records (None: it does not say)."""

    step: int | None = None
    epoch: int | None = None
    scalars: list = field(default_factory=list)  # [(step, epoch, {name: float})]; step None: this checkpoint's
    scalars_from: str | None = None  # where the scalars came from (the run meta's import.scalars_from)


class Reader:
    """One open checkpoint. Subclasses implement specs() and read()."""

    def __init__(self, unit: Unit):
        self.unit = unit
        self.meta = Meta()
        self.source: object = None  # which version of the file(s) this reads (readers.open_reader)
        self.in_place = False  # mapped in the trainer's file itself, not in a private copy
        self.lease: Lease | None = None  # mapped.Lease held on that file (readers.open_reader), if any

    def specs(self) -> dict[str, Spec]:
        raise NotImplementedError

    def read(self, name: str):
        """(array for statistics, value for the log) of one tensor.

        The first is a numpy array of a dtype the statistics take (bfloat16 is
        widened to float32); the second is what the log stores (the same array,
        or ("bf16", uint16 bits)).
        """
        raise NotImplementedError

    def raw(self, name: str) -> tuple[np.ndarray, bool]:
        """(array, is_bfloat16): one tensor as stored, bfloat16 as its raw uint16 bits.

        Mapped readers return a read-only view of the file (valid until
        release(name) or close()); the others what read() gives.
        """
        _stat, value = self.read(name)
        if isinstance(value, tuple):
            return value[1], True
        return value, False

    def release(self, name: str) -> None:
        """Done with name for now: a mapped reader gives its pages back (it can still be read again)."""

    def close(self) -> None:
        """Subclasses close their files, then call this (it lets go of the lease)."""
        if self.lease is not None:
            self.lease.close()
            self.lease = None


def bf16_pair(bits: np.ndarray):
    """(float32 values, ("bf16", bits)) of raw bfloat16 bits."""
    bits = np.ascontiguousarray(bits, dtype="<u2")
    wide = (bits.astype(np.uint32) << 16).view(np.float32)
    return wide, ("bf16", bits)


def int_or_none(v) -> int | None:
    """v as an int when it is a whole number (numpy scalars, 1-element arrays, floats like 3.0)."""
    try:
        if isinstance(v, (bytes, str)):
            v = v.decode() if isinstance(v, bytes) else v
            return int(v) if v.strip().lstrip("-").isdigit() else None
        a = np.asarray(v)
        if a.size != 1 or a.dtype.kind not in "iuf":
            return None
        f = float(a.reshape(-1)[0])
        return int(f) if f.is_integer() else None
    except (TypeError, ValueError, OverflowError):
        return None


# ------------------------------------------------------- numbers in names

_EPOCH = re.compile(r"(?:^|[^a-z])(?:epochs?|ep)[=_\-.]?(\d+)", re.IGNORECASE)
_STEP = re.compile(r"(?:^|[^a-z])(?:global[_-]?step|steps?|checkpoint|ckpt|iter(?:ation)?s?|it|batch)[=_\-.]?(\d+)",
                   re.IGNORECASE)
_NUMBERS = re.compile(r"\d+(?:\.\d+)*")  # whole numbers and decimals (`-0.52`, a metric: not a step)
_KERAS = re.compile(r"\.(keras|weights\.h5|h5|hdf5)$", re.IGNORECASE)
_STRIP = re.compile(r"\.(safetensors|pth?|bin|ckpt|keras|weights\.h5|h5|hdf5|npz|json)$", re.IGNORECASE)


# Where an import's steps and epochs came from (Planned.step_from / epoch_from; docs/import.md,
# "Steps and epochs"), as `info` and a watched run's import_source events say them
SOURCE_WORDS = {"metadata": "the files' metadata", "name": "numbers in their names", "epoch": "the epoch",
                "order": "file order", "unknown": "unknown"}


def name_numbers(label: str) -> tuple[int | None, int | None]:
    """(step, epoch) that a checkpoint's name states: `epoch_5`, `checkpoint-500`, `epoch=3-step=120`.

    A number with no word in front (`model_7.pt`; the last of several: `gpt2_500.pt`,
    `resnet50_3.pt`, since a model's name often holds one) counts as a step, except in
    a Keras or HDF5 file's name, where it is the epoch: Keras' ModelCheckpoint
    names files `weights.{epoch:02d}-{val_loss:.2f}.hdf5` (`weights.03-0.52.hdf5`:
    epoch 3, counted from 1 as Keras does, which is also weighttui's "epochs
    done"). Decimals (`-0.52`, a metric) are never a step or an epoch. The last
    path component (and a '#group') is read first, so that `runs/v2/epoch_3.pt`
    is epoch 3; a file whose name says nothing (`step_500/model.safetensors`,
    `ckpts/1000/model.pt`) takes its directories' names, innermost first, where
    one states a step or epoch or is a whole number (`v2` is neither).
    """
    path = label.replace("\\", "/")
    group = ""
    if "#" in path:
        path, group = path.split("#", 1)
    parts = path.rstrip("/").split("/")
    found = _name_numbers(parts[-1], group)
    if found != (None, None):
        return found
    for folder in reversed(parts[:-1]):
        worded = _worded_numbers(folder)
        if worded is not None:
            return worded
        if folder.isdigit():
            return int(folder), None
    return None, None


def _name_numbers(base: str, group: str) -> tuple[int | None, int | None]:
    """name_numbers of one file name (and its '#group')."""
    keras = bool(_KERAS.search(base))
    base = _STRIP.sub("", base)
    for text in (group, base):
        worded = _worded_numbers(text) if text else None
        if worded is not None:
            return worded
    for text in (group, base):
        whole = next((m.group(0) for m in reversed(list(_NUMBERS.finditer(text))) if "." not in m.group(0)), None)
        if whole is not None:
            return (None, int(whole)) if keras and text is base else (int(whole), None)
    return None, None


def _worded_numbers(text: str) -> tuple[int | None, int | None] | None:
    """(step, epoch) where `text` names them with a word (`epoch_5`, `step-100`), else None."""
    e, s = _EPOCH.search(text), _STEP.search(text)
    if not (e or s):
        return None
    return (int(s.group(1)) if s else None), (int(e.group(1)) if e else None)


def is_checkpoint_key(key: str) -> bool:
    """Whether a group or key name says epoch or step (`epoch_3`, `step-100`), not just a number (`dense_1`)."""
    return _worded_numbers(key) is not None


def natural_key(label: str):
    """Sort key that puts epoch_2 before epoch_10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label)]
