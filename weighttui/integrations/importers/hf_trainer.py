"""Hugging Face Trainer output: `output_dir/checkpoint-N/` directories.

A checkpoint directory's weights are its `model*.safetensors` (sharded or
not; `adapter_model.safetensors` for PEFT), else `pytorch_model*.bin`
(read with torch.load(weights_only=True)). `trainer_state.json` gives the
step (`global_step`), the epoch (`epoch`, a float in HF: epoch N is the
checkpoint taken after N complete epochs, so 1.5 is epoch 1) and the
logged history (`log_history`: loss, learning_rate, grad_norm, eval_* ...),
which become the log's scalars. optimizer.pt, scheduler.pt, rng_state.pth
and training_args.bin are not read. A directory counts as complete once
`trainer_state.json` is in it (the Trainer writes it last).
"""

from __future__ import annotations

import glob
import json
import math
import os

from weighttui.integrations.importers.base import ImportFileError, Reader, Unit, int_or_none

STATE = "trainer_state.json"


def weight_files(directory: str) -> list[str]:
    for pattern in ("model*.safetensors", "adapter_model*.safetensors", "*.safetensors",
                    "pytorch_model*.bin", "adapter_model*.bin"):
        found = sorted(glob.glob(os.path.join(glob.escape(directory), pattern)))
        if found:
            return found
    return []


def hf_epoch(value) -> int | None:
    """HF's float epoch (2.0 after two epochs, 1.5 halfway through the second) as weighttui's int."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(math.floor(f + 1e-9)) if math.isfinite(f) else None


def read_state(directory: str) -> dict:
    try:
        with open(os.path.join(directory, STATE), encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFileError(f"{STATE} is unreadable: {exc}") from None
    return state if isinstance(state, dict) else {}


def log_scalars(state: dict) -> list:
    """[(step, epoch, {name: float})] of the numeric entries of log_history."""
    out = []
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict) or int_or_none(entry.get("step")) is None:
            continue
        values = {}
        for k, v in entry.items():
            if k in ("step", "epoch") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            values[k] = float(v)
        if "epoch" in entry and isinstance(entry["epoch"], (int, float)):
            values["epoch"] = float(entry["epoch"])
        if values:
            out.append((int_or_none(entry["step"]), hf_epoch(entry.get("epoch")), values))
    return out


class HfCheckpointReader(Reader):
    """All weight files of one checkpoint-N directory, as one checkpoint."""

    def __init__(self, unit: Unit, *, mapped: bool = False, copy_dir: str | None = None):
        super().__init__(unit)
        state = read_state(unit.path)
        self.meta.step = int_or_none(state.get("global_step"))
        self.meta.epoch = hf_epoch(state.get("epoch")) if "epoch" in state else None
        self.meta.scalars = log_scalars(state)
        self.meta.scalars_from = "trainer_state.json log_history" if self.meta.scalars else None
        files = weight_files(unit.path)
        if not files:
            raise ImportFileError("no model weights in it (model.safetensors or pytorch_model.bin)")
        from weighttui.integrations.importers.readers import open_reader

        self.parts: list[Reader] = []
        self.where: dict[str, Reader] = {}
        try:
            for path in files:
                part = open_reader(Unit(path, "safetensors" if path.endswith(".safetensors") else "torch",
                                        os.path.basename(path)), mapped=mapped, copy_dir=copy_dir)
                self.parts.append(part)
                for name in part.specs():
                    self.where.setdefault(name, part)
            self.source = tuple(part.source for part in self.parts)
        except BaseException:
            self.close()
            raise

    def specs(self):
        out = {}
        for part in self.parts:
            for name, spec in part.specs().items():
                out.setdefault(name, spec)
        return out

    def read(self, name):
        return self.where[name].read(name)

    def raw(self, name):
        return self.where[name].raw(name)

    def release(self, name):
        self.where[name].release(name)

    def close(self):
        for part in self.parts:
            part.close()
        super().close()
