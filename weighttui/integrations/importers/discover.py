"""What SRC holds: checkpoint units (files, HDF5/JSON groups, HF checkpoint-N dirs) or TensorBoard event files."""

from __future__ import annotations

import glob
import os
import re

from weighttui.integrations.importers.base import ImportFileError, Unit, natural_key
from weighttui.integrations.importers.readers import kind_of

HF_DIR = re.compile(r"^checkpoint-(\d+)$")
EVENTS = "events.out.tfevents."


# Names a writer gives a file or directory before renaming it into place: Python's tempfile
# (`tempfile.mkstemp(dir=DIR, suffix=".pt")`: "tmp" and 8 random characters) and the HF Trainer's
# `tmp-checkpoint-N/`. Not checkpoints yet: their random digits are no step.
_TRANSIENT = re.compile(r"^(?:\.|tmp[a-z0-9_]{8}(?:\.|$)|tmp-checkpoint-\d+$)")


def transient(name: str) -> bool:
    """Whether a file or directory name is hidden or a writer's temporary one (left out)."""
    return bool(_TRANSIENT.match(name))


def _walk(root: str):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not transient(d))
        for f in sorted(filenames):
            if not transient(f):
                yield os.path.join(dirpath, f)


def hf_dirs(root: str) -> list[str]:
    """checkpoint-N directories at root (or root itself if it is one), by N; then root itself where it
    also holds a trainer's final state and model (`trainer.save_model()` and `save_state()` next to the
    checkpoints: the model after the last step, or a copy of the last checkpoint, skipped as such)."""
    name = os.path.basename(os.path.normpath(root))
    if HF_DIR.match(name):
        return [root]
    found = [os.path.join(root, d) for d in os.listdir(root)
             if HF_DIR.match(d) and os.path.isdir(os.path.join(root, d))]
    found.sort(key=lambda p: int(HF_DIR.match(os.path.basename(p)).group(1)))  # type: ignore[union-attr]
    if os.path.exists(os.path.join(root, "trainer_state.json")) and (not found or _has_model(root)):
        found.append(root)
    return found


def _has_model(root: str) -> bool:
    """Whether a directory holds model weights as a Trainer saves them (safetensors or a .bin, sharded or not)."""
    return any(f.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"))
               for f in os.listdir(root))


def event_files(root: str) -> list[str]:
    if os.path.isfile(root):
        return [root] if EVENTS in os.path.basename(root) else []
    return [p for p in _walk(root) if EVENTS in os.path.basename(p)]


def source_kind(src: str) -> str:
    """'hf_trainer', 'tensorboard' or 'checkpoints' for SRC (a directory, file or glob)."""
    if any(c in src for c in "*?[") and not os.path.exists(src):
        paths = glob.glob(src, recursive=True)
        if paths and all(EVENTS in os.path.basename(p) for p in paths):
            return "tensorboard"
        if paths and all(os.path.isdir(p) and hf_dirs(p) for p in paths):  # 'out/checkpoint-*'
            return "hf_trainer"
        return "checkpoints"
    if os.path.isdir(src):
        if hf_dirs(src):
            return "hf_trainer"
        has_events = bool(event_files(src))
        has_ckpt = any(kind_of(p) for p in _walk(src))
        if has_events and not has_ckpt:
            return "tensorboard"
        return "checkpoints"
    if EVENTS in os.path.basename(src):
        return "tensorboard"
    return "checkpoints"


def file_units(paths: list[str], root: str | None) -> list[Unit]:
    """Units of checkpoint files (files of unknown kinds are left out)."""
    units = []
    for p in paths:
        kind = kind_of(p)
        if kind is None or not os.path.isfile(p):
            continue
        label = os.path.relpath(p, root) if root else os.path.basename(p)
        units.append(Unit(p, kind, label))
    return units


def split_groups(unit: Unit) -> list[Unit]:
    """An HDF5 or JSON file with one group/key per epoch becomes one unit per group; else [unit]."""
    try:
        if unit.kind == "hdf5":
            from weighttui.integrations.importers.hdf5_file import epoch_groups

            keys = epoch_groups(unit)
        elif unit.kind == "json":
            from weighttui.integrations.importers.json_dump import epoch_keys

            keys = epoch_keys(unit.path)
        else:
            return [unit]
    except ImportFileError:
        return [unit]  # the reader reports it
    if not keys:
        return [unit]
    return [Unit(unit.path, unit.kind, f"{unit.label}#{k}", member=k) for k in keys]


def checkpoint_units(src: str) -> list[Unit]:
    """Every checkpoint unit of SRC, in natural name order (the driver orders by step after probing)."""
    if any(c in src for c in "*?[") and not os.path.exists(src):
        paths = sorted(glob.glob(src, recursive=True))
        files: list[str] = []
        units: list[Unit] = []
        for p in paths:
            if transient(os.path.basename(os.path.normpath(p))):
                continue
            dirs = hf_dirs(p) if os.path.isdir(p) else []
            if dirs:  # 'out/checkpoint-*': the Trainer's checkpoints, with their trainer_state.json
                units.extend(Unit(d, "hf_checkpoint", os.path.basename(os.path.normpath(d))) for d in dirs)
                continue
            files.extend(_walk(p) if os.path.isdir(p) else [p])
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files]) if files else None
        units += file_units(files, root)
    elif os.path.isdir(src):
        dirs = hf_dirs(src)
        if dirs:
            return [Unit(d, "hf_checkpoint", os.path.basename(os.path.normpath(d))) for d in dirs]
        units = file_units(list(_walk(src)), src)
    elif os.path.isfile(src):
        units = file_units([src], None)
        if not units:
            raise ImportFileError(f"{src}: not a checkpoint format weighttui reads "
                                  "(safetensors, .pt/.pth/.bin/.ckpt, .keras/.h5, .npz, .json)")
    else:
        raise FileNotFoundError(f"no such file or directory: {src}")
    out = []
    for u in units:
        out.extend(split_groups(u))
    return sorted(out, key=lambda u: natural_key(u.label))
