"""The tensors of a run: one declaration (id, name, layer, shape, sample index) per tensor and shape."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable

import numpy as np

from weighttui.log.records import TensorInfo, default_layer

DEFAULT_SAMPLE = 16  # elements of each tensor kept as a sample (Recorder's sample=)


def sample_index_for(name: str, size: int, k: int) -> np.ndarray:
    """Deterministic sample of k flat indices, the same for a name on every run."""
    if size <= k:
        return np.arange(size, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


class Registry:
    """Declarations by name and by id; `pending` are those not yet written to the log.

    `lock` guards the registry; the recorder shares it with its queue, so that
    declarations go out in the job that first needs them.
    """

    def __init__(self, sample: int, lock: threading.Lock | None = None,
                 on_reshape: Callable[[TensorInfo, TensorInfo], None] | None = None):
        self.sample = int(sample)
        self.on_reshape = on_reshape  # (old, new) of a name declared again with another shape or dtype
        self.lock = threading.Lock() if lock is None else lock
        self._by_name: dict[str, TensorInfo] = {}  # name -> latest declaration
        self._by_id: list[TensorInfo] = []  # id -> declaration
        self.pending: list[TensorInfo] = []

    def declare(self, name: str, shape, dtype: str, *, layer: str | None = None,
                trainable: bool = True) -> TensorInfo:
        """The tensor's entry, declared in the log before first use.

        A name seen again with another shape or dtype (`model.to(torch.float64)`) gets a new id (ids
        are never reused): the log says what the values are.
        """
        shape = tuple(int(d) for d in shape)
        with self.lock:
            old = self._by_name.get(name)
            if old is not None and old.shape == shape and old.dtype == str(dtype):
                return old
            size = int(np.prod(shape)) if shape else 1
            info = TensorInfo(
                id=len(self._by_id), name=name,
                layer=default_layer(name) if layer is None else layer,
                shape=shape, dtype=str(dtype), trainable=bool(trainable),
                sample_index=sample_index_for(name, size, self.sample) if self.sample else None,
            )
            self._by_id.append(info)
            self._by_name[name] = info
            self.pending.append(info)
        if old is not None and self.on_reshape is not None:  # outside the lock: it writes an event
            self.on_reshape(old, info)
        return info

    @property
    def count(self) -> int:
        """Declarations made so far (ids are never reused: this only grows)."""
        return len(self._by_id)

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return dict(self._by_name)
