"""JSON dumps of weights as nested lists (the `weights_epoch_N.json` recipe), read as data only.

Accepted shapes of the document (keys become tensor names, '/'-joined):

- `{"dense": [[...kernel...], [...bias...]]}`: a layer's `get_weights()`
  list, one tensor per entry (`dense/0`, `dense/1`) when the entries differ
  in shape; a rectangular nested list of numbers is one tensor (`dense`),
  except in a document of such layer lists where one layer's entries differ
  in shape (the recipe): there every layer's list is its weights (a
  BatchNorm's four vectors `bn/0` ... `bn/3`, a one-weight layer `proj/0`,
  a Dropout's empty list nothing);
- `{"dense": {"kernel": [...], "bias": [...]}}`: nested maps;
- `[[...], [...]]`: `model.get_weights()` as a list (`0`, `1`, ...);
- integers `epoch`, `step` / `global_step` at the top level are metadata,
  and `weights` / `state_dict` / `model` holding the tensors is unwrapped.

Numbers become float32 (what the recipes dump: Python floats printed from
float32 values read back to the same float32), or int64 when every number of
a tensor is an integer written without a decimal point. A file whose top-level
keys are all epoch/step names (`{"epoch_1": {...}, ...}`) holds one checkpoint
per key (see discover.py).
"""

from __future__ import annotations

import json

import numpy as np

from weighttui.integrations.importers.base import ImportFileError, Reader, Spec, Unit, int_or_none, is_checkpoint_key

_META = ("epoch", "step", "global_step")
_WRAPPERS = ("weights", "state_dict", "model", "params", "parameters")


def load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError:
        raise ImportFileError("not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"not valid JSON (truncated?): {exc}") from None


def _array(value) -> np.ndarray | None:
    """A rectangular numeric nested list as an array; None if it is not one."""
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        return None  # ragged
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind == "i":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return np.array(value, dtype=np.float32)
    return None


def flatten(obj, prefix: str, out: dict) -> None:
    """name -> array of every tensor in a JSON document (see the module doc)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not prefix and k in _META and not isinstance(v, (list, dict)):
                continue
            flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
        return
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if prefix:
            out[prefix] = _array(obj)
        return
    if not isinstance(obj, list):
        return  # strings, null: not weights
    arr = _array(obj) if obj else np.zeros(0, dtype=np.float32)
    if arr is not None:
        out[prefix or "0"] = arr
        return
    for i, v in enumerate(obj):  # a list of differently shaped tensors (get_weights())
        flatten(v, f"{prefix}/{i}" if prefix else str(i), out)


class JsonReader(Reader):
    def __init__(self, unit: Unit, document=None):
        super().__init__(unit)
        doc = load_json(unit.path) if document is None else document
        if unit.member is not None:
            doc = doc[unit.member]
        if isinstance(doc, dict):
            self.meta.epoch = int_or_none(doc.get("epoch")) if isinstance(doc.get("epoch"), (int, float)) else None
            for key in ("step", "global_step"):
                if isinstance(doc.get(key), (int, float)):
                    self.meta.step = int_or_none(doc[key])
            inner = next((doc[k] for k in _WRAPPERS if isinstance(doc.get(k), (dict, list))), None)
            if inner is not None:
                doc = inner
        self.arrays: dict[str, np.ndarray] = {}
        if _layer_lists(doc):
            for k, v in doc.items():  # each layer's get_weights(): one tensor per entry, whatever their shapes
                if isinstance(v, list):
                    for i, w in enumerate(v):
                        flatten(w, f"{k}/{i}", self.arrays)
                else:
                    flatten(v, k, self.arrays)
        else:
            flatten(doc, "", self.arrays)
        self.arrays = {k: v for k, v in self.arrays.items() if v is not None}
        if not self.arrays:
            raise ImportFileError("holds no numeric arrays (not a weights dump)")

    def specs(self):
        return {k: Spec(a.shape, a.dtype.name) for k, a in self.arrays.items()}

    def read(self, name):
        arr = self.arrays[name]
        return arr, arr


def _layer_lists(doc) -> bool:
    """Whether a document is the recipe's `{layer.name: [w.tolist() for w in layer.get_weights()]}`: a map
    whose values are lists, one at least a list of differently shaped tensors (a Dense layer's kernel and
    bias). Then every layer's list is its weights, also where they happen to share a shape (a BatchNorm's
    four vectors, a layer with one weight: `bn/0` ... `bn/3`, `proj/0`, not one stacked tensor) or are
    none (a Dropout's [])."""
    if not isinstance(doc, dict):
        return False
    lists = [v for k, v in doc.items() if k not in _META]
    return (bool(lists) and all(isinstance(v, list) for v in lists)
            and any(v and all(isinstance(w, list) for w in v) and _array(v) is None for v in lists))


def epoch_keys(path: str) -> list[str]:
    """Top-level keys named by epoch/step, each holding a checkpoint; [] if not all are."""
    doc = load_json(path)
    if not isinstance(doc, dict) or len(doc) < 1:
        return []
    keys = [k for k in doc if k not in _META]
    if keys and all(isinstance(doc[k], (dict, list)) and is_checkpoint_key(k) for k in keys):
        return keys
    return []

